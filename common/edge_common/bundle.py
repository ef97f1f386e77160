"""Model bundles: load, verify, sign and pack them (host and board; numpy + cryptography).

A bundle is a directory, or a ``.tar`` of one, holding ``manifest.json`` (the single
truth the board reads), the model files it lists, ``test_vectors.npz`` and optionally
``manifest.sig`` (base64 Ed25519 signature over the exact bytes of ``manifest.json``).
The signature covers the manifest; the manifest covers every file by sha256 and size.
See ``docs/bundle-format.md``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from edge_common.errors import BundleError, IntegrityError
from edge_common.fileio import atomic_path, write_bytes_atomic
from edge_common.preprocess import InputSpec

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
TEST_VECTORS = "test_vectors.npz"
FORMATS = ("onnx", "tflite")
PRECISIONS = ("fp32", "int8")
REQUIRED_FIELDS = (
    "schema_version", "name", "version", "labels", "reject_labels", "input", "artifacts",
)
ARTIFACT_FIELDS = ("path", "format", "precision", "sha256", "bytes")
DEFAULT_TOLERANCE: dict[str, Any] = {"max_abs": 1e-3, "top1": True}
MAX_TAR_BYTES = 2 * 1024**3  # refuse archives that would unpack to more than this

KeyLike = bytes | str | os.PathLike[str]


@dataclass(frozen=True)
class Artifact:
    """One model file of a bundle, as the manifest lists it."""

    path: str
    format: str
    precision: str
    sha256: str
    bytes: int
    metrics: dict[str, Any] = field(default_factory=dict)
    tolerance: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_TOLERANCE))

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "format": self.format, "precision": self.precision,
            "sha256": self.sha256, "bytes": self.bytes,
            "metrics": dict(self.metrics), "tolerance": dict(self.tolerance),
        }


@dataclass
class Bundle:
    """A verified bundle; ``root`` is the directory its files are read from."""

    root: Path
    manifest: dict[str, Any]
    artifacts: list[Artifact]
    input_spec: InputSpec
    signed: bool = False
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def labels(self) -> list[str]:
        return list(self.manifest["labels"])

    @property
    def reject_labels(self) -> list[str]:
        return list(self.manifest["reject_labels"])

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.manifest.get("metrics") or {})

    @property
    def min_accuracy(self) -> float | None:
        v = self.manifest.get("min_accuracy")
        return None if v is None else float(v)

    @property
    def deployable(self) -> bool:
        """False when it was built below its accuracy gate with ``--allow-below-min``."""
        return bool(self.manifest.get("deployable", True))

    def artifact_path(self, artifact: Artifact) -> Path:
        return self.root / artifact.path

    def select_artifact(self, fmt: str, precision: str | None = None) -> Artifact:
        """The artifact of format ``fmt``; ``precision=None`` picks the manifest's
        ``default_precision`` if that exists for ``fmt``, else int8, else fp32."""
        of_fmt = [a for a in self.artifacts if a.format == fmt]
        if precision is not None:
            wanted = [precision]
        else:
            default = self.manifest.get("default_precision")
            wanted = [p for p in (default, "int8", "fp32") if p]
        for p in wanted:
            for a in of_fmt:
                if a.precision == p:
                    return a
        have = ", ".join(f"{a.format}/{a.precision}" for a in self.artifacts) or "none"
        want = f"{fmt}/{precision}" if precision else fmt
        raise BundleError(f"bundle {self.version}: no {want} artifact (has: {have})")

    def test_vectors(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Inputs ``x`` and the expected outputs, keyed by artifact path."""
        entry = self.manifest.get("test_vectors")
        if not entry:
            raise BundleError(f"bundle {self.version}: has no test vectors")
        path = self.root / str(entry["path"])
        try:
            with np.load(path, allow_pickle=False) as npz:
                data = {k: npz[k] for k in npz.files}
        except (OSError, ValueError, KeyError) as err:
            raise BundleError(f"bundle {self.version}: cannot read {entry['path']}: {err}") from err
        if "x" not in data:
            raise BundleError(f"bundle {self.version}: {entry['path']} has no inputs 'x'")
        expected = {k[len("expected/"):]: v for k, v in data.items() if k.startswith("expected/")}
        return data["x"].astype(np.float32, copy=False), expected

    def check_test_vectors(self, session: Any, artifact: Artifact) -> dict[str, Any]:
        """Run ``session`` on the test vectors; raise BundleError naming ``artifact`` on mismatch.

        Fails when any output differs from the recorded one by more than
        ``tolerance.max_abs``, or (``tolerance.top1``) when the top-1 class differs from
        the recorded one on any vector (exact ties in the recorded logits excepted).
        Returns ``{"max_abs_diff", "top1_agreement", "count"}``.
        """
        x, expected = self.test_vectors()
        if artifact.path not in expected:
            raise BundleError(f"bundle {self.version}: no expected outputs for {artifact.path}")
        want = expected[artifact.path].astype(np.float32)
        got = np.asarray(session.run(x), dtype=np.float32)
        if got.shape != want.shape:
            raise BundleError(
                f"bundle {self.version}: {artifact.path} test vectors: output shape "
                f"{tuple(got.shape)} != expected {tuple(want.shape)}"
            )
        tol = {**DEFAULT_TOLERANCE, **artifact.tolerance}
        max_abs = float(tol["max_abs"])
        diff = float(np.max(np.abs(got - want))) if want.size else 0.0
        agree = got.argmax(axis=-1) == want.argmax(axis=-1)
        top2 = np.sort(want, axis=-1)[..., -2:] if want.shape[-1] > 1 else np.zeros((len(want), 2))
        clear = (top2[..., 1] - top2[..., 0]) > 0
        result = {
            "max_abs_diff": diff,
            "top1_agreement": float(agree.mean()) if agree.size else 1.0,
            "count": int(len(x)),
        }
        if not np.isfinite(diff) or diff > max_abs:
            raise BundleError(
                f"bundle {self.version}: {artifact.path} test vectors differ: "
                f"max abs diff {diff:.4g} > tolerance {max_abs:.4g}"
            )
        if tol.get("top1") and not bool(np.all(agree | ~clear)):
            bad = int(np.sum(~agree & clear))
            raise BundleError(
                f"bundle {self.version}: {artifact.path} test vectors: top-1 class differs "
                f"on {bad} of {len(x)} inputs"
            )
        return result

    def close(self) -> None:
        """Remove the temporary extraction directory, if this bundle made one."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def replay_test_vectors(bundle: Bundle, threads: int = 1) -> list[dict[str, Any]]:
    """Replay the test vectors on every artifact whose runtime is installed.

    Returns one row per artifact: ``path, format, precision, status`` (``ok``, ``failed``
    or ``skipped`` when its runtime is missing), plus ``max_abs_diff``/``top1_agreement``
    or ``error``. Never raises for a single artifact, so a report can list them all.
    """
    from edge_common.errors import EdgeError, MissingExtraError
    from edge_common.runtime import open_session

    rows: list[dict[str, Any]] = []
    for a in bundle.artifacts:
        row: dict[str, Any] = {"path": a.path, "format": a.format, "precision": a.precision}
        try:
            session = open_session(bundle.artifact_path(a), a.format, threads)
            row.update(bundle.check_test_vectors(session, a), status="ok")
        except MissingExtraError as err:
            row.update(status="skipped", error=str(err))
        except EdgeError as err:
            row.update(status="failed", error=str(err))
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- hashing, keys


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_key_bytes(key: KeyLike, what: str) -> bytes:
    if isinstance(key, bytes):
        data = key
    elif isinstance(key, str) and key.lstrip().startswith("-----BEGIN"):
        data = key.encode()
    else:
        p = Path(key)
        try:
            data = p.read_bytes()
        except OSError as err:
            raise BundleError(f"cannot read {what} {p}: {err.strerror or err}") from err
    return data


def generate_keypair() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair as ``(private PEM (PKCS#8), public PEM)``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def load_private_key(key: KeyLike) -> Any:
    """An Ed25519 private key from PEM bytes/str or a path."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        k = serialization.load_pem_private_key(_read_key_bytes(key, "private key"), password=None)
    except (ValueError, TypeError) as err:
        raise BundleError(f"not a usable PEM private key: {err}") from err
    if not isinstance(k, Ed25519PrivateKey):
        raise BundleError("signing key is not an Ed25519 private key")
    return k


