"""`edgectl fleet`: devices, desired models and status, through the collector's HTTP API.

Every command talks to a running collector with the admin token (it may be on another
machine); ``add-device --data-dir`` can also write the collector's store directly, for
provisioning before the collector first runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from edgectl.cli.options import echo_json, json_option
from edgectl.collector.settings import DEFAULT_PORT, default_data_dir
from edgectl.collector.values import number

F = TypeVar("F", bound=Callable[..., Any])


def server_options(f: F) -> F:
    """``--server``, ``--token-file``, ``--ca-cert``: how to reach the collector as admin."""
    f = click.option("--ca-cert", type=click.Path(exists=True, dir_okay=False), default=None,
                     envvar="EDGECTL_CA_CERT",
                     help="CA certificate to verify an HTTPS collector.")(f)
    f = click.option("--token-file", type=click.Path(dir_okay=False), default=None,
                     envvar="EDGECTL_TOKEN_FILE",
                     help="Admin token file [default: the collector data dir's admin.token].")(f)
    f = click.option("--server", default=f"http://127.0.0.1:{DEFAULT_PORT}", show_default=True,
                     envvar="EDGECTL_SERVER", help="Collector base URL.")(f)
    return f


def _client(server: str, token_file: str | None, ca_cert: str | None) -> Any:
    from edgectl.collector.auth import read_token_file
    from edgectl.collector.client import AdminClient

    path = Path(token_file) if token_file else default_data_dir() / "admin.token"
    try:
        token = read_token_file(path)
    except (OSError, ValueError) as err:
        raise click.ClickException(f"cannot read the admin token ({err}); pass --token-file") \
            from err
    return AdminClient(server, token, ca_cert=ca_cert)


@click.group()
def fleet() -> None:
    """Fleet overview and management: devices, tokens, desired models, status."""


@fleet.command("add-device")
@click.argument("name")
@click.option("--group", default=None, help="Group (e.g. pi4, jetson, line-2).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write the collector's store directly instead of calling --server.")
@server_options
@json_option
def add_device(name: str, group: str | None, data_dir: Path | None, server: str,
               token_file: str | None, ca_cert: str | None, as_json: bool) -> None:
    """Register device NAME and print its token (shown once; the host keeps a hash)."""
    if data_dir is not None:
        out = _add_device_direct(data_dir, name, group)
    else:
        out = _client(server, token_file, ca_cert).add_device(name, group)
    if as_json:
        echo_json(out)
        return
    click.echo(f"device {out['name']} added" + (f" to group {group}" if group else ""), err=True)
    click.echo("its token (shown once; put it in the board's host.token_file):", err=True)
    click.echo(out["token"])


def _add_device_direct(data_dir: Path, name: str, group: str | None) -> dict[str, Any]:
    from edgectl.collector.auth import hash_token, new_token
    from edgectl.collector.names import check_name
    from edgectl.collector.settings import Settings
    from edgectl.collector.store import DuplicateError, Store

    try:
        check_name(name, "device name")
        if group is not None:
            check_name(group, "group name")
    except ValueError as err:
        raise click.BadParameter(str(err)) from err
    Settings.for_data_dir(data_dir)  # creates the admin token on first use
    store = Store(data_dir / "collector.db")
    token = new_token()
    try:
        store.add_device(name, group, hash_token(token))
    except DuplicateError as err:
        raise click.ClickException(str(err.args[0])) from err
    finally:
        store.close()
    return {"name": name, "group": group, "token": token}


@fleet.command("rotate-token")
@click.argument("name")
@server_options
def rotate_token(name: str, server: str, token_file: str | None, ca_cert: str | None) -> None:
    """Issue a new token for device NAME (the old one stops working) and print it."""
    out = _client(server, token_file, ca_cert).rotate_token(name)
    click.echo(out["token"])


@fleet.command("devices")
@server_options
@json_option
def devices(server: str, token_file: str | None, ca_cert: str | None, as_json: bool) -> None:
    """List registered devices."""
    rows = _client(server, token_file, ca_cert).devices()
    if as_json:
        echo_json(rows)
        return
    now = time.time()
    table = [[r["name"], r["group"] or "-", _ago(r["last_seen"], now)] for r in rows]
    _print_table(["DEVICE", "GROUP", "LAST SEEN"], table)


@fleet.command("set-model")
@click.argument("target")
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.option("--group", "force_group", is_flag=True,
              help="TARGET is a group (needed when no device is in it yet).")
@click.option("--public-key", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Check the bundle's signature with this key before uploading.")
@click.option("--allow-downgrade", is_flag=True,
              help="Let boards running a newer version go back to this one (they refuse "
                   "an older version otherwise).")
@server_options
def set_model(target: str, bundle: Path, force_group: bool, public_key: str | None,
              allow_downgrade: bool, server: str, token_file: str | None,
              ca_cert: str | None) -> None:
    """Upload BUNDLE (a folder or .tar) to the collector and make it the desired model of
    TARGET, a device or a group. The bundle is verified here first."""
    from edge_common.bundle import load_bundle

    b = load_bundle(bundle, public_key=public_key)
    try:
        version = b.version
    finally:
        b.close()
    client = _client(server, token_file, ca_cert)
    if force_group:
        kind = "group"
    else:
        known = client.devices()
        if any(d["name"] == target for d in known):
            kind = "device"
        elif any(d["group"] == target for d in known):
            kind = "group"
        else:
            raise click.ClickException(f"no device or group named {target!r} "
                                       "(pass --group to target an empty group)")
    up = client.upload_bundle(bundle)
    client.set_desired(kind, target, up["version"], allow_downgrade=allow_downgrade)
    click.echo(f"{kind} {target} -> {version} (sha256 {up['sha256'][:12]}, {up['bytes']} bytes)")


@fleet.command("status")
@server_options
@json_option
def status(server: str, token_file: str | None, ca_cert: str | None, as_json: bool) -> None:
    """One row per device: health, last seen, model, fps, p95, counts, backlog."""
    rows = _client(server, token_file, ca_cert).status()
    if as_json:
        echo_json(rows)
        return
    now = time.time()
    cols = ["DEVICE", "HEALTH", "LAST SEEN", "MODEL", "FPS", "P95 MS", "REJECTS", "REVIEWS",
            "MISSES", "UNSENT"]
    table = []
    for r in rows:
        model = str(r["model_version"] or "-")
        if r["desired_version"] and r["desired_version"] != r["model_version"]:
            model += f" (want {r['desired_version']})"
        table.append([r["device"], r["health"], _ago(r["last_seen"], now), model,
                      _num(r["fps"], 1), _num(r["p95_ms"], 1), _num(r["rejects"]),
                      _num(r["reviews"]), _num(r["deadline_misses"]), _num(r["unsent"])])
    _print_table(cols, table)
    for r in rows:
        for reason in r["reasons"]:
            click.echo(f"  {r['device']}: {reason}")


@fleet.command("export-labels")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@server_options
@json_option
def export_labels(out: Path, server: str, token_file: str | None, ca_cert: str | None,
                  as_json: bool) -> None:
    """Write the review page's labels as an image folder OUT (OUT/<class>/<image>, and
    labels.csv) that `edgectl build --data folder:OUT` trains on.

    \b
    Example:
      edgectl fleet export-labels runs/labels-w49
      edgectl build --data folder:runs/labels-w49 --prune structured --sparsity 0.5
    """
    from edgectl.collector.labels import unpack_labels

    data = _client(server, token_file, ca_cert).review_labels_zip()
    counts = unpack_labels(data, out)
    if as_json:
        echo_json({"out": str(out), "classes": counts, "images": sum(counts.values())})
        return
    click.echo(f"{sum(counts.values())} labelled images in {out}: " +
               ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    click.echo(f"train on them: edgectl build --data folder:{out}")


def _ago(v: Any, now: float) -> str:
    ts = number(v)
    if ts is None:
        return "never"
    age = max(0.0, now - ts)
    if age < 120:
        return f"{age:.0f}s ago"
    if age < 7200:
        return f"{age / 60:.0f}m ago"
    return f"{age / 3600:.1f}h ago"


def _num(v: Any, digits: int = 0) -> str:
    """A number for the table; "-" for one missing or not a number (a row from an older
    collector may hold anything a board sent)."""
    f = number(v)
    if f is None:
        return "-"
    return f"{f:.{digits}f}" if digits else str(int(f))


def _print_table(cols: list[str], rows: list[list[str]]) -> None:
    if not rows:
        click.echo("no devices", err=True)
        return
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    click.echo("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip())
    for r in rows:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())

