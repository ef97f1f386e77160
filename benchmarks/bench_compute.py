"""Training throughput (images/s) by ISA, width and memory format, measured in one run.

Each setting runs in its own child process, because the ISA switches are read once when
torch loads: ``ATEN_CPU_CAPABILITY=avx2`` (torch's kernel dispatch) and
``ONEDNN_MAX_CPU_ISA=AVX2`` (oneDNN's convolutions) make an AVX-512 machine run the code
paths of an AVX2-only CPU. The children take turns (round-robin, ``--rounds`` rounds, best
kept) so a noisy neighbour hits every setting alike; read the ratios, not the absolutes.

    .venv/bin/python benchmarks/bench_compute.py [--widths 1.0,0.5] [--img 64] [--out DIR]

Writes ``compute.json`` and ``compute.md`` to ``--out`` (default benchmarks/results) and
prints the table. The demo's budget (host/edgectl/demo.py) is computed from these figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ISA = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
}

CHILD = r"""
import json, sys, time, torch
from torch import nn
from edgectl.pipeline.model import build_model
width, img, channels_last, steps, batch, threads = (float(sys.argv[1]), int(sys.argv[2]),
    sys.argv[3] == "1", int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
torch.set_num_threads(threads)
torch.manual_seed(0)
model = build_model(2, width_mult=width)
fmt = torch.channels_last if channels_last else torch.contiguous_format
model = model.to(memory_format=fmt).train()
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
x = torch.randn(batch, 3, img, img).contiguous(memory_format=fmt)
y = torch.randint(0, 2, (batch,))
loss_fn = nn.CrossEntropyLoss()
def step():
    opt.zero_grad(set_to_none=True)
    loss_fn(model(x), y).backward()
    opt.step()
for _ in range(2):
    step()
t0, c0 = time.perf_counter(), time.process_time()
for _ in range(steps):
    step()
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(),
                  "images_per_s": steps * batch / wall,
                  "cpu_ms_per_image": cpu * 1e3 / (steps * batch)}))
"""


def run_child(isa: str, width: float, img: int, channels_last: bool, steps: int, batch: int,
              threads: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY",
                                                            "ONEDNN_MAX_CPU_ISA")}
    env.update(ISA[isa])
    out = subprocess.run([sys.executable, "-c", CHILD, str(width), str(img),
                          "1" if channels_last else "0", str(steps), str(batch), str(threads)],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    from edgectl.pipeline.compute import cpu_model, load_average

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--widths", default="1.0,0.5")
    ap.add_argument("--img", type=int, default=64)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--isa", default="native,avx2")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args(argv)
    widths = [float(w) for w in args.widths.split(",")]
    settings = [(isa, w, cl) for isa in args.isa.split(",") for w in widths for cl in (False, True)]
    best: dict[tuple, dict] = {}
    load_before = load_average()
    for _ in range(args.rounds):
        for s in settings:
            r = run_child(s[0], s[1], args.img, s[2], args.steps, args.batch, args.threads)
            if s not in best or r["images_per_s"] > best[s]["images_per_s"]:
                best[s] = r
    load_after = load_average()
    rows = [{"isa": s[0], "capability": r["capability"], "width": s[1],
             "memory_format": "channels_last" if s[2] else "contiguous",
             "images_per_s": round(r["images_per_s"], 1),
             "cpu_ms_per_image": round(r["cpu_ms_per_image"], 2)} for s, r in best.items()]
    meta = {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": args.threads,
            "img_size": args.img, "batch": args.batch, "steps": args.steps,
            "rounds": args.rounds, "load_before": load_before, "load_after": load_after,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    lines = [
        "# Training throughput: ISA × width × memory format",
        "",
        f"MobileNetV2 training steps (Adam, batch {args.batch}, {args.img}×{args.img}, "
        f"{args.threads} threads), best of {args.rounds} rounds taken in turns, on "
        f"{meta['cpu']} ({meta['cores']} cores), shared machine: load average "
        f"{load_before} before, {load_after} after. `avx2` = this AVX-512 CPU run with "
        "`ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2` (emulates an AVX2-only CPU's "
        "code paths, not its clock or caches).",
        "",
        "| ISA | width | memory format | images/s | CPU ms/image | vs native contiguous |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        ref = best[("native", r["width"], False)]["images_per_s"] if (
            "native", r["width"], False) in best else None
        ratio = f"{r['images_per_s'] / ref:.2f}" if ref else "-"
        lines.append(f"| {r['isa']} ({r['capability']}) | {r['width']} | {r['memory_format']} "
                     f"| {r['images_per_s']} | {r['cpu_ms_per_image']} | {ratio} |")
    text = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compute.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    (args.out / "compute.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
