"""Which runtime and precision is fastest? Batch-1 latency of every artifact, in one run.

    python benchmarks/bench_runtimes.py [--img-size 64] [--threads 1,2] [--runs 200]
        [--rounds 3] [--sparsity 0.5] [--dense-only] [--out benchmarks/results] [--json]

MobileNetV2 (width 1.0, 6 classes, random init: latency depends on shapes, not on the
weights' values), dense and structurally pruned to ``--sparsity`` (Torch-Pruning through
``edgectl.pipeline.pruning``, the ``edgectl prune`` defaults). For each: PyTorch eager, ONNX Runtime
FP32 and INT8 (QDQ, per-channel), LiteRT FP32 and INT8 (ai-edge-quantizer full integer),
all produced by ``edgectl.pipeline.export`` / ``edgectl.pipeline.quantization`` and run through
``edge_common.runtime`` (the code the board runs). Extra ORT INT8 variants (QOperator,
S8S8) show what the format choice costs. Variants are measured in alternating rounds and
each keeps its best-p50 round, so a noisy neighbour hits all of them alike.

Writes ``runtimes.json`` and ``runtimes.md`` (ratios to dense ORT FP32 and to dense
PyTorch eager at the same thread count) to ``--out``. Targets (printed with the verdict,
not a test): pruned + INT8 on its fastest runtime ≤ 0.35× dense ORT FP32 and ≤ 0.05×
dense PyTorch eager (1 thread, batch 1).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from edge_common.runtime import OrtSession, open_session  # noqa: E402
from edge_common.timing import measure_latency  # noqa: E402
from edgectl.pipeline import export as ex  # noqa: E402
from edgectl.pipeline import quantization as q  # noqa: E402
from edgectl.pipeline.metrics import count_params  # noqa: E402
from edgectl.pipeline.model import build_model  # noqa: E402

TARGET_VS_ORT = 0.35
TARGET_VS_EAGER = 0.05


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _ort_int8_variant(fp32: Path, out: Path, calib: np.ndarray, fmt: str, act: str) -> Path:
    """An extra ORT INT8 model (QOperator format or S8S8) for comparison only."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.it = iter(calib[i:i + 1] for i in range(len(calib)))

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.it, None)
            return None if x is None else {ex.INPUT_NAME: x}

    quantize_static(str(fp32), str(out), Reader(),
                    quant_format=QuantFormat.QOperator if fmt == "qop" else QuantFormat.QDQ,
                    per_channel=True, weight_type=QuantType.QInt8,
                    activation_type=QuantType.QInt8 if act == "s8" else QuantType.QUInt8)
    return out


def build_artifacts(name: str, model: torch.nn.Module, img: int, work: Path, calib: np.ndarray,
                    extra: bool) -> dict[str, Path]:
    """All artifacts of one model; FP32 ones pass parity before they are timed."""
    x = np.random.default_rng(1).standard_normal((8, 3, img, img)).astype(np.float32)
    d = work / name
    arts: dict[str, Path] = {}
    t0 = time.perf_counter()
    arts["ort_fp32"] = ex.export_onnx(model, d / "model.fp32.onnx", img)
    ex.check_parity(model, arts["ort_fp32"], "onnx", x)
    arts["ort_int8"] = q.quantize_onnx(arts["ort_fp32"], d / "model.int8.onnx", calib)
    if extra:
        arts["ort_int8_qoperator"] = _ort_int8_variant(arts["ort_fp32"], d / "qop.int8.onnx",
                                                       calib, "qop", "u8")
        arts["ort_int8_s8s8"] = _ort_int8_variant(arts["ort_fp32"], d / "s8s8.int8.onnx",
                                                  calib, "qdq", "s8")
    arts["litert_fp32"] = ex.export_tflite(model, d / "model.fp32.tflite", img)
    ex.check_parity(model, arts["litert_fp32"], "tflite", x)
    arts["litert_int8"] = q.quantize_tflite(arts["litert_fp32"], d / "model.int8.tflite", calib)
    _log(f"{name}: artifacts built in {time.perf_counter() - t0:.0f} s")
    return arts


def _eager(model: torch.nn.Module, x: np.ndarray, threads: int) -> Callable[[], Any]:
    xt = torch.from_numpy(x)

    def run() -> Any:
        torch.set_num_threads(threads)
        with torch.inference_mode():
            return model(xt)

    return run


def measure(models: dict[str, torch.nn.Module], arts: dict[str, dict[str, Path]], img: int,
            threads_list: list[int], runs: int, rounds: int) -> list[dict[str, Any]]:
    x = np.random.default_rng(2).standard_normal((1, 3, img, img)).astype(np.float32)
    fns: dict[tuple[str, str, int], Callable[[], Any]] = {}
    for t in threads_list:
        for name, model in models.items():
            fns[(name, "pytorch_eager", t)] = _eager(model, x, t)
            for key, path in arts[name].items():
                sess = (OrtSession(path, t) if path.suffix == ".onnx"
                        else open_session(path, threads=t))
                fns[(name, key, t)] = lambda s=sess: s.run(x)
    best: dict[tuple[str, str, int], dict[str, float]] = {}
    for r in range(rounds):
        for k, fn in fns.items():
            lat = measure_latency(fn, warmup=10, runs=runs, min_time_s=0.5)
            if k not in best or lat["p50"] < best[k]["p50"]:
                best[k] = lat
        _log(f"round {r + 1}/{rounds} done")
    rows = []
    for (name, rt, t), lat in best.items():
        rows.append({"model": name, "runtime": rt, "threads": t,
                     "p50_ms": lat["p50"], "p95_ms": lat["p95"]})
    for row in rows:
        ort = best[("dense", "ort_fp32", row["threads"])]["p50"]
        eager = best[("dense", "pytorch_eager", row["threads"])]["p50"]
        row["vs_dense_ort_fp32"] = row["p50_ms"] / ort
        row["vs_dense_eager"] = row["p50_ms"] / eager
    return rows


