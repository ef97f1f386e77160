"""`edgectl serve`: run the host collector (FastAPI on uvicorn) that boards sync to."""

from __future__ import annotations

from pathlib import Path

import click

from edgectl.collector.settings import DEFAULT_PORT, default_data_dir


@click.command()
@click.option("--db", default=None, metavar="sqlite:///PATH",
              help="Database (default: DATA_DIR/collector.db).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Samples, bundles, admin token [default: $EDGECTL_DATA_DIR or "
                   "~/.local/share/edgectl/collector].")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True)
@click.option("--admin-token-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Admin token (created 0600 if missing) [default: DATA_DIR/admin.token].")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Serve HTTPS with this certificate (PEM).")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="Private key of --tls-cert (PEM).")
@click.option("--stale-after", type=click.FloatRange(min=1), default=120.0, show_default=True,
              help="Seconds without news after which a device shows as stale.")
@click.option("--api-docs", is_flag=True,
              help="Serve /docs, /redoc and /openapi.json (off by default: they are not "
                   "behind a token; for development on a trusted network).")
def serve(db: str | None, data_dir: Path | None, host: str, port: int,
          admin_token_file: Path | None, tls_cert: Path | None, tls_key: Path | None,
          stale_after: float, api_docs: bool) -> None:
    """Run the host collector: heartbeats, decision batches, samples, desired models,
    bundle downloads, update reports. With --api-docs: OpenAPI at /openapi.json, /docs."""
    from edgectl.collector.server import make_server
    from edgectl.collector.settings import Settings, db_path_from_url
    from edgectl.collector.store import Store

    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    data_dir = data_dir or default_data_dir()
    settings = Settings.for_data_dir(data_dir, admin_token_file, stale_after_s=stale_after,
                                     api_docs=api_docs)
    try:
        db_path = db_path_from_url(db, data_dir)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--db") from err
    store = Store(db_path)
    scheme = "https" if tls_cert else "http"
    token_file = admin_token_file or data_dir / "admin.token"
    click.echo(f"collector on {scheme}://{host}:{port}  (data {data_dir}, db {db_path}, "
               f"admin token {token_file})", err=True)
    if scheme == "http" and host not in ("127.0.0.1", "localhost", "::1"):
        click.secho("warning: serving plain HTTP on a non-loopback address; tokens travel "
                    "in clear (use --tls-cert/--tls-key)", fg="yellow", err=True)
    server = make_server(store, settings, host, port, tls_cert, tls_key, log_level="info")
    try:
        server.run()
    finally:
        store.close()