def load_public_key(key: KeyLike) -> Any:
    """An Ed25519 public key from PEM bytes/str or a path."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        k = serialization.load_pem_public_key(_read_key_bytes(key, "public key"))
    except (ValueError, TypeError) as err:
        raise BundleError(f"not a usable PEM public key: {err}") from err
    if not isinstance(k, Ed25519PublicKey):
        raise BundleError("public key is not an Ed25519 key")
    return k


def sign_manifest(bundle_dir: str | os.PathLike[str], private_key_pem: KeyLike) -> Path:
    """Write ``manifest.sig``: base64 Ed25519 signature of the bytes of ``manifest.json``."""
    root = Path(bundle_dir)
    key = load_private_key(private_key_pem)
    try:
        data = (root / MANIFEST).read_bytes()
    except OSError as err:
        raise BundleError(f"cannot sign {root}: missing file {MANIFEST}") from err
    sig = base64.b64encode(key.sign(data)) + b"\n"
    write_bytes_atomic(root / SIGNATURE, sig)
    return root / SIGNATURE


def verify_signature(manifest_bytes: bytes, sig_text: bytes, public_key: KeyLike) -> None:
    """Raise IntegrityError unless ``sig_text`` (base64) signs ``manifest_bytes``."""
    from cryptography.exceptions import InvalidSignature

    key = load_public_key(public_key)
    try:
        sig = base64.b64decode(sig_text.strip(), validate=True)
    except (binascii.Error, ValueError) as err:
        raise IntegrityError(f"{SIGNATURE} is not valid base64") from err
    try:
        key.verify(sig, manifest_bytes)
    except InvalidSignature as err:
        raise IntegrityError("signature does not match manifest") from err


# --------------------------------------------------------------------------- writing


def write_manifest(bundle_dir: str | os.PathLike[str], manifest: dict[str, Any]) -> Path:
    """Write ``manifest.json`` atomically; a stale ``manifest.sig`` is removed (re-sign)."""
    root = Path(bundle_dir)
    data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    write_bytes_atomic(root / MANIFEST, data)
    (root / SIGNATURE).unlink(missing_ok=True)
    return root / MANIFEST


def pack_tar(bundle_dir: str | os.PathLike[str], tar_path: str | os.PathLike[str]) -> Path:
    """Pack a bundle directory into an uncompressed tar, byte-for-byte reproducible.

    Members sit at the archive root, sorted, with mtime 0, owner root and fixed modes;
    dot files (temporaries) are skipped, links refused. Written atomically.
    """
    root = Path(bundle_dir)
    if not (root / MANIFEST).is_file():
        raise BundleError(f"{root} is not a bundle: missing file {MANIFEST}")
    entries: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                entries.append(Path(dirpath) / name)
        for d in dirnames:
            entries.append(Path(dirpath) / d)
    entries.sort(key=lambda p: p.relative_to(root).as_posix())
    out = Path(tar_path)
    with atomic_path(out) as tmp, tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for p in entries:
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                raise BundleError(f"refusing to pack symlink {rel}")
            info = tarfile.TarInfo(rel)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if p.is_dir():
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.mode = 0o644
                info.size = p.stat().st_size
                with open(p, "rb") as fh:
                    tar.addfile(info, fh)
    return out


# --------------------------------------------------------------------------- loading


def _check_member(m: tarfile.TarInfo) -> None:
    name = m.name
    parts = PurePosixPath(name).parts
    if name.startswith(("/", "\\")) or (parts and ":" in parts[0]):
        raise BundleError(f"unsafe tar member {name!r}: absolute path")
    if ".." in parts:
        raise BundleError(f"unsafe tar member {name!r}: '..' in path")
    if not (m.isreg() or m.isdir()):
        kind = "link" if (m.issym() or m.islnk()) else "device or special file"
        raise BundleError(f"unsafe tar member {name!r}: {kind}")


def extract_tar(tar_path: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Extract a bundle tar into ``dest`` (new or empty) safely; return the bundle root.

    Members must be regular files or directories with relative paths and no ``..``;
    tarfile's ``data`` filter runs as a second line of defence.
    """
    src, out = Path(tar_path), Path(dest)
    if out.exists() and any(out.iterdir()):
        raise BundleError(f"cannot extract into {out}: directory is not empty")
    try:
        with tarfile.open(src, "r:*") as tar:
            members = tar.getmembers()
            total = 0
            for m in members:
                _check_member(m)
                total += m.size
            if total > MAX_TAR_BYTES:
                raise BundleError(f"{src}: unpacks to {total} bytes, over {MAX_TAR_BYTES}")
            out.mkdir(parents=True, exist_ok=True)
            # Python 3.11.2 (Debian bookworm's) predates tarfile's extraction filters.
            if hasattr(tarfile, "data_filter"):
                tar.extractall(out, members=members, filter="data")
            else:
                tar.extractall(out, members=members)
    except (tarfile.TarError, OSError, EOFError) as err:
        raise BundleError(f"cannot read bundle archive {src}: {err}") from err
    if (out / MANIFEST).is_file():
        return out
    subdirs = [p for p in out.iterdir() if p.is_dir()]
    if len(subdirs) == 1 and (subdirs[0] / MANIFEST).is_file():
        return subdirs[0]
    raise BundleError(f"bundle {src.name}: missing file {MANIFEST}")