def verdict(rows: list[dict[str, Any]], pruned: str) -> dict[str, Any]:
    cands = [r for r in rows if r["model"] == pruned and r["threads"] == 1
             and r["runtime"] in ("ort_int8", "litert_int8")]
    if not cands:
        return {}
    fastest = min(cands, key=lambda r: r["p50_ms"])
    return {
        "model": pruned, "runtime": fastest["runtime"], "p50_ms": fastest["p50_ms"],
        "vs_dense_ort_fp32": fastest["vs_dense_ort_fp32"],
        "vs_dense_eager": fastest["vs_dense_eager"],
        "target_vs_ort": TARGET_VS_ORT, "target_vs_eager": TARGET_VS_EAGER,
        "passed_vs_ort": fastest["vs_dense_ort_fp32"] <= TARGET_VS_ORT,
        "passed_vs_eager": fastest["vs_dense_eager"] <= TARGET_VS_EAGER,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(0)
    img = args.img_size
    dense = build_model(6).eval()
    models: dict[str, torch.nn.Module] = {"dense": dense}
    pruned_name = ""
    if not args.dense_only:
        from edgectl.pipeline import pruning

        pruned, rep = pruning.prune_model(copy.deepcopy(dense), "structured", "oneshot",
                                          args.sparsity, img_size=img)
        pruned_name = f"structured {args.sparsity:.2f}"
        models[pruned_name] = pruned.eval()
        _log(f"{pruned_name}: params {count_params(dense):,} → {count_params(pruned):,} "
             f"(actual {rep['actual']:.3f})")
    calib = np.random.default_rng(0).standard_normal((32, 3, img, img)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="bench-runtimes-") as work:
        arts = {name: build_artifacts(name.replace(" ", "_"), m, img, Path(work), calib,
                                      args.extra)
                for name, m in models.items()}
        sizes = {name: {k: p.stat().st_size for k, p in a.items()} for name, a in arts.items()}
        rows = measure(models, arts, img, args.threads, args.runs, args.rounds)
    import onnxruntime

    return {
        "what": "batch-1 latency by runtime and precision; random-init weights (latency "
                "depends on shapes only)",
        "model": "mobilenet_v2 width 1.0, 6 classes", "img_size": img, "batch": 1,
        "threads": args.threads, "runs": args.runs, "rounds": args.rounds,
        "params": {name: count_params(m) for name, m in models.items()},
        "sizes_bytes": sizes,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch": torch.__version__, "onnxruntime": onnxruntime.__version__},
        "results": rows,
        "target": verdict(rows, pruned_name) if pruned_name else {},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def markdown(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    lines = [
        "# Runtime latency: PyTorch eager vs ONNX Runtime vs LiteRT, FP32 vs INT8",
        "",
        f"{doc['model']}, {doc['img_size']}×{doc['img_size']}, batch 1, random-init weights, "
        f"p50/p95 of the best of {doc['rounds']} alternating rounds. Machine: {m['cpu']}, "
        f"{m['cores']} cores (shared with other work: compare ratios, not absolute ms), "
        f"torch {m['torch']}, onnxruntime {m['onnxruntime']}. Created {doc['created']}.",
        "",
        "| model | runtime | threads | p50 ms | p95 ms | × dense ORT FP32 | × dense eager |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sorted(doc["results"], key=lambda r: (r["threads"], r["model"] != "dense",
                                                   r["model"], r["p50_ms"])):
        lines.append(f"| {r['model']} | {r['runtime']} | {r['threads']} | {r['p50_ms']:.3f} | "
                     f"{r['p95_ms']:.3f} | {r['vs_dense_ort_fp32']:.2f} | "
                     f"{r['vs_dense_eager']:.3f} |")
    t = doc.get("target") or {}
    if t:
        ok = "PASS" if t["passed_vs_ort"] and t["passed_vs_eager"] else "FAIL"
        lines += [
            "",
            f"Target ({t['model']} + INT8 on its fastest runtime, 1 thread): **{ok}** — "
            f"{t['runtime']} at {t['p50_ms']:.3f} ms = {t['vs_dense_ort_fp32']:.2f}× dense ORT "
            f"FP32 (target ≤ {t['target_vs_ort']}) and {t['vs_dense_eager']:.3f}× dense PyTorch "
            f"eager (target ≤ {t['target_vs_eager']}).",
        ]
    lines += ["", "Sizes (bytes): " + "; ".join(
        f"{name}: " + ", ".join(f"{k} {v:,}" for k, v in s.items())
        for name, s in doc["sizes_bytes"].items())]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--img-size", type=int, default=64)
    ap.add_argument("--threads", type=lambda s: [int(t) for t in s.split(",")], default=[1, 2])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sparsity", type=float, default=0.5)
    ap.add_argument("--dense-only", action="store_true", help="skip the pruned model")
    ap.add_argument("--no-extra", dest="extra", action="store_false",
                    help="skip the extra ORT INT8 variants (QOperator, S8S8)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--json", action="store_true", help="print the JSON document")
    args = ap.parse_args()
    doc = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    from edge_common.fileio import write_bytes_atomic, write_json_atomic

    write_json_atomic(args.out / "runtimes.json", doc)
    md = markdown(doc)
    write_bytes_atomic(args.out / "runtimes.md", md.encode())
    print(json.dumps(doc, indent=2) if args.json else md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
