"""`edgectl serve`: run the host collector (FastAPI on uvicorn) that boards sync to;
`edgectl serve --db URL migrate` upgrades its database and exits;
`edgectl serve rotate-admin-token` replaces the admin token and ends every page session."""

from __future__ import annotations

from pathlib import Path

import click

from edgectl.collector.settings import DEFAULT_PORT, DEFAULT_SESSION_HOURS, default_data_dir

URL_KEY = "edgectl.serve.db_url"
TOKEN_KEY = "edgectl.serve.admin_token_file"


@click.group(invoke_without_command=True)
@click.option("--db", default=None, metavar="URL",
              help="sqlite:///PATH (default: DATA_DIR/collector.db, WAL) or "
                   "postgresql://USER[:PASSWORD]@HOST[:PORT]/DBNAME (psycopg 3).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Samples, bundles, admin token [default: $EDGECTL_DATA_DIR or "
                   "~/.local/share/edgectl/collector].")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True)
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Worker processes (uvicorn); more than 1 needs PostgreSQL.")
@click.option("--admin-token-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Admin token (created 0600 if missing) [default: DATA_DIR/admin.token].")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Serve HTTPS with this certificate (PEM).")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Private key of --tls-cert (PEM).")
@click.option("--stale-after", type=click.FloatRange(min=1), default=120.0, show_default=True,
              help="Seconds without news after which a device shows as stale.")
@click.option("--retention-days", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Delete decisions older than this many days, hourly (0: keep all).")
@click.option("--session-hours", type=click.FloatRange(min=0.01, max=24 * 366),
              default=DEFAULT_SESSION_HOURS, show_default=True,
              help="Lifetime of a fleet page login (server side: logging out or "
                   "rotate-admin-token ends it sooner).")
@click.option("--api-docs", is_flag=True,
              help="Serve /docs, /redoc and /openapi.json (off by default: they are not "
                   "behind a token; for development on a trusted network).")
@click.pass_context
def serve(ctx: click.Context, db: str | None, data_dir: Path | None, host: str, port: int,
          workers: int, admin_token_file: Path | None, tls_cert: Path | None,
          tls_key: Path | None, stale_after: float, retention_days: float,
          session_hours: float, api_docs: bool) -> None:
    """Run the host collector: heartbeats, decision batches, samples, desired models,
    bundle downloads, update reports; the fleet pages at / (log in with the admin token)
    and Prometheus metrics at /metrics. The database is migrated at start (SQLite: a
    backup first). With --api-docs: OpenAPI at /openapi.json, /docs.

    \b
    Examples:
      edgectl serve                                    # 127.0.0.1:8750, SQLite
      edgectl serve --host 0.0.0.0 --tls-cert host.crt --tls-key host.key
      edgectl serve --db postgresql://edge@db/edge --workers 4
    """
    from edge_common.errors import ConfigError
    from edgectl.collector.server import CollectorConfig, run_collector
    from edgectl.collector.store import database_url
    from edgectl.collector.store.engine import display

    data_dir = data_dir or default_data_dir()
    url = database_url(db, data_dir)  # ConfigError: one red line, exit 1
    if ctx.invoked_subcommand is not None:
        ctx.meta[URL_KEY] = url
        ctx.meta[TOKEN_KEY] = admin_token_file or data_dir / "admin.token"
        return
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if workers > 1 and url.get_backend_name() != "postgresql":
        raise ConfigError("--workers > 1 needs PostgreSQL (--db postgresql://…): SQLite "
                          "takes one writer at a time")
    cfg = CollectorConfig(db=url.render_as_string(hide_password=False), data_dir=str(data_dir),
                          admin_token_file=str(admin_token_file) if admin_token_file else None,
                          stale_after_s=stale_after, api_docs=api_docs,
                          https=tls_cert is not None, session_s=session_hours * 3600.0)
    scheme = "https" if tls_cert else "http"
    token_file = admin_token_file or data_dir / "admin.token"
    click.echo(f"collector on {scheme}://{host}:{port}  (data {data_dir}, db "
               f"{display(url)}, {workers} worker(s), "
               f"admin token {token_file})", err=True)
    click.echo(f"fleet pages: {scheme}://{host}:{port}/ (log in with the admin token); "
               f"Prometheus: {scheme}://{host}:{port}/metrics (bearer: "
               f"{data_dir / 'metrics.token'} or the admin token)", err=True)
    if scheme == "http" and host not in ("127.0.0.1", "localhost", "::1"):
        click.secho("warning: serving plain HTTP on a non-loopback address; tokens travel "
                    "in clear (use --tls-cert/--tls-key)", fg="yellow", err=True)
    run_collector(cfg, host, port, workers=workers, tls_cert=tls_cert, tls_key=tls_key,
                  retention_days=retention_days)


@serve.command("migrate")
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Upgrade the database to this version's schema and exit (SQLite: the original is
    kept as PATH.bak-REV-TIME; a failure leaves it untouched)."""
    from edgectl.collector.store import migrate as migrations
    from edgectl.collector.store.engine import display

    url = ctx.meta[URL_KEY]
    backup = migrations.upgrade(url)
    click.echo(f"database {display(url)} at revision "
               f"{migrations.head()}" + (f" (backup {backup})" if backup else ""))


@serve.command("rotate-admin-token")
@click.pass_context
def rotate_admin_token(ctx: click.Context) -> None:
    """Replace the admin token (its file, 0600) and end every fleet page session.

    A running collector (every worker) takes the new token at its next request: the old
    one, and every browser logged in with it, is refused from then on. The new token is
    in the file; `edgectl fleet` commands read it there.

    \b
    Examples:
      edgectl serve rotate-admin-token
      edgectl serve --db postgresql://edge@db/edge --data-dir /var/lib/edgectl \\
          rotate-admin-token
    """
    from edgectl.collector.auth import replace_token_file
    from edgectl.collector.store import Store

    token_file = ctx.meta[TOKEN_KEY]
    store = Store(ctx.meta[URL_KEY])  # first: a database it cannot open changes nothing
    try:
        replace_token_file(token_file)
        ended = store.end_all_sessions()
    finally:
        store.close()
    click.echo(f"admin token replaced in {token_file}; {ended} page session(s) ended")