def _safe_rel(path: Any, what: str) -> str:
    if not isinstance(path, str) or not path:
        raise BundleError(f"manifest field '{what}' must be a file name")
    p = PurePosixPath(path)
    if p.is_absolute() or ".." in p.parts or "\\" in path:
        raise BundleError(f"manifest field '{what}': unsafe path {path!r}")
    return path


def _check_file(root: Path, label: str, rel: str, sha: Any, size: Any) -> None:
    f = root / rel
    if not f.is_file():
        raise BundleError(f"bundle {label}: missing file {rel}")
    actual = f.stat().st_size
    if actual != size:
        raise IntegrityError(
            f"bundle {label}: {rel} size mismatch ({actual} bytes, manifest says {size})"
        )
    if sha256_file(f) != sha:
        raise IntegrityError(f"bundle {label}: {rel} sha256 mismatch")


def _parse_artifacts(manifest: dict[str, Any], label: str) -> list[Artifact]:
    raw = manifest["artifacts"]
    if not isinstance(raw, list) or not raw:
        raise BundleError(f"bundle {label}: manifest field 'artifacts' must be a non-empty list")
    out: list[Artifact] = []
    seen: set[str] = set()
    for i, a in enumerate(raw):
        if not isinstance(a, dict):
            raise BundleError(f"bundle {label}: manifest field 'artifacts[{i}]' must be an object")
        for key in ARTIFACT_FIELDS:
            if key not in a:
                raise BundleError(f"bundle {label}: manifest field 'artifacts[{i}].{key}' missing")
        path = _safe_rel(a["path"], f"artifacts[{i}].path")
        if path in seen:
            raise BundleError(f"bundle {label}: artifact {path} listed twice")
        seen.add(path)
        if a["format"] not in FORMATS:
            raise BundleError(
                f"bundle {label}: {path}: unknown format {a['format']!r} (expected onnx or tflite)"
            )
        if a["precision"] not in PRECISIONS:
            raise BundleError(
                f"bundle {label}: {path}: unknown precision {a['precision']!r} "
                "(expected fp32 or int8)"
            )
        if not isinstance(a["bytes"], int) or isinstance(a["bytes"], bool):
            raise BundleError(
                f"bundle {label}: manifest field 'artifacts[{i}].bytes' must be an integer"
            )
        out.append(Artifact(
            path=path, format=a["format"], precision=a["precision"], sha256=str(a["sha256"]),
            bytes=a["bytes"], metrics=dict(a.get("metrics") or {}),
            tolerance={**DEFAULT_TOLERANCE, **(a.get("tolerance") or {})},
        ))
    return out


