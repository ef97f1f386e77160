"""Will pruning make MobileNetV2 faster? Dense vs pruned latency, measured in one run.

    python benchmarks/bench_pruning.py [--sparsity 0.5] [--img-size 64] [--runs 200]
        [--rounds 3] [--out benchmarks/results] [--json]

Default MobileNetV2 (width 1.0, 6 classes, random init: latency does not depend on the
weights' values, only on shapes), 64×64, batch 1, one thread. Variants at the same target:

- structured, uniform per-layer channel ratio, ``round_to`` 8 (the ``edgectl prune``
  default), ``round_to`` 16, no rounding; and global channel ranking with ``round_to`` 8;
- unstructured (global L1): the same dense shapes with zeros in them.

Each variant is measured against the dense model in ONNX Runtime FP32 (ORT_ENABLE_ALL,
through ``edge_common.runtime``) and PyTorch eager, alternating dense and pruned for
``--rounds`` rounds and keeping each one's best p50, so a noisy neighbour hits both.
Writes ``pruning.json`` and ``pruning.md`` (a table) to ``--out``. The acceptance bar
(structured 0.5: ORT latency ≤ 0.6× dense) is printed with the verdict; it is not a test.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from edgectl.pipeline import pruning, speed  # noqa: E402
from edgectl.pipeline.metrics import count_params  # noqa: E402
from edgectl.pipeline.model import build_model  # noqa: E402

VARIANTS = [
    # name, method, round_to, global ranking
    ("structured uniform round_to=8 (default)", "structured", 8, False),
    ("structured uniform round_to=16", "structured", 16, False),
    ("structured uniform no rounding", "structured", None, False),
    ("structured global round_to=8", "structured", 8, True),
    ("unstructured global L1", "unstructured", None, False),
]
BAR = 0.6


def run(sparsity: float, img: int, runs: int, rounds: int) -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    dense = build_model(6).eval()
    rows = []
    for name, method, round_to, global_ in VARIANTS:
        t0 = time.perf_counter()
        pruned, rep = pruning.prune_model(
            copy.deepcopy(dense), method, "oneshot", sparsity, img_size=img,
            round_to=round_to, global_pruning=global_,
        )
        prune_s = time.perf_counter() - t0
        sp = speed.measure_speed(dense, pruned, img, method, threads=1, runs=runs,
                                   min_time_s=1.0, rounds=rounds)
        rows.append({
            "variant": name, "method": method, "round_to": round_to, "global": global_,
            "target": sparsity, "actual": rep["actual"], "params": count_params(pruned),
            "channel_ratio": rep["channel_ratio"], "macs_reduction": rep["macs_reduction"],
            "prune_s": prune_s, **{k: sp[k] for k in ("onnxruntime_fp32", "pytorch_eager", "size")},
            "note": sp["note"],
        })
        o, e = sp["onnxruntime_fp32"], sp["pytorch_eager"]
        print(f"{name:42} actual {rep['actual']:.3f}  ORT ×{o['ratio']:.2f} "
              f"({o['dense_ms']:.3f} → {o['pruned_ms']:.3f} ms)  eager ×{e['ratio']:.2f}",
              file=sys.stderr, flush=True)
    default = rows[0]
    return {
        "model": "mobilenet_v2 width 1.0, 6 classes", "img_size": img, "batch": 1, "threads": 1,
        "sparsity": sparsity, "runs": runs, "rounds": rounds, "dense_params": count_params(dense),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch": torch.__version__, "onnxruntime": _ort_version()},
        "results": rows,
        "acceptance": {"bar": BAR, "structured_default_ort_ratio":
                       default["onnxruntime_fp32"]["ratio"],
                       "passed": default["onnxruntime_fp32"]["ratio"] <= BAR},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def markdown(doc: dict) -> str:
    lines = [
        f"# Pruning latency: dense vs pruned MobileNetV2 (target {doc['sparsity']:.2f})",
        "",
        f"{doc['model']}, {doc['img_size']}×{doc['img_size']}, batch 1, 1 thread, p50 (best of "
        f"{doc['rounds']} alternating rounds). Machine: {doc['machine']['cpu']}, "
        f"{doc['machine']['cores']} cores (shared), torch {doc['machine']['torch']}, "
        f"onnxruntime {doc['machine']['onnxruntime']}. Created {doc['created']}.",
        "",
        "| variant | reached | params | channels removed | MACs removed | ORT dense ms | "
        "ORT pruned ms | ORT ratio | eager dense ms | eager pruned ms | eager ratio | "
        "ONNX gzip KB dense → pruned |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["results"]:
        o, e, s = r["onnxruntime_fp32"], r["pytorch_eager"], r["size"]
        lines.append(
            f"| {r['variant']} | {r['actual']:.3f} | {r['params']:,} | {r['channel_ratio']:.1%} "
            f"| {r['macs_reduction']:.1%} | {o['dense_ms']:.3f} | {o['pruned_ms']:.3f} "
            f"| **{o['ratio']:.2f}** | {e['dense_ms']:.3f} | {e['pruned_ms']:.3f} "
            f"| {e['ratio']:.2f} | {s['dense']['onnx_gzip_bytes'] / 1024:.0f} → "
            f"{s['pruned']['onnx_gzip_bytes'] / 1024:.0f} |"
        )
    acc = doc["acceptance"]
    verdict = "PASS" if acc["passed"] else "FAIL"
    lines += [
        "",
        f"Acceptance (structured {doc['sparsity']:.2f}, default settings, ORT FP32 ≤ "
        f"{acc['bar']}× dense): **{verdict}** at {acc['structured_default_ort_ratio']:.2f}×.",
        "",
        "Unstructured: " + doc["results"][-1]["note"] + ".",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sparsity", type=float, default=0.5)
    ap.add_argument("--img-size", type=int, default=64)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--json", action="store_true", help="print the JSON document")
    args = ap.parse_args()
    doc = run(args.sparsity, args.img_size, args.runs, args.rounds)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pruning.json").write_text(json.dumps(doc, indent=2) + "\n")
    md = markdown(doc)
    (args.out / "pruning.md").write_text(md)
    print(json.dumps(doc, indent=2) if args.json else md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
