"""How much of "search − uniform" is the long fine-tune's seed? One run on this machine.

    python benchmarks/bench_finetune_spread.py [--from benchmarks/results/deadline.json]
        [--seeds 0,1,2] [--budget 0.3] [--out benchmarks/results]

``bench_deadline.py`` builds each model once, so each accuracy it compares is one draw of
the long fine-tune. This takes the models of one ``bench_deadline`` run — each searched
model as its search left it (the last step's checkpoint in the run's ``search-state``,
before the long fine-tune) and each built uniform model (the dense baseline pruned
one-shot at its S, as the build does) — and gives every one the same long fine-tune
(``fine_tune_hook``, the run's epochs, the whole training set) with each seed, then the
test accuracy. Latency is not measured here (weights do not change it: the run's figures
stand). Writes ``finetune-spread.json`` and ``finetune-spread.md``; nothing is asserted.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "2")

from edge_common.fileio import write_json_atomic  # noqa: E402
from edgectl.cli.options import default_cache_dir  # noqa: E402
from edgectl.pipeline import pruning  # noqa: E402
from edgectl.pipeline.build import BuildConfig, run_build  # noqa: E402
from edgectl.pipeline.checkpoint import load_checkpoint  # noqa: E402
from edgectl.pipeline.compute import banner  # noqa: E402
from edgectl.pipeline.data import DataConfig, load_datasets  # noqa: E402
from edgectl.pipeline.training import accuracy, fine_tune_hook  # noqa: E402


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def models(run: dict[str, Any], dense: Any,
           budget: float | None) -> list[tuple[str, float | None, Any]]:
    """(label, p95 ms from the run, the model before its long fine-tune); with ``budget``
    (× dense) only the search at that budget and the uniform models meeting it."""
    out = []
    state = Path(run["work"]) / "search-state"
    d = run["dense_ms"]
    for s in run["search"]:
        if "error" in s or not s.get("steps"):
            continue
        if budget is not None and abs(s["budget_ms"] / d - budget) > 1e-3:
            continue
        ckpt = state / f"step-{s['steps']:03d}.pt"
        model, _ = load_checkpoint(ckpt)
        out.append((f"search {s['budget_ms'] / d:.2f}×", s["p95_ms"], model))
    for u in run["uniform"]["built"]:
        if budget is not None and u["p95_ms"] > budget * d:
            continue
        pruned, _ = pruning.prune_model(copy.deepcopy(dense), "structured", "oneshot",
                                        u["sparsity"], img_size=run["img_size"], round_to=8)
        out.append((f"uniform S={u['sparsity']:.2f}", u["p95_ms"], pruned))
    return out


def markdown(doc: dict[str, Any]) -> str:
    lines = ["# The long fine-tune's spread (issue 21)", "",
             f"One run, {doc['date']}. {doc['banner']}", "",
             f"The models of `{doc['source']}` ({doc['source_date']}), each given the same "
             f"{doc['epochs']}-epoch fine-tune on the whole training set with seeds "
             f"{', '.join(map(str, doc['seeds']))}; test accuracy. Latency: the source run's "
             "p95 (weights do not change it).", "",
             "| model | p95 ms | " + " | ".join(f"seed {s}" for s in doc["seeds"])
             + " | mean | spread (max − min) |",
             "|---|---|" + "---|" * len(doc["seeds"]) + "---|---|"]
    for r in doc["rows"]:
        accs = r["accuracy"]
        lines.append(f"| {r['model']} | {r['p95_ms']:.3f} | "
                     + " | ".join(f"{a:.2%}" for a in accs)
                     + f" | {statistics.mean(accs):.2%} | "
                       f"{100 * (max(accs) - min(accs)):.1f} pt |")
    lines += ["", f"Wall: {doc['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--from", dest="source", type=Path,
                    default=Path("benchmarks/results/deadline.json"))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--budget", type=float, default=None,
                    help="only this budget (× dense, e.g. 0.3): its search and the uniform "
                         "models that meet it")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    run = json.loads(args.source.read_text())
    seeds = [int(s) for s in args.seeds.split(",")]
    info = banner("cpu")
    log(info)
    data = DataConfig.from_spec("synthetic", img_size=run["img_size"], seed=0)
    base = run_build(BuildConfig(data=data, out=Path(run["work"]) / "dense", prune="none",
                                 quantize="none", formats=("onnx",), epochs=run["epochs"],
                                 progress=False, cache_dir=default_cache_dir()), echo=log)
    datasets = load_datasets(data)
    rows = []
    for label, ms, model in models(run, base.baseline.model, args.budget):
        accs = []
        for seed in seeds:
            m = copy.deepcopy(model)
            fine_tune_hook(datasets, run["finetune_epochs"], seed=seed, progress=False)(m, None)
            accs.append(accuracy(m, datasets.test))
            log(f"{label} seed {seed}: {accs[-1]:.2%}")
        rows.append({"model": label, "p95_ms": ms, "accuracy": accs})
    doc = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "banner": info,
           "source": str(args.source), "source_date": run["date"], "seeds": seeds,
           "epochs": run["finetune_epochs"], "rows": rows,
           "seconds": time.perf_counter() - t0}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "finetune-spread.json", doc)
    (args.out / "finetune-spread.md").write_text(markdown(doc))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