def verify_dir(root: Path, public_key: KeyLike | None = None) -> Bundle:
    """Verify a bundle directory in place (signature, fields, files) and return it."""
    label = root.name
    mpath = root / MANIFEST
    if not root.is_dir():
        raise BundleError(f"bundle not found: {root}")
    if not mpath.is_file():
        raise BundleError(f"bundle {label}: missing file {MANIFEST}")
    raw = mpath.read_bytes()
    signed = False
    if public_key is not None:
        sig = root / SIGNATURE
        if not sig.is_file():
            raise IntegrityError(
                f"bundle {label}: bundle is not signed but a public key is configured"
            )
        try:
            verify_signature(raw, sig.read_bytes(), public_key)
        except IntegrityError as err:
            raise IntegrityError(f"bundle {label}: {err}") from err
        signed = True
    try:
        manifest = json.loads(raw)
    except ValueError as err:
        raise BundleError(f"bundle {label}: {MANIFEST} is not valid JSON: {err}") from err
    if not isinstance(manifest, dict):
        raise BundleError(f"bundle {label}: {MANIFEST} must hold a JSON object")
    if "schema_version" not in manifest:
        raise BundleError(f"bundle {label}: manifest field 'schema_version' missing")
    if manifest["schema_version"] != SCHEMA_VERSION:
        raise BundleError(
            f"bundle {label}: unsupported schema_version {manifest['schema_version']!r} "
            f"(this version reads {SCHEMA_VERSION})"
        )
    for key in REQUIRED_FIELDS:
        if key not in manifest:
            raise BundleError(f"bundle {label}: manifest field '{key}' missing")
    label = f"{manifest['name']}@{manifest['version']}"
    labels = manifest["labels"]
    if not (isinstance(labels, list) and len(labels) >= 2
            and all(isinstance(s, str) for s in labels)):
        raise BundleError(f"bundle {label}: manifest field 'labels' must list at least 2 names")
    rejects = manifest["reject_labels"]
    if not isinstance(rejects, list) or not set(rejects) <= set(labels):
        raise BundleError(
            f"bundle {label}: manifest field 'reject_labels' must be a subset of 'labels'"
        )
    try:
        spec = InputSpec.from_dict(manifest["input"])
    except (TypeError, ValueError) as err:
        raise BundleError(f"bundle {label}: manifest field 'input': {err}") from err
    artifacts = _parse_artifacts(manifest, label)
    for a in artifacts:
        _check_file(root, label, a.path, a.sha256, a.bytes)
    tv = manifest.get("test_vectors")
    if tv is not None:
        if not isinstance(tv, dict) or "path" not in tv:
            raise BundleError(f"bundle {label}: manifest field 'test_vectors.path' missing")
        rel = _safe_rel(tv["path"], "test_vectors.path")
        for key in ("sha256", "bytes"):
            if key not in tv:
                raise BundleError(f"bundle {label}: manifest field 'test_vectors.{key}' missing")
        _check_file(root, label, rel, tv["sha256"], tv["bytes"])
    return Bundle(root=root, manifest=manifest, artifacts=artifacts, input_spec=spec, signed=signed)


