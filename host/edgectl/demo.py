"""`make demo`: the whole system on one laptop, offline, in a few minutes.

1. ``edgectl build`` — baseline, structured pruning, fine-tune, INT8, ONNX + TFLite, signed bundle
2. ``edgectl serve`` — the host collector on 127.0.0.1
3. ``edgectl fleet add-device`` — a token for the simulated station
4. ``edge-agent run`` — synthetic camera, interval trigger, mock GPIO pins, syncing to the collector
5. ``edgectl fleet status`` — what the host sees
6. ``edgectl bench --device local`` — the agent's own benchmark of every artifact
7. a short report: baseline vs deployed model, items, rejects, live accuracy, p99, files

Every step is a real command a user can type; this module only strings them together,
shows progress, and cleans up the processes it started (also on Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

BIN = Path(sys.executable).parent

# Extra `edgectl build` arguments that set the demo's budget, chosen by measurement
# (benchmarks/results/demo.md): the build's defaults (16000 images x 8 epochs + 5
# fine-tune epochs, ~91 %) train about 3x as many images and took over 35 minutes on a
# loaded 2-core AVX2 machine. A 3-epoch
# baseline (68 %) pruned to structured 0.5 and fine-tuned 3 epochs (75 %, the pruned
# network is half the cost per image) ran the whole demo in 6.4 min from a cold cache with
# AVX2 kernels on a 2-core AMD EPYC; 4 + 2 and unstructured 4 + 1 failed the accuracy gate.
# 64 px stays: at 32 px the same network stopped at 57 % after 5 epochs.
DEMO_BUDGET: tuple[str, ...] = ("--epochs", "3", "--finetune-epochs", "3")


def _say(msg: str) -> None:
    print(f"\n\033[1;36m==> {msg}\033[0m", flush=True)


def _tool(name: str) -> str:
    p = BIN / name
    return str(p) if p.exists() else name


def _run_json(cmd: list[str], env: dict[str, str] | None = None) -> Any:
    """Run a command that prints JSON on stdout; its progress (stderr) streams to the terminal."""
    print("$ " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"demo: step failed (exit {proc.returncode}): {' '.join(cmd)}")
    return json.loads(proc.stdout)


def _cpu_seconds() -> float:
    """CPU seconds used by this process and its finished children: on a shared machine the
    wall clock measures the neighbours too; CPU time is closer to what the demo costs."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(
        resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"demo: collector did not answer at {url} within {timeout_s:.0f}s")


