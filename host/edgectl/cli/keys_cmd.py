"""`edgectl keys generate`: the Ed25519 key pair that signs bundles."""

from __future__ import annotations

import os
from pathlib import Path

import click

from edgectl.cli.options import echo_json, json_option

PRIVATE_NAME = "edge-signing.key"
PUBLIC_NAME = "edge-signing.pub"


def write_keypair(out_dir: str | os.PathLike[str], force: bool = False) -> tuple[Path, Path]:
    """Write ``edge-signing.key`` (PKCS#8 PEM, mode 0600) and ``edge-signing.pub`` (0644)
    in ``out_dir`` (created 0700); refuse to replace existing keys unless ``force``."""
    from edge_common.bundle import generate_keypair
    from edge_common.errors import ConfigError
    from edge_common.fileio import atomic_path

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is not a directory")
    private, public = out / PRIVATE_NAME, out / PUBLIC_NAME
    existing = [p for p in (private, public) if p.exists()]
    if existing and not force:
        raise ConfigError(
            f"{existing[0]} exists; pass --force to replace it "
            "(boards holding the old public key will then refuse new bundles)"
        )
    priv_pem, pub_pem = generate_keypair()
    out.mkdir(mode=0o700, parents=True, exist_ok=True)  # a new key folder: owner only
    with atomic_path(private, mode=0o600) as tmp:  # 0600 before any key byte is written
        tmp.write_bytes(priv_pem)
    with atomic_path(public, mode=0o644) as tmp:  # public by design: boards get a copy
        tmp.write_bytes(pub_pem)
    return private, public


@click.group()
def keys() -> None:
    """Manage the Ed25519 key pair that signs model bundles."""


@keys.command("generate")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("keys"),
              show_default=True, help="Folder for edge-signing.key and edge-signing.pub.")
@click.option("--force", is_flag=True, help="Replace existing keys.")
@json_option
def generate(out_dir: Path, force: bool, as_json: bool) -> None:
    """Generate a signing key (keep it on the host) and its public key (for the boards)."""
    private, public = write_keypair(out_dir, force=force)
    if as_json:
        echo_json({"private_key": str(private), "public_key": str(public)})
        return
    click.echo(f"private key: {private}  (mode 0600; keep it on the build host)")
    click.echo(f"public key:  {public}  (give it to the boards: update.public_key)")
    click.echo(f"sign bundles with: edgectl build ... --key {private}")
