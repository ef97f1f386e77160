"""`edgectl bundle show|verify`: inspect a bundle, or check it the way a board does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgectl.cli.options import echo_json, json_option, threads_option

_path_arg = click.argument("path", type=click.Path(exists=True, path_type=Path))


@click.group()
def bundle() -> None:
    """Show or verify a model bundle (directory or .tar)."""


def _fmt_bytes(n: Any) -> str:
    if not isinstance(n, (int, float)):
        return "-"
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _acc(v: Any) -> str:
    return f"{100 * v:.2f}%" if isinstance(v, (int, float)) else "-"


@bundle.command("show")
@_path_arg
@json_option
def show(path: Path, as_json: bool) -> None:
    """Print a bundle's manifest summary (hashes are checked, signature is not)."""
    from edge_common.bundle import describe, load_bundle

    b = load_bundle(path)
    try:
        info = describe(b)
        info["root"] = str(path)
    finally:
        b.close()
    if as_json:
        echo_json(info)
        return
    click.echo(f"{info['name']}  {info['version']}  (created {info['created']})")
    click.echo(f"signed: {'yes' if info['signed'] else 'no'}   deployable: "
               f"{'yes' if info['deployable'] else 'NO (built below its accuracy gate)'}   "
               f"min accuracy: {_acc(info['min_accuracy'])}")
    spec = info["input"]
    click.echo(f"input: {spec['size']}x{spec['size']} {spec['colour_order']} {spec['layout']}")
    click.echo(f"labels: {', '.join(info['labels'])}  (reject: {', '.join(info['reject_labels'])})")
    m, base = info["metrics"], info["baseline"]
    if m:
        click.echo(f"accuracy: {_acc(m.get('accuracy'))} (baseline {_acc(base.get('accuracy'))})"
                   f"   sparsity: {m.get('sparsity', 0):.3f}")
    click.echo(f"{'artifact':<20} {'format':<7} {'prec':<5} {'size':>10} {'accuracy':>9} "
               f"{'p50 ms':>7}  sha256")
    for a in info["artifacts"]:
        lat = (a["metrics"].get("latency_ms") or {}).get("p50")
        click.echo(f"{a['path']:<20} {a['format']:<7} {a['precision']:<5} "
                   f"{_fmt_bytes(a['bytes']):>10} {_acc(a['metrics'].get('accuracy')):>9} "
                   f"{(f'{lat:.2f}' if isinstance(lat, (int, float)) else '-'):>7}  "
                   f"{a['sha256'][:16]}")


@bundle.command("verify")
@_path_arg
@click.option("--key", "key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Ed25519 public key (PEM); the bundle must then be signed by it.")
@threads_option
@json_option
def verify(path: Path, key: Path | None, threads: int, as_json: bool) -> None:
    """Verify a bundle as a board would: signature (with --key), hashes, test vectors.

    Test vectors are replayed on every artifact whose runtime is installed here.
    Exits 1 if anything fails, or if the bundle is marked not deployable (the reason
    is printed): a board refuses it.
    """
    from edge_common.bundle import load_bundle, replay_test_vectors

    b = load_bundle(path, public_key=key)
    try:
        rows = replay_test_vectors(b, threads=threads)
        name, version, signed = b.name, b.version, b.signed
        undeployable = None if b.deployable else not_deployable_reason(b)
    finally:
        b.close()
    vectors_ok = all(r["status"] != "failed" for r in rows)
    ok = vectors_ok and undeployable is None
    if as_json:
        echo_json({"bundle": str(path), "name": name, "version": version,
                   "signature": "verified" if signed else "not checked",
                   "artifacts": rows, "deployable": undeployable is None,
                   "not_deployable_reason": undeployable, "ok": ok})
    else:
        click.echo(f"{name} {version}: manifest and hashes OK; signature "
                   f"{'verified' if signed else 'not checked (no --key)'}")
        for r in rows:
            if r["status"] == "ok":
                detail = (f"max abs diff {r['max_abs_diff']:.3g}, "
                          f"top-1 agreement {100 * r['top1_agreement']:.0f}%")
            else:
                detail = r["error"]
            colour = {"ok": "green", "failed": "red"}.get(r["status"], "yellow")
            click.echo(f"  {r['path']:<20} " + click.style(f"{r['status']:<8}", fg=colour)
                       + f" {detail}")
    if not ok:
        failed = ", ".join(r["path"] for r in rows if r["status"] == "failed")
        if not as_json:
            if not vectors_ok:
                click.secho(f"error: test vectors failed for {failed}", fg="red", err=True)
            if undeployable is not None:
                click.secho(f"error: {undeployable}", fg="red", err=True)
        raise SystemExit(1)


def not_deployable_reason(b: Any) -> str:
    """Why a bundle marked ``deployable: false`` must not go to a board, in one line."""
    acc = b.metrics.get("accuracy")
    gate = b.min_accuracy
    detail = (f" (accuracy {_acc(acc)}, gate {_acc(gate)})"
              if isinstance(acc, (int, float)) and gate is not None else "")
    return (f"bundle {b.version} is marked not deployable: built below its accuracy "
            f"gate{detail} with --allow-below-min")