def _fmt_ms(d: Any, key: str = "p50") -> str:
    """Milliseconds from a latency object (``{p50, p95, ...}``) or a bare number."""
    if isinstance(d, (int, float)):
        return f"{float(d):.2f} ms"
    if not isinstance(d, dict) or d.get(key) is None:
        return "-"
    return f"{float(d[key]):.2f} ms"


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f} MB"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgectl.demo", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/demo", help="Where everything goes (default runs/demo).")
    ap.add_argument("--items", type=int, default=750, help="Items the simulated line inspects.")
    ap.add_argument("--rate", type=float, default=25.0, help="Items per second on the line.")
    ap.add_argument("--prune", default="structured", choices=["none", "unstructured", "structured"])
    ap.add_argument("--sparsity", type=float, default=0.5)
    ap.add_argument("--build-args", default="",
                    help="Extra arguments for `edgectl build` (after the demo's budget: "
                         f"{' '.join(DEMO_BUDGET)}; the same flag given again wins).")
    args = ap.parse_args(argv)
    from edgectl.pipeline.compute import banner, cpu_model, load_average

    print(banner(), flush=True)
    timings: dict[str, tuple[float, float]] = {}  # step -> (wall s, CPU s of this + children)

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    lap = {"t": t0, "cpu": _cpu_seconds()}

    def done(step: str) -> None:
        now, cpu = time.monotonic(), _cpu_seconds()
        timings[step] = (now - lap["t"], cpu - lap["cpu"])
        lap.update(t=now, cpu=cpu)

    procs: list[subprocess.Popen[bytes]] = []
    env = dict(os.environ, PYTHONUNBUFFERED="1")

    def cleanup(*_: Any) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()

    def on_term(*_: Any) -> None:
        cleanup()
        sys.exit(143)

    signal.signal(signal.SIGTERM, on_term)
    try:
        # 1. build --------------------------------------------------------------------
        _say(
            f"1/6 edgectl build: train → {args.prune} {args.sparsity} → INT8 → ONNX+TFLite → bundle"
        )
        keys = out / "keys"
        if not (keys / "edge-signing.key").exists():
            subprocess.run([_tool("edgectl"), "keys", "generate", "--out", str(keys)], check=True)
        build_cmd = [
            _tool("edgectl"),
            "build",
            "--prune",
            args.prune,
            "--sparsity",
            str(args.sparsity),
            "--quantize",
            "int8",
            "--key",
            str(keys / "edge-signing.key"),
            "--out",
            str(out / "build"),
            "--json",
            *DEMO_BUDGET,
            *args.build_args.split(),
        ]
        build = _run_json(build_cmd, env)
        bundle = Path(build["bundle"])
        done("build")

        # 2. collector ----------------------------------------------------------------
        _say("2/6 edgectl serve: the host collector on 127.0.0.1")
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        data_dir = out / "collector"
        if data_dir.exists():
            shutil.rmtree(data_dir)
        serve_log = open(out / "collector.log", "wb")  # noqa: SIM115 - closed with the process
        procs.append(
            subprocess.Popen(
                [_tool("edgectl"), "serve", "--data-dir", str(data_dir), "--port", str(port)],
                stdout=serve_log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        )
        _wait_http(url + "/api/v1/health")
        print(f"collector up at {url} (log: {out / 'collector.log'})")
        token_file = data_dir / "admin.token"
        done("serve")

        # 3. device token ---------------------------------------------------------------
        _say("3/6 edgectl fleet add-device: a token for the simulated station")
        dev = _run_json(
            [
                _tool("edgectl"),
                "fleet",
                "add-device",
                "station-1",
                "--group",
                "sim",
                "--server",
                url,
                "--token-file",
                str(token_file),
                "--json",
            ]
        )
        device_token = dev["token"]
        done("add-device")

        # 4. agent --------------------------------------------------------------------
        _say(
            f"4/6 edge-agent run: {args.items} items at {args.rate:g}/s, synthetic camera, "
            "mock pins"
        )
        cfg = (
            yaml.safe_load(
                (Path(__file__).resolve().parents[2] / "examples" / "agent-sim.yaml").read_text()
            )
            if (Path(__file__).resolve().parents[2] / "examples" / "agent-sim.yaml").exists()
            else {}
        )
        cfg["device_id"] = "station-1"
        cfg.setdefault("bundle", {})["path"] = str(bundle)
        cfg["bundle"]["public_key"] = str(keys / "edge-signing.pub")
        cfg.setdefault("trigger", {})["rate_hz"] = args.rate
        journal_dir = out / "agent" / "journal"
        if journal_dir.exists():
            shutil.rmtree(journal_dir)
        cfg.setdefault("journal", {})["dir"] = str(journal_dir)
        (out / "agent").mkdir(parents=True, exist_ok=True)
        (out / "agent" / "device.token").write_text(device_token + "\n")
        os.chmod(out / "agent" / "device.token", 0o600)
        cfg["host"] = {
            "url": url,
            "token_file": str(out / "agent" / "device.token"),
            "interval_s": 1.0,
            "heartbeat_s": 2.0,
        }
        agent_cfg = out / "agent" / "agent.yaml"
        agent_cfg.write_text(yaml.safe_dump(cfg, sort_keys=False))
        summary = _run_json(
            [
                _tool("edge-agent"),
                "run",
                "--config",
                str(agent_cfg),
                "--max-items",
                str(args.items),
                "--json",
            ],
            env,
        )
        done("agent run")

        # 5. fleet status -----------------------------------------------------------------
        _say("5/6 edgectl fleet status: what the host sees")
        status: Any = None
        for _ in range(30):
            status = _run_json(
                [
                    _tool("edgectl"),
                    "fleet",
                    "status",
                    "--server",
                    url,
                    "--token-file",
                    str(token_file),
                    "--json",
                ]
            )
            rows = status if isinstance(status, list) else status.get("devices", [])
            if rows and all(int(r.get("received") or 0) >= args.items for r in rows):
                break
            time.sleep(1)
        subprocess.run(
            [_tool("edgectl"), "fleet", "status", "--server", url, "--token-file", str(token_file)],
            check=False,
        )
        done("fleet status")

        # 6. bench --------------------------------------------------------------------
        _say("6/6 edgectl bench --device local: the agent's benchmark of every artifact")
        bench = _run_json(
            [
                _tool("edgectl"),
                "bench",
                "--device",
                "local",
                "--bundle",
                str(bundle),
                "--results-dir",
                str(out / "bench"),
                "--json",
            ],
            env,
        )
        done("bench")
    finally:
        cleanup()

    for name, obj in (("agent-summary", summary), ("fleet-status", status), ("bench", bench)):
        (out / f"{name}.json").write_text(json.dumps(obj, indent=2, default=str))
    machine = f"{cpu_model()} ({banner()}); load average {load_average()}"
    report = _report(build, summary, status, bench, out, time.monotonic() - t0,
                     timings=timings, machine=machine)
    (out / "report.md").write_text(report)
    print("\n" + report)
    return 0


def _report(
    build: dict[str, Any],
    summary: dict[str, Any],
    status: Any,
    bench: Any,
    out: Path,
    elapsed: float,
    timings: dict[str, tuple[float, float]] | None = None,
    machine: str | None = None,
) -> str:
    base, model = build.get("baseline", {}), build.get("model", {})
    lines = [
        "# edgectl demo report",
        "",
        "| | baseline | deployed |",
        "|---|---|---|",
        f"| accuracy | {base.get('accuracy', 0):.4f} | {model.get('accuracy', 0):.4f} |",
        f"| params | {base.get('params', 0):,} | {model.get('params', 0):,} |",
        f"| pruned (target {build.get('pruning', {}).get('target', 0) or 0:.2f}) | - | "
        f"{build.get('pruning', {}).get('actual', model.get('sparsity', 0)) or 0:.3f} "
        f"({build.get('pruning', {}).get('method', 'none')}) |",
        f"| checkpoint size | {_mb(base.get('size_bytes'))} | {_mb(model.get('size_bytes'))} |",
        f"| PyTorch latency (1 thread, p50) | {_fmt_ms(base.get('latency_ms'))} "
        f"| {_fmt_ms(model.get('latency_ms'))} |",
        "",
        f"Budget: `edgectl build {' '.join(DEMO_BUDGET)}` (the demo's; the pruned network is "
        "fine-tuned for as many epochs as the baseline trained, so it can end above it; "
        "`edgectl build` with its defaults trains longer and reaches about 91 %).",
        "",
        "| artifact | bytes | accuracy | latency p50 | max abs diff |",
        "|---|---|---|---|---|",
    ]
    for a in build.get("artifacts", []):
        lines.append(
            f"| {a['format']} {a['precision']} | {_mb(a.get('bytes'))} | "
            f"{a.get('accuracy') or 0:.4f} | {_fmt_ms(a.get('latency_ms'))} | "
            f"{a.get('max_abs_diff') or 0:.2g} |"
        )
    lat = summary.get("latency_ms", {})
    total = lat.get("total") or lat.get("trigger_to_decision") or {}
    lines += [
        "",
        "## Line (edge-agent, synthetic camera, mock pins)",
        "",
        f"- items inspected: {summary.get('items')}",
        f"- rejects: {summary.get('rejects')}, reviews: {summary.get('reviews')}, "
        f"deadline misses: {summary.get('deadline_misses')}",
        f"- live accuracy (ground truth of the synthetic camera): {summary.get('accuracy')}",
        f"- throughput: {summary.get('fps') or 0:.1f} items/s",
        "- p99 latency: "
        + ", ".join(
            f"{stage} {_fmt_ms(v, 'p99')}" for stage, v in lat.items() if isinstance(v, dict)
        ),
        f"- end-to-end p99: {_fmt_ms(total, 'p99')}",
        "",
        "## Fleet status (collector)",
        "",
        "```",
        json.dumps(status, indent=1)[:2000],
        "```",
        "",
        "## Bench (edge-agent bench on this machine)",
        "",
    ]
    reports = bench if isinstance(bench, list) else [bench] if isinstance(bench, dict) else []
    results = [r for rep in reports if isinstance(rep, dict) for r in rep.get("results", [])]
    for r in results:
        lines.append(
            f"- {r.get('artifact')} ({r.get('threads')} thr): "
            f"p50 {_fmt_ms(r.get('latency_ms'))}, p99 {_fmt_ms(r.get('latency_ms'), 'p99')}, "
            f"{r.get('throughput_fps', 0):.0f} fps"
        )
    lines += [
        "",
        "## Files",
        "",
        f"- bundle: {build.get('bundle')}",
        f"- build output: {out / 'build'}",
        f"- agent config and journal: {out / 'agent'}",
        f"- collector data: {out / 'collector'}",
        f"- bench results: {out / 'bench'}",
        f"- this report: {out / 'report.md'}",
        "",
        "## Time",
        "",
        "| step | wall s | CPU s |",
        "|---|---|---|",
        *(f"| {step} | {wall:.0f} | {cpu:.0f} |" for step, (wall, cpu) in (timings or {}).items()),
        "",
        f"Demo finished in {elapsed / 60:.1f} min" + (f" on {machine}." if machine else "."),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
