"""Write a model bundle: artifacts, test vectors, manifest, signature — all or nothing.

Everything is written into a temporary directory beside ``out_dir``, verified with the
same code the board runs (:func:`edge_common.bundle.load_bundle` plus a test-vector
replay) and only then renamed into place, so a failure leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edge_common import bundle as B
from edge_common.errors import BundleError
from edge_common.preprocess import InputSpec
from edge_common.runtime import open_session

DEFAULT_VECTORS = 8


def default_tolerance(precision: str, outputs: np.ndarray) -> dict[str, Any]:
    """Tight for FP32 (runtimes differ by rounding only); looser for INT8, whose kernels
    differ between CPUs by a few quantization steps. Scaled to the logits' range."""
    span = float(np.max(outputs) - np.min(outputs)) if outputs.size else 1.0
    span = max(span, 1.0)
    if precision == "int8":
        return {"max_abs": round(0.05 * span, 6), "top1": True}
    return {"max_abs": round(1e-3 * span, 6), "top1": True}


def _jsonable(obj: Any) -> Any:
    """Round-trip through JSON so numpy scalars and paths become plain values."""

    def default(o: Any) -> Any:
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, Path):
            return str(o)
        raise TypeError(f"not JSON-serialisable: {type(o).__name__}")

    return json.loads(json.dumps(obj, default=default))


def _pick_vectors(
    outputs: dict[str, np.ndarray], tols: dict[str, dict[str, Any]], n: int
) -> np.ndarray:
    """Indices of the ``n`` inputs whose top-1 is clearest for every artifact.

    A vector whose top-1 margin is below twice an artifact's ``max_abs`` could change
    class within tolerance; preferring clear ones keeps the board's top-1 check honest.
    """
    rows = next(iter(outputs.values())).shape[0]
    score = np.full(rows, np.inf)
    for path, y in outputs.items():
        top2 = np.sort(y, axis=-1)[:, -2:]
        margin = (top2[:, 1] - top2[:, 0]) / (2.0 * max(float(tols[path]["max_abs"]), 1e-12))
        score = np.minimum(score, margin)
    order = np.argsort(-score, kind="stable")
    return np.sort(order[: min(n, rows)])


def _artifact_name(fmt: str, precision: str) -> str:
    return f"model.{precision}.{fmt}"


def write_bundle(
    out_dir: str | os.PathLike[str],
    *,
    name: str,
    version: str,
    labels: list[str],
    reject_labels: list[str],
    input_spec: InputSpec,
    artifacts: list[dict[str, Any]],
    metrics: dict[str, Any],
    baseline: dict[str, Any],
    provenance: dict[str, Any],
    min_accuracy: float | None,
    test_inputs: np.ndarray,
    private_key_pem: bytes | str | os.PathLike[str] | None = None,
    deployable: bool = True,
    default_precision: str | None = None,
    vectors: int = DEFAULT_VECTORS,
    deadline: dict[str, Any] | None = None,
) -> Path:
    """Write a bundle directory at ``out_dir`` and return its path.

    ``artifacts``: dicts with ``path`` (source file), ``format``, ``precision``,
    ``metrics`` and optionally ``tolerance`` (default: :func:`default_tolerance`).
    ``test_inputs``: preprocessed candidates (N×…); the ``vectors`` clearest are kept.
    An existing bundle at ``out_dir`` is replaced; any other non-empty folder is refused.
    ``deadline``: the latency budget the model was built for (docs/bundle-format.md).
    """
    out = Path(out_dir)
    clobber = out.exists() and (
        not out.is_dir() or (any(out.iterdir()) and not (out / B.MANIFEST).is_file())
    )
    if clobber:
        raise BundleError(f"refusing to overwrite {out}: it exists and is not a bundle")
    if not artifacts:
        raise BundleError("a bundle needs at least one artifact")
    x = np.ascontiguousarray(test_inputs, dtype=np.float32)
    if x.ndim != 4 or x.shape[0] == 0:
        raise BundleError(f"test inputs must be a non-empty N×C×H×W batch, got shape {x.shape}")
    key = B.load_private_key(private_key_pem) if private_key_pem is not None else None

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        entries: list[dict[str, Any]] = []
        outputs: dict[str, np.ndarray] = {}
        tols: dict[str, dict[str, Any]] = {}
        for spec in artifacts:
            fmt, precision = str(spec["format"]), str(spec["precision"])
            if fmt not in B.FORMATS or precision not in B.PRECISIONS:
                raise BundleError(f"unsupported artifact {fmt}/{precision}")
            src = Path(spec["path"])
            if not src.is_file():
                raise BundleError(f"artifact file not found: {src}")
            rel = _artifact_name(fmt, precision)
            if rel in outputs:
                raise BundleError(f"two {fmt}/{precision} artifacts given")
            shutil.copyfile(src, tmp / rel)
            y = open_session(tmp / rel, fmt).run(x)
            outputs[rel] = y
            tols[rel] = dict(spec.get("tolerance") or default_tolerance(precision, y))
            entries.append({
                "path": rel, "format": fmt, "precision": precision,
                "sha256": B.sha256_file(tmp / rel), "bytes": (tmp / rel).stat().st_size,
                "metrics": _jsonable(spec.get("metrics") or {}), "tolerance": tols[rel],
            })
        keep = _pick_vectors(outputs, tols, vectors)
        arrays = {"x": x[keep]}
        arrays.update({f"expected/{rel}": y[keep] for rel, y in outputs.items()})
        np.savez(tmp / B.TEST_VECTORS, **arrays)
        manifest: dict[str, Any] = {
            "schema_version": B.SCHEMA_VERSION,
            "name": name,
            "version": version,
            "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "labels": list(labels),
            "reject_labels": list(reject_labels),
            "input": input_spec.to_dict(),
            "artifacts": entries,
            "metrics": _jsonable(metrics),
            "baseline": _jsonable(baseline),
            "provenance": _jsonable({"host": socket.gethostname(), **provenance}),
            "min_accuracy": min_accuracy,
            "deployable": bool(deployable),
            "test_vectors": {
                "path": B.TEST_VECTORS, "count": int(len(keep)),
                "sha256": B.sha256_file(tmp / B.TEST_VECTORS),
                "bytes": (tmp / B.TEST_VECTORS).stat().st_size,
            },
        }
        if default_precision:
            manifest["default_precision"] = default_precision
        if deadline:
            manifest["deadline"] = _jsonable(deadline)
        B.write_manifest(tmp, manifest)
        public = None
        if private_key_pem is not None and key is not None:  # both or neither (line 115)
            from cryptography.hazmat.primitives import serialization

            B.sign_manifest(tmp, private_key_pem)
            public = key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        # Verify with the board's own code before anything becomes visible.
        written = B.verify_dir(tmp, public)
        for art in written.artifacts:
            written.check_test_vectors(open_session(tmp / art.path, art.format), art)
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an old bundle there is moved aside first, then removed."""
    old: Path | None = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except OSError:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    os.chmod(out, 0o755)
