"""arm64 smoke figures: `edge-agent bench` in the emulated bookworm arm64 root, as a table.

    python benchmarks/bench_arm64.py --bench BENCH.json --probe PROBE.json [--out DIR]

`make test-arm64` runs this with the JSON its bench test measured inside the root
(tests/arm64): per-artifact batch-1 latency of the tiny test bundle (MobileNetV2 x0.25,
32x32) under qemu-user. Emulation is not a board: the figures only show that each runtime
runs on aarch64 and roughly what emulation costs; use `edgectl bench --device` on a real
board for numbers that mean anything. Writes ``arm64.json`` and ``arm64.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

from edge_agent import machine


def render(bench: dict, probe: dict, host_cpu: str, host_cores: int | None) -> str:
    lines = [
        "# arm64 userland under emulation (smoke figure, not a board)",
        "",
        "`edge-agent bench` inside a Debian bookworm arm64 root run with qemu-user "
        "(binfmt_misc) on an x86_64 host, by `make test-arm64` (tests/arm64). **Emulation is "
        "not a board**: these figures only show that every artifact loads, replays its test "
        "vectors and runs on aarch64; they say nothing about a Raspberry Pi's speed.",
        "",
        f"- host CPU: {host_cpu} ({host_cores} cores, {platform.machine()}, shared with "
        "other work)",
        f"- root: {probe['machine']}, Python {probe['python']}, numpy {probe['numpy']} "
        f"(Debian), onnxruntime {probe['onnxruntime']}, ai-edge-litert "
        f"{probe['ai_edge_litert']}, ml_dtypes {probe['ml_dtypes']}",
        f"- bundle {bench['bundle']['name']}@{bench['bundle']['version']}: MobileNetV2 x0.25, "
        f"32x32, batch 1; created {bench['created']}",
        "",
        "| artifact | threads | load ms | p50 ms | p95 ms | fps "
        "| top-1 agreement with recorded outputs |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in bench["results"]:
        if "error" in r:
            lines.append(f"| {r['artifact']} | {r['threads']} | error: {r['error']} |||||")
            continue
        lat = r["latency_ms"]
        acc = "-" if r.get("agreement") is None else f"{r['agreement']:.3f}"
        lines.append(
            f"| {r['artifact']} | {r['threads']} | {r['load_ms']:.0f} | {lat['p50']:.2f} | "
            f"{lat['p95']:.2f} | {r['throughput_fps']:.1f} | {acc} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bench", required=True, type=Path, help="edge-agent bench --json output")
    p.add_argument("--probe", required=True, type=Path, help="versions seen in the root (JSON)")
    p.add_argument("--out", default=Path("benchmarks/results"), type=Path)
    args = p.parse_args(argv)
    try:
        bench = json.loads(args.bench.read_text())
        probe = json.loads(args.probe.read_text())
    except (OSError, ValueError) as err:
        print(f"bench_arm64: cannot read the inputs: {err}", file=sys.stderr)
        return 1
    host = machine.describe()
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"host": {"cpu": host["cpu"], "cores": host["cores"]}, "root": probe,
              "bench": bench}
    (args.out / "arm64.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    (args.out / "arm64.md").write_text(render(bench, probe, host["cpu"], host["cores"]))
    print(f"wrote {args.out / 'arm64.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
