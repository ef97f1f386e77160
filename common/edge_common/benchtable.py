"""The benchmark table: one row per artifact × thread count, the same on board and host.

``edge-agent bench`` fills the fields (:func:`annotate`) and prints :func:`format_table`;
``edgectl bench`` prints the same table for every device it ran on, and ``--json`` carries
the same fields. Columns (Ultralytics-style): format, size (MB), sparsity, accuracy on the
test set (measured by ``edgectl build`` on the host, recorded per artifact in the manifest;
the file is the same, sha256-checked), agreement with the bundle's test vectors on this
machine (top-1 share and max abs diff against the recorded outputs: proof the figure
carries over), p50/p95 ms (``edge_common.timing.measure_latency``), images/s, and the
speed relative to the bundle's FP32 ONNX on ONNX Runtime at the same thread count, measured
in the same run (×2.00 = twice as fast). For an unpruned or unstructured-pruned bundle that
reference is the dense FP32 model: ORT runs zeroed weights as dense ones.
"""

from __future__ import annotations

from typing import Any

REFERENCE = ("onnx", "fp32")

# The table's columns: (header, field, width, format); fields are keys of a result row.
COLUMNS = (
    ("format", "format", 8, "s"), ("prec", "precision", 6, "s"), ("thr", "threads", 5, "d"),
    ("size MB", "size_mb", 9, ".2f"), ("sparsity", "sparsity", 10, ".3f"),
    ("accuracy", "accuracy", 10, ".4f"), ("agree", "agreement", 7, ".3f"),
    ("max diff", "max_abs_diff", 10, ".2g"), ("p50 ms", "p50_ms", 9, ".3f"),
    ("p95 ms", "p95_ms", 9, ".3f"), ("img/s", "throughput_fps", 9, ".0f"),
    ("vs ORT FP32", "vs_fp32_ort", 13, ".2f"),
)
FIELDS = ("artifact",) + tuple(c[1] for c in COLUMNS)


def pruning_of(manifest: dict[str, Any]) -> dict[str, Any]:
    """``{"method", "target", "sparsity"}`` of the bundle's model, from its manifest."""
    prov = (manifest.get("provenance") or {}).get("pruning") or {}
    metrics = manifest.get("metrics") or {}
    sparsity = metrics.get("sparsity_pruning", metrics.get("sparsity"))
    if sparsity is None:
        sparsity = prov.get("actual")
    return {"method": prov.get("method") or "none", "target": prov.get("target"),
            "sparsity": sparsity}


def annotate(results: list[dict[str, Any]], manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Add the table's fields to ``edge-agent bench`` result rows (in place; returns them):
    size, sparsity and test-set accuracy from the manifest; p50/p95 flattened; the speed
    relative to the FP32 ONNX row of the same thread count."""
    listed = {a.get("path"): a for a in manifest.get("artifacts") or [] if isinstance(a, dict)}
    sparsity = pruning_of(manifest)["sparsity"]
    for r in results:
        art = listed.get(r.get("artifact")) or {}
        nbytes = art.get("bytes")
        r["size_mb"] = round(nbytes / 1e6, 6) if isinstance(nbytes, (int, float)) else None
        r["sparsity"] = sparsity
        acc = (art.get("metrics") or {}).get("accuracy")
        r["accuracy"] = float(acc) if isinstance(acc, (int, float)) else None
        lat = r.get("latency_ms") or {}
        r["p50_ms"], r["p95_ms"] = lat.get("p50"), lat.get("p95")
    ref = {r["threads"]: r["p50_ms"] for r in results
           if (r.get("format"), r.get("precision")) == REFERENCE and r.get("p50_ms")}
    for r in results:
        base = ref.get(r.get("threads"))
        r["vs_fp32_ort"] = round(base / r["p50_ms"], 3) if base and r.get("p50_ms") else None
    return results


def notes(report: dict[str, Any]) -> list[str]:
    """What the reader must know to read the table right (pruning that brings no speed)."""
    p = report.get("pruning") or {}
    if p.get("method") != "unstructured":
        return []
    s = p.get("sparsity")
    share = f" ({s:.0%} of the weights are zero)" if isinstance(s, (int, float)) else ""
    return [f"unstructured pruning{share} brings no speed on this runtime: ONNX Runtime and "
            "LiteRT run dense CPU kernels, so zeroed weights cost as much as any other (the "
            "gain is compressed size). For a smaller and faster model use structured pruning: "
            "edgectl build --prune structured --sparsity 0.5"]


def _cell(value: Any, fmt: str, width: int) -> str:
    if isinstance(value, bool) or value is None:
        return f"{'-':>{width}}"
    if fmt == "s":
        return f"{value!s:>{width}}"
    if isinstance(value, (int, float)):
        text = format(value, fmt)
        if fmt == ".2f" and width == 13:  # the speed ratio
            text = f"×{text}"
        return f"{text:>{width}}"
    return f"{'-':>{width}}"


def format_table(report: dict[str, Any], host: str | None = None) -> str:
    """One device's run for people: a heading (device, CPU, bundle, pruning), the table,
    then :func:`notes`. Old stored runs without the new fields show ``-``."""
    m = report.get("machine") or {}
    b = report.get("bundle") or {}
    name = host or report.get("device", "?")
    if host and report.get("device") and report["device"] != host:
        name += f" ({report['device']})"
    p = report.get("pruning") or {}
    pruned = ("not pruned" if p.get("method") in (None, "none")
              else f"pruned {p['method']}" + (f" to {p['target']:.2f}"
                                               if isinstance(p.get("target"), float) else ""))
    lines = [
        f"{name}: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('arch', '?')}; "
        f"bundle {b.get('name', '?')}@{b.get('version', '?')}, {pruned}",
        f"{'artifact':<20}" + "".join(f"{h:>{w}}" for h, _, w, _ in COLUMNS),
    ]
    for r in report.get("results", []):
        head = f"{r.get('artifact', '?'):<20}"
        if "error" in r:
            lines.append(head + f"{r.get('format', '?'):>8}{r.get('precision', '?'):>6}"
                         f"{r.get('threads', '?')!s:>5}  {r['error']}")
            continue
        lines.append(head + "".join(_cell(r.get(f), fmt, w) for _, f, w, fmt in COLUMNS))
    lines += ["accuracy: test set, measured at build; agree / max diff: this machine's outputs "
              "vs the bundle's test vectors; vs ORT FP32: speed relative to the FP32 ONNX row"]
    lines += [f"note: {n}" for n in notes(report)]
    return "\n".join(lines)
