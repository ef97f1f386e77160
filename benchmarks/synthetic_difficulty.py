"""Sweep the synthetic set's difficulty with the default training recipe (tuning aid).

    .venv/bin/python benchmarks/synthetic_difficulty.py 0.3 0.5 0.7 [--epochs 8] [--train-size 4000]

Prints one JSON line per difficulty: test accuracy after each epoch, wall time, images/s.
Pick ``edge_common.synthetic.DEFAULT_DIFFICULTY`` so the default run lands in 90–97 %.
Run it on a quiet machine: the timings are meaningless next to other jobs.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from edgectl.pipeline.data import DataConfig, load_datasets
from edgectl.pipeline.model import build_model
from edgectl.pipeline.training import DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS, DEFAULT_LR, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("difficulty", type=float, nargs="+")
    ap.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS)
    ap.add_argument("--train-size", type=int, default=4000)
    ap.add_argument("--test-size", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    ap.add_argument("--lr", type=float, default=DEFAULT_LR)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    for d in args.difficulty:
        t0 = time.perf_counter()
        cfg = DataConfig(
            train_size=args.train_size, test_size=args.test_size, seed=args.seed, difficulty=d
        )
        ds = load_datasets(cfg)
        torch.manual_seed(args.seed)
        model = build_model(len(ds.labels))
        h = train(
            model, ds, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed
        )
        print(
            json.dumps(
                {
                    "difficulty": d,
                    "test_accuracy": [round(r["test_accuracy"], 4) for r in h["epochs"]],
                    "seconds": round(time.perf_counter() - t0, 1),
                    "images_per_s": round(h["images_per_s"], 1),
                    "threads": torch.get_num_threads(),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
