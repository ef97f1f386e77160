"""``edge-agent``: run, validate-config, safe-state, status, bench.

argparse, not click: the board installs only the device extra, and argparse is in the
standard library; four subcommands with a handful of flags don't need more. Commands are
thin: parse, call the logic (service, config, bench), print. Errors of ours are one line
on stderr and exit 1; ``-v`` shows the trace.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from edge_common.errors import EdgeError

log = logging.getLogger("edge_agent")

# Where the edge_agent Ansible role writes the config on a board (`edge-agent status`).
DEFAULT_CONFIG = "/etc/edge-agent/agent.yaml"
# Where the agent writes its status with that role's layout (journal.dir/status.json). The
# config holds the host token and only the service group reads it; the role's operators
# group reads this file: `edge-agent status` with no arguments falls back to it when the
# default config exists but is not readable by the one asking.
DEFAULT_STATUS = "/var/lib/edge-agent/journal/status.json"


def _setup_logging(level: str) -> None:
    # stderr, no timestamps: journald adds them.
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(levelname)s %(name)s: %(message)s",
        force=True,
    )


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


# -- commands ----------------------------------------------------------------------------


def cmd_validate_config(args: argparse.Namespace) -> int:
    from edge_agent.config import config_warnings, load_config

    cfg = load_config(args.path)
    print(
        f"config OK: {args.path} (device {cfg.device_id}, camera {cfg.camera.type}, trigger "
        f"{cfg.trigger.type}, runtime {cfg.runtime.type}, actuator {cfg.actuator.type}, "
        f"results {', '.join(cfg.results) or 'none'}, bundle {cfg.bundle.path})"
    )
    for warning in config_warnings(cfg):
        print(f"warning: {warning}")
    return 0


def cmd_safe_state(args: argparse.Namespace) -> int:
    """Drive the reject output to its safe level and exit (the unit's ExecStopPost=).

    Reads only the config and the pin: never the model, the journal or the camera, so it
    works (fast) whatever killed the agent.
    """
    from edge_agent.actuator import drive_safe
    from edge_agent.config import load_config
    from edge_agent.pins import make_pin_factory

    cfg = load_config(args.config)
    ac = cfg.actuator
    if ac.type != "gpio" or ac.pin is None:
        print(f"safe-state: no reject output configured (actuator.type {ac.type})")
        return 0
    drive_safe(ac.pin, ac.active_high, ac.safe_state == "on", make_pin_factory(ac.pin_factory))
    print(f"safe-state: reject output {ac.pin} driven {ac.safe_state}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from edge_agent.config import config_warnings, load_config
    from edge_agent.service import Agent

    cfg = load_config(args.config)
    _setup_logging("debug" if args.verbose else cfg.log_level)
    for warning in config_warnings(cfg):
        log.warning("config: %s", warning)

    def on_decision(rec: dict[str, Any]) -> None:
        # Called after the decision is committed to the journal.
        _print_json(
            {
                k: rec.get(k)
                for k in (
                    "id", "item", "decision", "label", "action", "truth", "deadline_missed",
                    "t_trigger_ns",
                )
            }
        )

    agent = Agent(cfg, on_decision=on_decision if args.events else None)
    # Sync to the host collector and model updates (issue 8): workers the config asks for
    # (host.url, update.enabled), run beside the loop through Agent.add_worker.
    from edge_agent import metrics
    from edge_agent.sync import attach

    attach(agent)
    metrics.attach(agent)  # /metrics when metrics.port is set (off by default)

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        agent.stop()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        summary = agent.run(max_items=args.max_items, duration=args.duration)
    finally:
        agent.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    if args.json:
        _print_json(summary)
    else:
        print(format_summary(summary))
    return 0


def format_summary(s: dict[str, Any]) -> str:
    acc = "n/a" if s.get("accuracy") is None else f"{s['accuracy']:.3f}"
    lines = [
        f"{s['items']} items in {s['duration_s']} s ({s['fps']} fps): {s['ok']} ok, "
        f"{s['rejects']} rejects, {s['reviews']} reviews, {s['errors']} errors; "
        f"{s['deadline_misses']} deadline misses; accuracy {acc}",
        f"model {s['model_version']}; journal {s['journal']}",
    ]
    return "\n".join(lines + latency_lines(s["latency_ms"]))


def latency_lines(latency_ms: dict[str, dict[str, float]]) -> list[str]:
    """The per-stage p50/p95/p99 table of a run summary or a status."""
    lines = [f"{'stage':<12}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"]
    for stage, q in latency_ms.items():
        lines.append(f"{stage:<12}{q['p50']:>9.2f}{q['p95']:>9.2f}{q['p99']:>9.2f}")
    return lines


# Journal counters that mean something did not go the normal way (docs/operations.md).
LOSS_COUNTERS = ("dropped_decisions", "dropped_samples", "quarantined", "reconciled",
                 "actuated_before_journal")


def fault_lines(faults: dict[str, str], counts: dict[str, int]) -> list[str]:
    """One line per raised fault, then the journal's loss counters that are not zero."""
    lines = [f"FAULT {name}: {msg}" for name, msg in sorted(faults.items())] or ["faults: none"]
    losses = [f"{k} {counts[k]}" for k in LOSS_COUNTERS if counts.get(k)]
    if losses:
        lines.append("journal losses: " + ", ".join(losses))
    return lines


def _denied(path: str) -> bool:
    """True when ``path`` exists but is not ours to read (its folder may hide it too)."""
    try:
        with open(path, "rb"):
            return False
    except PermissionError:
        return True
    except OSError:
        return False  # missing or broken: load_config says so


def cmd_status(args: argparse.Namespace) -> int:
    from edge_agent.config import load_config
    from edge_agent.report import status_path

    if args.file:
        path = Path(args.file)
    elif args.config == DEFAULT_CONFIG and _denied(DEFAULT_CONFIG):
        path = Path(DEFAULT_STATUS)
    else:
        path = status_path(load_config(args.config))
    try:
        st = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise EdgeError(f"status: no status file at {path} (has the agent run?)") from err
    except PermissionError as err:
        raise EdgeError(f"status: cannot read {path}: permission denied (the Ansible role "
                        "lets its operators group read it: docs/runbook.md)") from err
    except ValueError as err:
        raise EdgeError(f"status: {path} is not valid JSON: {err}") from err
    age = time.time() - float(st.get("updated", 0))
    alive = st.get("state") in ("running", "ready", "starting") and age < args.stale_s
    if alive and st.get("pid"):
        try:
            os.kill(int(st["pid"]), 0)
        except ProcessLookupError:
            alive = False
        except PermissionError:
            pass  # another user's process (the service user): it exists
    st["age_s"] = round(age, 1)
    st["alive"] = alive
    if args.json:
        _print_json(st)
    else:
        print(format_status(st))
    return 0 if alive else 3


def format_status(st: dict[str, Any]) -> str:
    state = st.get("state") if st["alive"] else f"not running (last: {st.get('state')})"
    cam = st.get("camera") or {}
    counts = st.get("counts") or {}
    lines = [
        f"{st.get('device_id')}: {state}, updated {st['age_s']} s ago, model "
        f"{st.get('model_version')}, up {st.get('uptime_s')} s",
        f"{st.get('items')} items, {st.get('fps')} fps, {st.get('deadline_misses')} deadline "
        f"misses; journal: {counts.get('total')} total, {counts.get('reject')} rejects, "
        f"{counts.get('review')} reviews, {counts.get('unsent')} unsent, "
        f"{st.get('disk_bytes')} bytes",
        f"camera {cam.get('type')}: {'DEGRADED: ' + str(cam.get('last_error')) if cam.get('degraded') else 'ok'}"  # noqa: E501
        f"; temperature {st.get('temperature_c')} °C",
    ]
    lines += fault_lines(st.get("faults") or {}, counts)
    return "\n".join(lines + latency_lines(st.get("latency_ms") or {}))


def cmd_bench(args: argparse.Namespace) -> int:
    from edge_agent.bench import format_table, run_bench

    try:
        threads = [int(t) for t in args.threads.split(",") if t.strip()]
    except ValueError as err:
        raise EdgeError(
            f"bench: --threads must be a list like 1,2,4, got {args.threads!r}"
        ) from err
    if not threads or min(threads) < 1:
        raise EdgeError(f"bench: --threads must be positive, got {args.threads!r}")
    if (args.bundle is None) == (args.profile is None):
        raise EdgeError("bench: give --bundle PATH or --profile DIR")
    if args.profile is not None:
        from edge_agent.bench import run_profile

        report = run_profile(args.profile, threads, args.runs, args.warmup)
        if args.json:
            _print_json(report)
        else:
            for r in report["results"]:
                lat = r.get("latency_ms")
                print(f"{r['file']:<40}{r['threads']:>4}  " + (
                    f"p50 {lat['p50']:.4f} ms  p95 {lat['p95']:.4f} ms" if lat else r["error"]))
        return 0
    report = run_bench(
        args.bundle, threads, args.runs, args.warmup, args.public_key, isolate=not args.no_isolate,
        reference=args.reference,
    )
    if args.json:
        _print_json(report)
    else:
        print(format_table(report))
    return 0


# -- parser ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-agent", description="On-board visual inspection.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logs; traces on errors")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="run the inspection line")
    r.add_argument("--config", "-c", required=True, help="agent YAML config")
    r.add_argument("--max-items", type=int, default=None, help="stop after N items")
    r.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    r.add_argument("--json", action="store_true", help="print the summary as JSON")
    r.add_argument(
        "--events",
        action="store_true",
        help="print each decision as a JSON line once it is committed",
    )
    r.set_defaults(func=cmd_run)

    v = sub.add_parser("validate-config", help="check a config file and exit")
    v.add_argument("path")
    v.set_defaults(func=cmd_validate_config)

    ss = sub.add_parser(
        "safe-state",
        help="drive the reject output to its safe level and exit (ExecStopPost=; no model)",
    )
    ss.add_argument("--config", "-c", required=True, help="agent YAML config")
    ss.set_defaults(func=cmd_safe_state)

    s = sub.add_parser("status", help="show the running agent's status")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--config", "-c", default=DEFAULT_CONFIG,
                   help=f"agent YAML config (status file in journal.dir; default {DEFAULT_CONFIG})")
    g.add_argument("--file", help="a status.json")
    s.add_argument("--json", action="store_true")
    s.add_argument("--stale-s", type=float, default=15.0, help="older than this = not running")
    s.set_defaults(func=cmd_status)

    b = sub.add_parser("bench", help="benchmark every artifact of a bundle on this machine")
    b.add_argument("--bundle", default=None)
    b.add_argument("--profile", default=None, metavar="DIR",
                   help="instead of a bundle: every model listed in DIR/profile.json "
                        "(the host's latency table: edgectl bench --profile-layers)")
    b.add_argument("--threads", default="1", help="comma-separated thread counts, e.g. 1,2,4")
    b.add_argument("--runs", type=int, default=50)
    b.add_argument("--warmup", type=int, default=10)
    b.add_argument("--public-key", default=None, help="require a valid bundle signature")
    b.add_argument("--reference", default=None, metavar="MODEL",
                   help="also measure this model file (e.g. the dense FP32 ONNX) as the reference")
    b.add_argument(
        "--no-isolate",
        action="store_true",
        help="measure in this process (faster; RSS/load time less meaningful)",
    )
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:
        _setup_logging("debug" if args.verbose else "warning")
    try:
        return int(args.func(args) or 0)
    except EdgeError as err:
        if args.verbose:
            log.exception("failed")
        print(f"edge-agent: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("edge-agent: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
