"""Model bundles: load, verify, sign and pack them (host and board; numpy + cryptography).

A bundle is a directory, or a ``.tar`` of one, holding ``manifest.json`` (the single
truth the board reads), the model files it lists, ``test_vectors.npz`` and optionally
``manifest.sig`` (base64 Ed25519 signature over the exact bytes of ``manifest.json``).
The signature covers the manifest; the manifest covers every file by sha256 and size.
See ``docs/bundle-format.md``.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from edge_common.bundle_tar import extract_tar, pack_tar
from edge_common.errors import BundleError, EdgeError, IntegrityError, one_line
from edge_common.hashing import sha256_file
from edge_common.manifest import (
    ARTIFACT_FIELDS,
    DEFAULT_TOLERANCE,
    FORMATS,
    MANIFEST,
    MAX_BUNDLE_BYTES,
    MAX_MANIFEST_BYTES,
    MAX_MEMBER_BYTES,
    MAX_SIGNATURE_BYTES,
    PRECISIONS,
    REQUIRED_FIELDS,
    SCHEMA_VERSION,
    SIGNATURE,
    TEST_VECTORS,
    check_manifest,
    is_older,
    listed_files,
    parent_dirs,
    parse_manifest,
    version_key,
    write_manifest,
)
from edge_common.preprocess import InputSpec
from edge_common.signing import (
    KeyLike,
    generate_keypair,
    load_private_key,
    load_public_key,
    sign_manifest,
    verify_signature,
)

# Re-exported: callers say ``from edge_common.bundle import X`` for every bundle concept.
__all__ = [
    "ARTIFACT_FIELDS", "DEFAULT_TOLERANCE", "FORMATS", "MANIFEST", "MAX_BUNDLE_BYTES",
    "MAX_MANIFEST_BYTES", "MAX_MEMBER_BYTES", "MAX_SIGNATURE_BYTES", "PRECISIONS",
    "REQUIRED_FIELDS", "SCHEMA_VERSION", "SIGNATURE", "TEST_VECTORS", "Artifact", "Bundle",
    "KeyLike", "compare_outputs", "describe", "extract_tar", "generate_keypair", "is_older",
    "listed_files",
    "load_bundle", "load_private_key", "load_public_key", "manifest_bytes", "pack_tar",
    "parse_manifest", "replay_test_vectors", "sha256_file", "sign_manifest", "verify_dir",
    "verify_signature", "version_key", "write_manifest",
]



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

    @property
    def deployable(self) -> bool:
        """False for a file the build marked not deployable (an INT8 artifact that lost more
        than ``--max-accuracy-drop`` against its FP32 twin); the bundle's other files stand."""
        return bool(self.metrics.get("deployable", True))

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
        ``default_precision`` if that exists for ``fmt``, else int8, else fp32, skipping
        files marked not deployable. Asking for a not-deployable one by name is an error."""
        of_fmt = [a for a in self.artifacts if a.format == fmt]
        if precision is not None:
            wanted = [precision]
        else:
            default = self.manifest.get("default_precision")
            wanted = [p for p in (default, "int8", "fp32") if p]
            of_fmt = [a for a in of_fmt if a.deployable]
        for p in wanted:
            for a in of_fmt:
                if a.precision == p:
                    if not a.deployable:
                        raise BundleError(f"bundle {self.version}: {a.path} is marked not "
                                          "deployable (it fails the build's accuracy gate)")
                    return a
        have = ", ".join(f"{a.format}/{a.precision}" for a in self.artifacts) or "none"
        want = f"{fmt}/{precision}" if precision else fmt
        raise BundleError(f"bundle {self.version}: no {want} artifact (has: {have})")

    def test_vector_arrays(self) -> dict[str, np.ndarray]:
        """Every array of the test vector file (``x``, ``expected/…``, optionally ``y``)."""
        entry = self.manifest.get("test_vectors")
        if not entry:
            raise BundleError(f"bundle {self.version}: has no test vectors")
        try:
            return read_npz(self.root / str(entry["path"]))
        except (OSError, ValueError, KeyError) as err:
            raise BundleError(f"bundle {self.version}: cannot read {entry['path']}: {err}") from err

    def test_vectors(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Inputs ``x`` and the expected outputs, keyed by artifact path."""
        data = self.test_vector_arrays()
        if "x" not in data:
            path = self.manifest["test_vectors"]["path"]
            raise BundleError(f"bundle {self.version}: {path} has no inputs 'x'")
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
        spec = self.input_spec
        want_shape = ((3, spec.size, spec.size) if spec.layout == "NCHW"
                      else (spec.size, spec.size, 3))
        if x.ndim != 4 or tuple(x.shape[1:]) != want_shape:
            # The board feeds the model what preprocess() makes from the input spec; test
            # vectors of another shape would pass here and every frame fail on the line.
            raise BundleError(
                f"bundle {self.version}: test vectors have shape {tuple(x.shape)} but the "
                f"input spec makes {want_shape} ({spec.layout}, size {spec.size})"
            )
        if artifact.path not in expected:
            raise BundleError(f"bundle {self.version}: no expected outputs for {artifact.path}")
        want = expected[artifact.path].astype(np.float32)
        try:
            got = np.asarray(session.run(x), dtype=np.float32)
        except EdgeError:
            raise
        except Exception as err:  # noqa: BLE001 - a runtime's own errors, one line
            raise BundleError(f"bundle {self.version}: {artifact.path} cannot run its test "
                              f"vectors: {one_line(err)}") from err
        if got.shape != want.shape:
            raise BundleError(
                f"bundle {self.version}: {artifact.path} test vectors: output shape "
                f"{tuple(got.shape)} != expected {tuple(want.shape)}"
            )
        tol = {**DEFAULT_TOLERANCE, **artifact.tolerance}
        max_abs = float(tol["max_abs"])
        result = {**compare_outputs(got, want), "count": int(len(x))}
        diff = result["max_abs_diff"]
        agree = got.argmax(axis=-1) == want.argmax(axis=-1)
        top2 = np.sort(want, axis=-1)[..., -2:] if want.shape[-1] > 1 else np.zeros((len(want), 2))
        clear = (top2[..., 1] - top2[..., 0]) > 0
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


