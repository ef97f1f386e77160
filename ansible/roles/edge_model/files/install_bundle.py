"""Verify an uploaded model bundle on the board, install it as versions/<version>/ and make
it the active one (``current``), durably; prune old versions.

Run by the edge_model role with the agent virtualenv's python, so the checks are the
agent's own (edge_common.bundle): schema, every file's sha256 and size, the manifest
signature when a key is given, and the test vectors replayed with the board's runtimes.
Installed versions are immutable: the same version with other contents is refused. A version
older than the active one (``current``; natural version order, edge_common.bundle.is_older)
is refused unless the operator says ``--allow-downgrade`` (anti-rollback).

Power cuts: every file and folder of a new version is fsynced before the folder is renamed
into ``versions/``, and ``versions/`` before ``current`` is switched (a new link renamed
over the old one, then ``models/`` fsynced); a board that loses power at any moment boots
into one complete version, the old or the new. What a cut run leaves (``versions/.incoming-*``,
``.tmp-*``, ``.prune-*``, ``models/.current-*``) is removed by the next run.
Pruning keeps ``--keep`` versions: the active one, then the ones that served, the most
recently activated first (``models/served.json`` records when each became current), then
versions that never served; never by folder mtime.

Prints one line "EDGECTL-INSTALL-RESULT <json>" with {"changed", "installed", "switched",
"version", "name", "path", "test_vectors", "pruned"}; everything else (runtime banners:
LiteRT prints one to stdout, and under Ansible's PTY stdout and stderr are one stream) goes
to stderr, so the result line is found however much the runtimes print.
Exit status 1 with a one-line "error: ..." when the bundle is refused (the role fails the
play with that line).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Prefix of the one result line (the edge_model role looks for it).
RESULT_MARK = "EDGECTL-INSTALL-RESULT"
# When each version became current (unix time), next to versions/ and current.
SERVED = "served.json"
# Names a run works under; whatever of them a cut run left is removed by the next one.
LEFTOVERS = (".incoming-", ".tmp-", ".prune-")


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


def remove_leftovers(models: Path) -> list[str]:
    """Remove what an interrupted run left behind; the names removed."""
    from edge_common.fileio import fsync_dir

    gone = []
    for folder, prefixes in ((models / "versions", LEFTOVERS), (models, (".current-",))):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.name.startswith(prefixes):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
                gone.append(p.name)
        if gone:
            fsync_dir(folder)
    return gone


def read_served(models: Path) -> dict[str, float]:
    """When each version became current; the active one is added with the time its link
    was made (a switch done by hand or by an older installer)."""
    try:
        served = {str(k): float(v) for k, v in json.loads((models / SERVED).read_text()).items()}
    except (OSError, ValueError, AttributeError):
        served = {}
    active = active_version(models)
    if active and active not in served:
        served[active] = (models / "current").lstat().st_mtime
    return served


def write_served(models: Path, served: dict[str, float]) -> None:
    from edge_common.fileio import fsync_dir, write_json_atomic

    write_json_atomic(models / SERVED, served, mode=0o640)
    fsync_dir(models)


def switch_current(models: Path, version: str, owner: tuple[int, int] | None) -> None:
    """Point ``current`` at versions/<version>: a new link renamed over the old, then the
    folder fsynced (the version's folder is durable before: see install)."""
    from edge_common.fileio import fsync_dir

    tmp = models / f".current-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    os.symlink(f"versions/{version}", tmp)
    if owner is not None:
        os.lchown(tmp, *owner)  # the link itself is the agent's (its update worker may swap it)
    os.replace(tmp, models / "current")
    fsync_dir(models)


def prune(models: Path, served: dict[str, float], keep: int) -> list[str]:
    """Remove versions beyond ``keep``: kept are the active one, then those that served,
    most recently activated first, then the newest of those that never served."""
    from edge_common.bundle import version_key
    from edge_common.fileio import fsync_dir

    versions = models / "versions"
    installed = [p.name for p in versions.iterdir()
                 if p.is_dir() and not p.name.startswith(".")]
    active = active_version(models)
    never = sorted((v for v in installed if v not in served and v != active),
                   key=version_key, reverse=True)
    ranked = ([active] if active in installed else []) + sorted(
        (v for v in installed if v in served and v != active),
        key=lambda v: served[v], reverse=True) + never
    gone = ranked[max(keep, 1):]
    for version in gone:
        # Renamed first: a cut never leaves half a version under its own name.
        trash = versions / f".prune-{version}"
        os.rename(versions / version, trash)
        fsync_dir(versions)
        shutil.rmtree(trash)
        served.pop(version, None)
    return gone


def install(staged: Path, models: Path, public_key: str | None, check: bool,
            allow_undeployable: bool = False, allow_downgrade: bool = False,
            owner: tuple[int, int] | None = None, keep: int = 3,
            activate: bool = True) -> dict[str, Any]:
    """Verify ``staged``, install it under ``models/versions`` and make it current;
    idempotent per version."""
    from edge_common.bundle import MANIFEST, is_older, load_bundle
    from edge_common.errors import BundleError
    from edge_common.fileio import fsync_dir, fsync_tree

    versions = models / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    remove_leftovers(models)
    served = read_served(models)
    work = Path(tempfile.mkdtemp(prefix=".incoming-", dir=versions))
    try:
        # Unpacked under the upload's name: a refusal names the upload (``bundle
        # line-7.tar: signature does not match manifest``), never the scratch folder.
        scratch = work / staged.name
        try:
            bundle = load_bundle(staged, public_key=public_key, extract_to=scratch)
        except BundleError as err:
            raise BundleError(str(err).replace(str(scratch), staged.name)) from err
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
        target = versions / version
        rows: list[dict[str, Any]] = []
        installed = False
        if target.exists():
            there = load_bundle(target, public_key=public_key)
            if (there.root / MANIFEST).read_bytes() != (bundle.root / MANIFEST).read_bytes():
                raise BundleError(
                    f"bundle version {version} is already installed with other "
                    "contents; give the new build a new version"
                )
        else:
            rows = _replay(bundle) if check else []
            tmp = versions / f".tmp-{version}"
            shutil.copytree(bundle.root, tmp)
            # The agent's to read, nobody else's (0640 files, 0750 folders).
            for folder, dirs, files in os.walk(tmp):
                for name in dirs:
                    os.chmod(os.path.join(folder, name), 0o750)
                for name in files:
                    os.chmod(os.path.join(folder, name), 0o640)
                for name in [*dirs, *files] if owner is not None else []:
                    os.lchown(os.path.join(folder, name), *owner)
            os.chmod(tmp, 0o750)
            if owner is not None:
                os.lchown(tmp, *owner)
            fsync_tree(tmp)          # the files' data and names are on disk ...
            os.rename(tmp, target)   # ... before the complete folder takes its name
            fsync_dir(versions)      # ... and the name is, before current points at it
            installed = True
        switched = activate and active != version
        if switched:
            switch_current(models, version, owner)
            served[version] = time.time()
        pruned = prune(models, served, keep)
        if switched or pruned or not (models / SERVED).exists():
            write_served(models, served)
        return {"changed": installed or switched or bool(pruned), "installed": installed,
                "switched": switched, "version": version, "name": bundle.name,
                "path": str(target), "test_vectors": rows, "pruned": pruned}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _owner(user: str, group: str) -> tuple[int, int] | None:
    if not user:
        return None
    import grp
    import pwd

    return pwd.getpwnam(user).pw_uid, grp.getgrnam(group or user).gr_gid


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
    parser.add_argument("--owner", default="", help="user owning what is installed")
    parser.add_argument("--group", default="", help="its group (default: the user's name)")
    parser.add_argument("--keep", type=int, default=3,
                        help="versions kept, the active one included")
    parser.add_argument("--no-activate", action="store_true",
                        help="install the version folder only; leave current as it is")
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
                         args.allow_downgrade, _owner(args.owner, args.group), args.keep,
                         not args.no_activate)
    except (EdgeError, OSError, KeyError) as err:
        reason = " ".join(str(err).split())  # one line, whatever the cause printed
        print(f"error: {reason}", file=sys.stderr, flush=True)
        return 1
    finally:
        sys.stdout.flush()
        os.dup2(result_fd, 1)
        os.close(result_fd)
    print(f"{RESULT_MARK} {json.dumps(result, sort_keys=True)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
