"""The table ``edgectl bench`` prints (and its ``--json`` rows): one row per artifact ×
thread count, Ultralytics-style, from an ``edge-agent bench`` report and the bundle's manifest.

Columns: format, precision, threads, size (MB), sparsity, accuracy on the test set, top-1
agreement with the outputs recorded at build, p50/p95 ms, images/s and the ratio of p50 to
the dense FP32 ONNX Runtime model measured in the same run on the same device.

- Latency, images/s and agreement come from the board (the agent's own benchmark).
- Accuracy and sparsity come from the manifest: accuracy was measured at build on the
  whole test set, by the artifact in its own runtime; the board has no test set, and its
  agreement column says whether the artifact still computes what it computed then.
- The dense reference is a model file measured beside the artifacts (``--reference``); for
  a bundle built with ``--prune none`` its own FP32 ONNX is the dense model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

FIELDS = ("artifact", "format", "precision", "threads", "size_mb", "sparsity", "accuracy",
          "agreement", "p50_ms", "p95_ms", "images_per_s", "vs_dense_ort_fp32")
NO_SPEED = 0.9  # unstructured FP32 at or above this ratio of dense: no speed to speak of


def _pruning(manifest: dict[str, Any]) -> dict[str, Any]:
    return ((manifest.get("provenance") or {}).get("pruning") or {}) if manifest else {}


def _dense_key(manifest: dict[str, Any], results: Sequence[dict[str, Any]]) -> str | None:
    """The row that is the dense FP32 ORT model: the reference, or a dense bundle's FP32
    ONNX; None when the run has neither."""
    for r in results:
        if r.get("reference") and "error" not in r:
            return str(r["artifact"])
    method = _pruning(manifest).get("method")
    if method in (None, "none") and any(
        r.get("artifact") == "model.fp32.onnx" and "error" not in r for r in results
    ):
        return "model.fp32.onnx"
    return None


def bench_rows(report: dict[str, Any], manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The table's rows (``FIELDS``, plus ``error`` on a row that could not run)."""
    results = report.get("results") or []
    arts = {a.get("path"): a for a in manifest.get("artifacts") or []}
    sparsity = (manifest.get("metrics") or {}).get("sparsity_pruning")
    dense = _dense_key(manifest, results)
    dense_p50 = {r["threads"]: (r.get("latency_ms") or {}).get("p50")
                 for r in results if r.get("artifact") == dense and "error" not in r}
    rows = []
    for r in results:
        art = arts.get(r.get("artifact")) or {}
        ref = bool(r.get("reference"))
        lat = r.get("latency_ms") or {}
        nbytes = r.get("bytes") or art.get("bytes")
        base = dense_p50.get(r.get("threads"))
        row = {
            "artifact": r.get("artifact"),
            "format": r.get("format"),
            "precision": r.get("precision"),
            "threads": r.get("threads"),
            "size_mb": round(nbytes / 1e6, 3) if nbytes else None,
            "sparsity": 0.0 if ref else sparsity,
            "accuracy": None if ref else (art.get("metrics") or {}).get("accuracy"),
            "agreement": r.get("agreement"),
            "p50_ms": lat.get("p50"),
            "p95_ms": lat.get("p95"),
            "images_per_s": r.get("throughput_fps"),
            "vs_dense_ort_fp32": (round(lat["p50"] / base, 3)
                                  if base and lat.get("p50") else None),
            "reference": ref,
        }
        if "error" in r:
            row["error"] = r["error"]
        rows.append(row)
    return rows


def notes(rows: Sequence[dict[str, Any]], manifest: dict[str, Any]) -> list[str]:
    """What a person should know about the numbers: what the ratio is against, and when
    unstructured sparsity bought no speed on this runtime (and what would)."""
    out = []
    if not any(r.get("vs_dense_ort_fp32") for r in rows):
        out.append("vs dense: no dense FP32 model in this run (pass --reference DENSE.onnx, or "
                   "bench a bundle from `edgectl build` whose OUT/baseline/ is beside it)")
    p = _pruning(manifest)
    if p.get("method") == "unstructured":
        fp32 = [r["vs_dense_ort_fp32"] for r in rows
                if r.get("artifact") == "model.fp32.onnx" and r.get("vs_dense_ort_fp32")]
        if fp32 and min(fp32) >= NO_SPEED:
            out.append(
                f"unstructured sparsity {p.get('actual', p.get('target', 0)):.2f} brings no "
                f"speed on ONNX Runtime ({min(fp32):.2f}x dense): dense kernels still multiply "
                "the zeros (the gain is compressed size). For speed: `edgectl build --prune "
                "structured` removes channels, and INT8 quantization adds to it.")
    out.append("accuracy: on the test set at build, by the artifact in its runtime (manifest); "
               "agree: top-1 agreement on the board with the outputs recorded at build")
    return out


def _f(v: Any, spec: str) -> str:
    return format(v, spec) if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"


def _name(row: dict[str, Any]) -> str:
    return str(row["artifact"]) + (" (dense ref)" if row.get("reference") else "")


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    width = max([22] + [len(_name(r)) + 1 for r in rows])
    head = (f"{'artifact':<{width}}{'format':>7}{'prec':>5}{'thr':>4}{'size MB':>9}{'sparsity':>9}"
            f"{'accuracy':>9}{'agree':>7}{'p50 ms':>8}{'p95 ms':>8}{'img/s':>8}{'vs dense':>9}")
    lines = [head]
    for r in rows:
        name = _name(r)
        if "error" in r:
            lines.append(f"{name:<{width}}{r['format'] or '-':>7}{r['precision'] or '-':>5}"
                         f"{r['threads']!s:>4}  {r['error']}")
            continue
        lines.append(
            f"{name:<{width}}{r['format'] or '-':>7}{r['precision'] or '-':>5}{r['threads']!s:>4}"
            f"{_f(r['size_mb'], '.2f'):>9}{_f(r['sparsity'], '.2f'):>9}"
            f"{_f(r['accuracy'], '.2%'):>9}{_f(r['agreement'], '.3f'):>7}"
            f"{_f(r['p50_ms'], '.2f'):>8}{_f(r['p95_ms'], '.2f'):>8}"
            f"{_f(r['images_per_s'], '.0f'):>8}"
            f"{(_f(r['vs_dense_ort_fp32'], '.2f') + 'x') if r['vs_dense_ort_fp32'] else '-':>9}"
        )
    return "\n".join(lines)


def dense_reference(bundle: Path, out_dir: Path) -> Path | None:
    """The dense FP32 ONNX to measure beside a bundle written by ``edgectl build``: its
    baseline checkpoint (``OUT/baseline/model.pt`` beside ``OUT/bundle``) exported with the
    pipeline's exporter into ``out_dir``. None when there is no such baseline."""
    root = bundle.parent if bundle.is_dir() or bundle.suffix == ".tar" else None
    ckpt = root / "baseline" / "model.pt" if root else None
    if ckpt is None or not ckpt.is_file():
        return None
    from edgectl.pipeline.checkpoint import load_checkpoint
    from edgectl.pipeline.export import export_onnx

    model, meta = load_checkpoint(ckpt)
    size = int((meta.get("input") or {}).get("size") or 64)
    return export_onnx(model, out_dir / "dense.fp32.onnx", size)