def read_npz(path: str | os.PathLike[str], attempts: int = 3) -> dict[str, np.ndarray]:
    """All arrays of an ``.npz`` file (never unpickles).

    numpy parses each array's header with ``ast.literal_eval``; CPython 3.11 (the boards'
    Python) can fail that with ``SystemError: AST constructor recursion depth mismatch``
    when another thread compiles at the same moment (the AST state's depth counter is
    shared: python/cpython#106905, and an agent has PLC, sync and update threads that may
    import lazily). The read has no side effects, so that one error is retried.
    """
    for attempt in range(attempts):
        try:
            with np.load(path, allow_pickle=False) as npz:
                return {k: npz[k] for k in npz.files}
        except SystemError as err:
            if "recursion depth mismatch" not in str(err) or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def compare_outputs(got: np.ndarray, want: np.ndarray) -> dict[str, float]:
    """How far outputs ``got`` are from the recorded ``want`` (same shape): the largest
    absolute difference and the share of inputs with the same top-1 class."""
    got = np.asarray(got, dtype=np.float32)
    want = np.asarray(want, dtype=np.float32)
    diff = float(np.max(np.abs(got - want))) if want.size else 0.0
    agree = got.argmax(axis=-1) == want.argmax(axis=-1)
    return {"max_abs_diff": diff, "top1_agreement": float(agree.mean()) if agree.size else 1.0}


def replay_test_vectors(bundle: Bundle, threads: int = 1) -> list[dict[str, Any]]:
    """Replay the test vectors on every artifact whose runtime is installed.

    Returns one row per artifact: ``path, format, precision, status`` (``ok``, ``failed``
    or ``skipped`` when its runtime is missing), plus ``max_abs_diff``/``top1_agreement``
    or ``error``. Never raises for a single artifact, so a report can list them all.
    """
    from edge_common.errors import MissingExtraError
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



def _safe_rel(path: Any, what: str) -> str:
    if not isinstance(path, str) or not path:
        raise BundleError(f"manifest field '{what}' must be a file name")
    p = PurePosixPath(path)
    if p.is_absolute() or ".." in p.parts or "\\" in path:
        raise BundleError(f"manifest field '{what}': unsafe path {path!r}")
    return path


def _check_file(root: Path, label: str, rel: str, sha: Any, size: Any,
                max_member_bytes: int = MAX_MEMBER_BYTES) -> None:
    f = root / rel
    try:
        st = f.lstat()  # lstat: a symlink is refused, never followed
    except OSError:
        raise BundleError(f"bundle {label}: missing file {rel}") from None
    if not stat.S_ISREG(st.st_mode):
        raise BundleError(f"bundle {label}: {rel} is not a regular file")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= max_member_bytes:
        raise BundleError(f"bundle {label}: {rel} size {size!r} is not an integer within the "
                          f"limit of {max_member_bytes} bytes")
    if st.st_size != size:
        raise IntegrityError(
            f"bundle {label}: {rel} size mismatch ({st.st_size} bytes, manifest says {size})"
        )
    if sha256_file(f) != sha:
        raise IntegrityError(f"bundle {label}: {rel} sha256 mismatch")


