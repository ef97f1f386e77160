"""Verify an uploaded model bundle on the board and install it as versions/<version>/.

Run by the edge_model role with the agent virtualenv's python, so the checks are the
agent's own (edge_common.bundle): schema, every file's sha256 and size, the manifest
signature when a key is given, and the test vectors replayed with the board's runtimes.
Installed versions are immutable: the same version with other contents is refused. A version
older than the active one (``current``; natural version order, edge_common.bundle.is_older)
is refused unless the operator says ``--allow-downgrade`` (anti-rollback).
Prints one line "EDGECTL-INSTALL-RESULT <json>" with {"changed", "version", "name", "path",
"test_vectors"}; everything else (runtime banners: LiteRT prints one to stdout, and under
Ansible's PTY stdout and stderr are one stream) goes to stderr, so the result line is
found however much the runtimes print.
Exit status 1 with a one-line "error: ..." on stderr when the bundle is refused.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

# Prefix of the one result line (the edge_model role looks for it).
RESULT_MARK = "EDGECTL-INSTALL-RESULT"


def _replay(bundle: Any) -> list[dict[str, Any]]:
    """Replay the test vectors on every artifact whose runtime is installed here."""
    from edge_common.bundle import replay_test_vectors
    from edge_common.errors import BundleError

    rows = replay_test_vectors(bundle)
    failed = [r for r in rows if r.get("status") == "failed"]
    if failed:
        raise BundleError(
            f"bundle {bundle.version}: test vectors failed on {failed[0]['path']}: "
            f"{failed[0].get('error', 'mismatch')}"
        )
    if not any(r.get("status") == "ok" for r in rows):
        raise BundleError(
            f"bundle {bundle.version}: no artifact could be checked on this board "
            "(no runtime installed for any of them)"
        )
    return rows


def active_version(models: Path) -> str | None:
    """The version ``models/current`` points to, or None before the first install."""
    current = models / "current"
    return Path(os.readlink(current)).name if current.is_symlink() else None


def install(staged: Path, models: Path, public_key: str | None, check: bool,
            allow_undeployable: bool = False, allow_downgrade: bool = False) -> dict[str, Any]:
    """Verify ``staged`` and install it under ``models/versions``; idempotent per version."""
    from edge_common.bundle import MANIFEST, is_older, load_bundle
    from edge_common.errors import BundleError

    versions = models / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".incoming-", dir=versions))
    try:
        bundle = load_bundle(staged, public_key=public_key, extract_to=work / "x")
        version = bundle.version
        if not version or version.startswith(".") or "/" in version or "\\" in version:
            raise BundleError(f"bundle version {version!r} cannot name a folder")
        if not bundle.deployable and not allow_undeployable:
            raise BundleError(
                f"bundle {version} is marked not deployable (built below its accuracy gate)"
            )
        active = active_version(models)
        if active and is_older(version, active) and not allow_downgrade:
            raise BundleError(
                f"bundle {version} is older than the active {active}: refusing a downgrade "
                "(roll back on purpose with edge_model_allow_downgrade: true)"
            )
        target = versions / bundle.version
        if target.exists():
            installed = load_bundle(target, public_key=public_key)
            if (installed.root / MANIFEST).read_bytes() != (bundle.root / MANIFEST).read_bytes():
                raise BundleError(
                    f"bundle version {bundle.version} is already installed with other "
                    "contents; give the new build a new version"
                )
            return {"changed": False, "version": bundle.version, "name": bundle.name,
                    "path": str(target), "test_vectors": []}
        rows = _replay(bundle) if check else []
        tmp = versions / f".tmp-{bundle.version}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(bundle.root, tmp)
        os.rename(tmp, target)  # atomic: a version folder is complete or absent
        return {"changed": True, "version": bundle.version, "name": bundle.name,
                "path": str(target), "test_vectors": rows}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="uploaded bundle folder or .tar")
    parser.add_argument("models", type=Path, help="models folder (versions/ and current)")
    parser.add_argument("--public-key", default="", help="Ed25519 public key (PEM path)")
    parser.add_argument("--no-test-vectors", action="store_true", help="skip the replay")
    parser.add_argument("--allow-undeployable", action="store_true",
                        help="install a bundle built below its accuracy gate")
    parser.add_argument("--allow-downgrade", action="store_true",
                        help="install a version older than the active one (a rollback)")
    args = parser.parse_args(argv)
    from edge_common.errors import EdgeError

    # Native code (LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate") writes to
    # file descriptor 1 directly: point fd 1 at stderr while working, keep the real one.
    sys.stdout.flush()
    result_fd = os.dup(1)
    os.dup2(2, 1)
    try:
        result = install(args.bundle, args.models, args.public_key or None,
                         not args.no_test_vectors, args.allow_undeployable,
                         args.allow_downgrade)
    except (EdgeError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        sys.stdout.flush()
        os.dup2(result_fd, 1)
        os.close(result_fd)
    print(f"{RESULT_MARK} {json.dumps(result, sort_keys=True)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