def load_bundle(
    path: str | os.PathLike[str],
    public_key: KeyLike | None = None,
    extract_to: str | os.PathLike[str] | None = None,
) -> Bundle:
    """Load and verify a bundle directory or ``.tar``.

    Always checks the schema version, the required manifest fields and every listed
    file's size and sha256; with ``public_key`` (PEM bytes/str or a path) the signature
    must be present and match. A tar is extracted safely into ``extract_to`` (new or
    empty), or into a temporary directory removed by ``Bundle.close()`` or at exit.
    Raises :class:`BundleError` (or its :class:`IntegrityError`) naming what failed.
    """
    p = Path(path)
    if p.is_dir():
        return verify_dir(p, public_key)
    if not p.exists():
        raise BundleError(f"bundle not found: {p}")
    if not tarfile.is_tarfile(p):
        raise BundleError(f"{p} is neither a bundle directory nor a tar archive")
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if extract_to is None:
        tmp = tempfile.TemporaryDirectory(prefix="edge-bundle-")
        dest = Path(tmp.name)
    else:
        dest = Path(extract_to)
    created = not dest.exists()
    try:
        root = extract_tar(p, dest)
        bundle = verify_dir(root, public_key)
    except BaseException:
        if tmp is not None:
            tmp.cleanup()
        elif created and dest.exists():
            shutil.rmtree(dest, ignore_errors=True)
        raise
    bundle._tmp = tmp
    return bundle


def manifest_bytes(bundle: Bundle) -> bytes:
    """The exact bytes of the bundle's manifest (what the signature covers)."""
    return (bundle.root / MANIFEST).read_bytes()


def describe(bundle: Bundle) -> dict[str, Any]:
    """A short JSON-able summary for ``edgectl bundle show``."""
    return {
        "root": str(bundle.root), "name": bundle.name, "version": bundle.version,
        "created": bundle.manifest.get("created"), "signed": (bundle.root / SIGNATURE).is_file(),
        "deployable": bundle.deployable, "min_accuracy": bundle.min_accuracy,
        "labels": bundle.labels, "reject_labels": bundle.reject_labels,
        "input": bundle.input_spec.to_dict(),
        "artifacts": [a.to_dict() for a in bundle.artifacts],
        "metrics": bundle.metrics, "baseline": bundle.manifest.get("baseline") or {},
    }


__all__ = [
    "Artifact", "Bundle", "SCHEMA_VERSION", "describe", "extract_tar", "generate_keypair",
    "load_bundle", "load_private_key", "load_public_key", "pack_tar", "replay_test_vectors",
    "sha256_file",
    "sign_manifest", "verify_dir", "verify_signature", "write_manifest",
]