def _check_listing(root: Path, label: str, allowed: set[str], max_bytes: int) -> None:
    """Refuse anything in the bundle folder the manifest does not list: other files,
    symlinks (never followed), FIFOs, devices; and a total over ``max_bytes``."""
    dirs = parent_dirs(allowed)
    total = 0
    stack = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        with os.scandir(folder) as it:
            for e in it:
                rel = prefix + e.name
                if e.is_symlink():
                    raise BundleError(f"bundle {label}: {rel} is a symlink (not followed)")
                if e.is_dir(follow_symlinks=False) and rel in dirs:
                    stack.append((Path(e.path), rel + "/"))
                    continue
                if e.is_dir(follow_symlinks=False):
                    raise BundleError(f"bundle {label}: folder {rel} is not listed in the "
                                      "manifest")
                if not e.is_file(follow_symlinks=False):
                    raise BundleError(f"bundle {label}: {rel} is a special file "
                                      "(FIFO, device or socket)")
                if rel not in allowed:
                    raise BundleError(f"bundle {label}: {rel} is not listed in the manifest")
                total += e.stat(follow_symlinks=False).st_size
    if total > max_bytes:
        raise BundleError(f"bundle {label}: {total} bytes in all, over the limit of {max_bytes}")


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


def verify_dir(root: Path, public_key: KeyLike | None = None,
               max_bytes: int = MAX_BUNDLE_BYTES,
               max_member_bytes: int = MAX_MEMBER_BYTES) -> Bundle:
    """Verify a bundle directory in place (signature, fields, listing, files) and return it.

    ``root`` itself may be a symlink (an installed ``current``); nothing inside may be.
    """
    label = root.name
    mpath = root / MANIFEST
    if not root.is_dir():
        raise BundleError(f"bundle not found: {root}")
    try:
        mst = mpath.lstat()
    except OSError:
        raise BundleError(f"bundle {label}: missing file {MANIFEST}") from None
    if not stat.S_ISREG(mst.st_mode):
        raise BundleError(f"bundle {label}: {MANIFEST} is not a regular file")
    if mst.st_size > MAX_MANIFEST_BYTES:
        raise BundleError(f"bundle {label}: {MANIFEST} is {mst.st_size} bytes, over "
                          f"{MAX_MANIFEST_BYTES}")
    raw = mpath.read_bytes()
    signed = False
    if public_key is not None:
        sig = root / SIGNATURE
        try:
            sst = sig.lstat()
        except OSError:
            raise IntegrityError(
                f"bundle {label}: bundle is not signed but a public key is configured"
            ) from None
        if not stat.S_ISREG(sst.st_mode) or sst.st_size > MAX_SIGNATURE_BYTES:
            raise IntegrityError(f"bundle {label}: {SIGNATURE} is not a small regular file")
        try:
            verify_signature(raw, sig.read_bytes(), public_key)
        except IntegrityError as err:
            raise IntegrityError(f"bundle {label}: {err}") from err
        signed = True
    manifest = parse_manifest(raw, f"bundle {label}")
    check_manifest(manifest, f"bundle {label}")
    label = f"{manifest['name']}@{manifest['version']}"
    try:
        spec = InputSpec.from_dict(manifest["input"])
    except (TypeError, ValueError) as err:
        raise BundleError(f"bundle {label}: manifest field 'input': {err}") from err
    artifacts = _parse_artifacts(manifest, label)
    _check_listing(root, label, listed_files(manifest), max_bytes)
    for a in artifacts:
        _check_file(root, label, a.path, a.sha256, a.bytes, max_member_bytes)
    tv = manifest.get("test_vectors")
    if tv is not None:
        if not isinstance(tv, dict) or "path" not in tv:
            raise BundleError(f"bundle {label}: manifest field 'test_vectors.path' missing")
        rel = _safe_rel(tv["path"], "test_vectors.path")
        for key in ("sha256", "bytes"):
            if key not in tv:
                raise BundleError(f"bundle {label}: manifest field 'test_vectors.{key}' missing")
        _check_file(root, label, rel, tv["sha256"], tv["bytes"], max_member_bytes)
    return Bundle(root=root, manifest=manifest, artifacts=artifacts, input_spec=spec, signed=signed)


def _empty_dir(folder: Path) -> None:
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def load_bundle(
    path: str | os.PathLike[str],
    public_key: KeyLike | None = None,
    extract_to: str | os.PathLike[str] | None = None,
    max_bytes: int = MAX_BUNDLE_BYTES,
    max_member_bytes: int = MAX_MEMBER_BYTES,
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
        return verify_dir(p, public_key, max_bytes, max_member_bytes)
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
        root = extract_tar(p, dest, max_bytes, max_member_bytes)
        bundle = verify_dir(root, public_key, max_bytes, max_member_bytes)
    except BaseException:
        if tmp is not None:
            tmp.cleanup()
        elif created and dest.exists():
            shutil.rmtree(dest, ignore_errors=True)
        elif dest.is_dir():  # it was given empty: leave it empty, nothing half-written
            _empty_dir(dest)
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
