"""The fault campaign as a script: every fault ends with the reject output safe and nothing
lost, duplicated or actuated without a journal entry.

Real processes on 127.0.0.1: ``edge-agent run`` (synthetic camera, interval trigger, the
``file`` stand-in pins of ``edge_agent.pins``, so the reject output's level outlives the
process and can be read by this script), ``edgectl serve`` (the collector, killed too),
and ``edge-agent safe-state`` run after every agent exit, as the unit's ``ExecStopPost=``
does under systemd (this script plays systemd's part: wait for the exit, run the command).

    .venv/bin/python benchmarks/bench_faults.py [--kills 8] [--seed 0] [--json]

Prints a table and writes it to ``benchmarks/results/faults.md``. Columns:

- lost: decisions the agent reported committed (its ``--events`` lines, printed only
  after the commit, read from every run including the killed ones) or that its journal
  holds, which never reached the collector, minus those the caps dropped and counted
  (shown in the notes).
- duplicated: items journaled twice (two records with the same trigger time stamp) plus
  ids stored twice on the collector (its primary key makes the latter impossible; the
  count is still taken).
- actuated w/o journal: rising edges of the reject output (from the pin's own log) that
  match no journaled reject — journaled meaning: in the journal now, on the collector, or
  reported committed by an ``--events`` line (records dropped by the caps or left in a
  corrupt file moved aside were journaled too). Each edge is matched to the reject whose
  trigger time + ``delay_ms`` it follows by at most ``MATCH_S``.
- unsafe s: the longest time from a kill to the output observed at its safe level (0 when
  it was already safe): the time stamp of the safe-state command's write minus the kill.
- refused: tries that were refused as they should be (bad configs: exit 1, one line).
- unsafe accepts: tries accepted and then unsafe (a config that validates and breaks the
  output, a NaN part passed, an update served that is not the signed, newer version the
  host named); 0 is the goal (issue 36).

Scenarios are a list (``SCENARIOS``): one function each, returning a ``Row``; add a row
by adding a function.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "device"))

from edge_agent.journal import Journal  # noqa: E402
from edge_agent.machine import cpu_model  # noqa: E402
from edge_agent.pins import PIN_STATE_ENV, read_pin_level, read_pin_log  # noqa: E402

DEVICE = "bench-faults"
PIN = "GPIO17"
DELAY_MS = 60.0
PULSE_MS = 30.0
MATCH_S = 0.040  # an edge this late after its item's due time still belongs to it
BIN = Path(sys.executable).parent


@dataclass
class Row:
    fault: str
    tries: int = 0
    lost: int = 0
    duplicated: int = 0
    unjournaled: int = 0
    unsafe_s: float | None = None
    refused: int | str = "-"
    unsafe: int = 0  # accepted and then unsafe (issue 36's rows; 0 is the goal)
    notes: list[str] = field(default_factory=list)


# -- helpers -------------------------------------------------------------------------


class Station:
    """One simulated station: a journal folder, stand-in pins, a collector data folder."""

    def __init__(self, root: Path, bundle: Path, name: str) -> None:
        self.root = root / name
        self.root.mkdir(parents=True)
        self.bundle = bundle
        self.pins = self.root / "pins"
        self.jdir = self.root / "journal"
        self.hostdir = self.root / "host"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.collector: subprocess.Popen[str] | None = None
        self.env = {**os.environ, PIN_STATE_ENV: str(self.pins), "PYTHONUNBUFFERED": "1"}
        self.config = self.root / "agent.yaml"
        self.kills_high = 0
        self.events: dict[str, dict[str, Any]] = {}  # id -> committed record (--events)

    def collect(self, stdout: str) -> dict[str, Any] | None:
        """Keep the --events records of a run's stdout; return its summary, if any."""
        summary = None
        for line in stdout.splitlines():
            if not line.startswith("{"):
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                continue  # a line torn by a kill
            if "id" in obj and "decision" in obj:
                self.events[obj["id"]] = obj
            elif "items" in obj:
                summary = obj
        return summary

    def write_config(self, **over: Any) -> Path:
        from edgectl.collector.server import LocalCollector

        if not (self.root / "token").exists():
            c = LocalCollector(self.hostdir)
            (self.root / "token").write_text(c.add_device(DEVICE))
            c.close()
        cfg: dict[str, Any] = {
            "device_id": DEVICE,
            "log_level": "warning",
            "bundle": {"path": str(self.bundle)},
            "camera": {"type": "synthetic", "size": 32, "seed": 1},
            "trigger": {"type": "interval", "rate_hz": 20, "pin_factory": "mock"},
            "actuator": {"type": "gpio", "pin": 17, "delay_ms": DELAY_MS,
                         "pulse_ms": PULSE_MS, "pin_factory": "file"},
            "decision": {"threshold": 0.3},
            "journal": {"dir": str(self.jdir), "synchronous": "normal",
                        "status_every_s": 0.2, "prune_every_s": 0.5},
            "samples": {"rate": 0.05},
            "host": {"url": self.url, "token_file": str(self.root / "token"),
                     "batch_size": 50, "interval_s": 0.2, "heartbeat_s": 1.0,
                     "backoff_max_s": 0.5, "timeout_s": 3.0},
        }
        for k, v in over.items():
            cfg.setdefault(k, {}).update(v) if isinstance(v, dict) else cfg.update({k: v})
        self.config.write_text(yaml.safe_dump(cfg))
        return self.config

    # collector
    def start_collector(self) -> None:
        self.collector = subprocess.Popen(
            [str(BIN / "edgectl"), "serve", "--data-dir", str(self.hostdir),
             "--port", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
        )
        _wait_port(self.port)

    def kill_collector(self, sig: int = signal.SIGKILL) -> None:
        if self.collector is not None:
            self.collector.send_signal(sig)
            self.collector.wait(timeout=30)
            self.collector = None

    def host_records(self) -> list[dict[str, Any]]:
        db = sqlite3.connect(str(self.hostdir / "collector.db"))
        try:
            table = _decisions_table(db)
            cols = [r[1] for r in db.execute(f"PRAGMA table_info({table})")]
            body = "body" if "body" in cols else None
            rows = db.execute(f"SELECT id{', ' + body if body else ''} FROM {table}").fetchall()
        finally:
            db.close()
        out = []
        for r in rows:
            rec = {"id": r[0]}
            if body:
                try:
                    rec.update(json.loads(r[1]))
                except (TypeError, ValueError):
                    pass
            out.append(rec)
        return out

    # agent
    def start_agent(self, *extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(BIN / "edge-agent"), "run", "--config", str(self.config), "--events", *extra],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=_no_core,
        )

    def wait_running(self, proc: subprocess.Popen[str], timeout: float = 60.0) -> None:
        status = self.jdir / "status.json"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                err = proc.stderr.read() if proc.stderr else ""
                raise RuntimeError(f"agent exited early: {err[-2000:]}")
            try:
                st = json.loads(status.read_text())
                if st.get("state") == "running" and st.get("pid") == proc.pid:
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        raise RuntimeError("agent did not start")

    def safe_state(self) -> int:
        """What ExecStopPost runs once the agent has exited."""
        out = subprocess.run([str(BIN / "edge-agent"), "safe-state", "--config",
                              str(self.config)], env=self.env, capture_output=True, text=True,
                             timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"safe-state failed: {out.stderr}")
        return out.returncode

    def kill_agent(self, proc: subprocess.Popen[str], sig: int) -> float:
        """Kill, let 'systemd' run ExecStopPost, return the unsafe seconds."""
        t_kill = time.monotonic_ns()
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
        self.collect(out)
        high = read_pin_level(self.pins, PIN) is True  # nobody can change it now
        self.safe_state()
        if read_pin_level(self.pins, PIN) is not False:
            return float("inf")
        if not high:
            return 0.0
        self.kills_high += 1
        t_safe = read_pin_log(self.pins, PIN)[-1][0]
        return (t_safe - t_kill) / 1e9

    def run_clean(self, seconds: float) -> dict[str, Any]:
        """A normal run (reconciles, drains sync), then the ExecStopPost."""
        out = subprocess.run(
            [str(BIN / "edge-agent"), "run", "--config", str(self.config), "--duration",
             str(seconds), "--json", "--events"], env=self.env, capture_output=True, text=True,
            timeout=300,
        )
        if out.returncode != 0:
            raise RuntimeError(f"agent run failed: {out.stderr[-2000:]}")
        self.safe_state()
        summary = self.collect(out.stdout)
        assert summary is not None
        return summary

    def drain(self, timeout_s: float = 60.0) -> None:
        """Run the agent until the collector has every journaled decision."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.run_clean(1.5)
            if not self.journal_counts()["unsent"]:
                return
        raise RuntimeError("sync did not drain")

    def journal_counts(self) -> dict[str, int]:
        j = Journal(self.jdir)
        try:
            return j.counts()
        finally:
            j.close()

    def account(self, row: Row) -> None:
        """lost / duplicated / actuated-without-journal for everything this station did."""
        j = Journal(self.jdir)
        try:
            j_recs = [r for r in (j.get(i) for i in j.ids()) if r]
            counts = j.counts()
        finally:
            j.close()
        host = self.host_records()
        host_ids = [r["id"] for r in host]
        row.duplicated += len(host_ids) - len(set(host_ids))
        known: dict[str, dict[str, Any]] = {}
        for rec in [*host, *self.events.values(), *j_recs]:
            known.setdefault(rec["id"], {}).update(rec)
        trig = [r["t_trigger_ns"] for r in known.values() if "t_trigger_ns" in r]
        row.duplicated += len(trig) - len(set(trig))  # one item journaled twice
        committed = set(self.events) | {r["id"] for r in j_recs}
        row.lost += max(0, len(committed - set(host_ids)) - counts["dropped_decisions"])
        rejects = [r for r in known.values() if r.get("action") == "reject"]
        row.unjournaled += unmatched_edges(read_pin_log(self.pins, PIN), rejects)
        if counts["reconciled"]:
            row.notes.append(f"{counts['reconciled']} in-flight rejects reconciled")
        if counts["dropped_decisions"]:
            row.notes.append(f"{counts['dropped_decisions']} dropped by caps (counted)")
        row.notes.append(f"{len(known)} decisions")

    def close(self) -> None:
        self.kill_collector()


def unmatched_edges(log: list[tuple[int, bool]], rejects: list[dict[str, Any]]) -> int:
    """Rising edges of the output that no journaled reject explains."""
    due = sorted(int(r["t_trigger_ns"] + DELAY_MS * 1e6) for r in rejects if "t_trigger_ns" in r)
    edges = [t for (t, level), prev in zip(log, [(0, False), *log], strict=False)
             if level and not prev[1]]
    unmatched = 0
    i = 0
    for t in edges:
        while i < len(due) and due[i] < t - MATCH_S * 1e9:
            i += 1
        if i < len(due) and due[i] <= t + 1e6:  # 1 ms: clock read before/after the write
            i += 1
        else:
            unmatched += 1
    return unmatched


def _decisions_table(db: sqlite3.Connection) -> str:
    names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    return "decisions" if "decisions" in names else next(n for n in names if "decision" in n)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"collector did not listen on {port}")


def _no_core() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # SIGABRT/SIGSEGV: no core files


def _close(proc: subprocess.Popen[str]) -> None:
    for f in (proc.stdout, proc.stderr):
        if f is not None:
            f.close()


# -- scenarios -----------------------------------------------------------------------


def agent_kills(sig: signal.Signals) -> Callable[[Campaign], Row]:
    def scenario(c: Campaign) -> Row:
        row = Row(f"agent {sig.name}")
        st = c.station(f"kill-{sig.name}")
        st.write_config()
        st.start_collector()
        try:
            worst = 0.0
            for i in range(c.kills):
                proc = st.start_agent()
                st.wait_running(proc)
                time.sleep(c.rng.uniform(0.3, 2.0))  # a random point in the line's work
                if i % 2:  # every other kill: the worst case, while a pulse is on
                    deadline = time.monotonic() + 5
                    while read_pin_level(st.pins, PIN) is not True and time.monotonic() < deadline:
                        time.sleep(0.001)
                worst = max(worst, st.kill_agent(proc, sig))
                row.tries += 1
            st.drain()
            st.account(row)
            row.unsafe_s = worst
            row.notes.insert(0, f"{st.kills_high}/{row.tries} kills with the output on")
        finally:
            st.close()
        return row

    scenario.__name__ = f"agent_{sig.name.lower()}"
    return scenario


def collector_kills(c: Campaign) -> Row:
    row = Row("collector SIGKILL")
    st = c.station("collector-kill")
    st.write_config()
    st.start_collector()
    proc = st.start_agent()
    try:
        st.wait_running(proc)
        for _ in range(max(2, c.kills // 2)):
            time.sleep(c.rng.uniform(0.5, 1.5))
            st.kill_collector()
            row.tries += 1
            time.sleep(c.rng.uniform(0.3, 1.0))
            st.start_collector()
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(f"agent failed: {err[-2000:]}")
        st.collect(out)
        st.safe_state()
        st.drain()
        st.account(row)
        row.unsafe_s = 0.0 if read_pin_level(st.pins, PIN) is False else float("inf")
    finally:
        if proc.poll() is None:
            proc.kill()
        st.close()
    return row


def outage_with_caps(c: Campaign) -> Row:
    row = Row("host outage, caps 40 rows")
    st = c.station("outage")
    st.write_config(journal={"max_rows": 40, "max_bytes": 400_000})
    try:
        summary = st.run_clean(4.0)  # the collector is down the whole run
        counts = st.journal_counts()
        row.tries = 1
        if counts["rows"] > 40:
            row.notes.append(f"CAP EXCEEDED: {counts['rows']} rows")
        row.notes.append(f"{summary['items']} items, {counts['rows']} rows kept during outage")
        st.start_collector()
        st.drain()
        st.account(row)
        row.unsafe_s = 0.0 if read_pin_level(st.pins, PIN) is False else float("inf")
    finally:
        st.close()
    return row


def disk_full(c: Campaign) -> Row:
    row = Row("disk full (tmpfs)")
    st = c.station("disk-full")
    mnt = st.root / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        row.notes.append("not run: mounting a tmpfs needs root")
        return row
    proc = None
    try:
        st.jdir = mnt / "journal"
        st.write_config(journal={"dir": str(st.jdir), "status_every_s": 0.2})
        st.start_collector()
        st.run_clean(1.0)  # the journal exists
        st.kill_collector()  # nothing drains while the disk is full
        st_before = st.journal_counts()["total"]
        proc = st.start_agent("--json")  # --events too
        st.wait_running(proc)
        filler = mnt / "filler"
        with open(filler, "wb", buffering=0) as fh:  # the disk fills up under the agent
            try:
                while True:
                    fh.write(b"\0" * 65536)
            except OSError:
                pass
        time.sleep(3.0)  # full: classifying and rejecting on, decisions held in memory
        filler.unlink()
        time.sleep(2.0)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        row.tries = 1
        if proc.returncode != 0:
            row.notes.append(f"agent exited {proc.returncode}: {err[-300:]}")
        summary = st.collect(out)
        assert summary is not None
        st.safe_state()
        counts = st.journal_counts()
        row.lost += summary["items"] - (counts["total"] - st_before)
        row.notes.append(
            f"{summary['items']} items while full, {counts['actuated_before_journal']} "
            "rejects fired before their entry (held in memory)")
        st.start_collector()
        st.drain()
        st.account(row)
        # Edges of the full period are journaled late, still matched: not counted here.
        row.unsafe_s = 0.0 if read_pin_level(st.pins, PIN) is False else float("inf")
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        st.close()
        subprocess.run(["umount", str(mnt)], check=False)
    return row


def corrupt_journal(c: Campaign) -> Row:
    row = Row("corrupt journal")
    st = c.station("corrupt")
    st.write_config()
    st.start_collector()
    try:
        for how in ("garbage", "torn pages", "truncated"):
            st.run_clean(1.0)
            db = st.jdir / "journal.sqlite"
            for side in ("-wal", "-shm"):
                Path(str(db) + side).unlink(missing_ok=True)
            data = bytearray(db.read_bytes())
            if how == "garbage":
                data = bytearray(os.urandom(len(data)))
            elif how == "torn pages":
                data[4096:4096 * 4] = os.urandom(4096 * 3)
            else:
                data = data[: len(data) // 3 + 100]
            db.write_bytes(bytes(data))
            summary = st.run_clean(1.0)
            row.tries += 1
            if summary["items"] == 0:
                row.notes.append(f"{how}: no items after recovery")
        aside = sorted(st.jdir.glob("journal.sqlite.corrupt-*"))
        row.notes.append(f"{len(aside)} corrupt files moved aside")
        st.drain()
        # Decisions in the damaged files are with the collector already (synced) or in
        # the file moved aside; count only what the fresh journal holds.
        st.account(row)
        row.unsafe_s = 0.0 if read_pin_level(st.pins, PIN) is False else float("inf")
    finally:
        st.close()
    return row


BAD_CONFIGS = {
    "threshold NaN": {"decision": {"threshold": float("nan")}},
    "threshold inf": {"decision": {"threshold": float("inf")}},
    "delay NaN": {"actuator": {"delay_ms": float("nan")}},
    "delay inf": {"actuator": {"delay_ms": float("inf")}},
    "delay negative": {"actuator": {"delay_ms": -50}},
    "pulse NaN": {"actuator": {"pulse_ms": float("nan")}},
    "threshold 1.5": {"decision": {"threshold": 1.5}},
}


def bad_configs(c: Campaign) -> Row:
    row = Row("bad configs (NaN, inf, negative delay)", refused=0)
    st = c.station("bad-config")
    for name, over in BAD_CONFIGS.items():
        st.write_config(**over)
        v = subprocess.run([str(BIN / "edge-agent"), "validate-config", str(st.config)],
                           capture_output=True, text=True, timeout=60)
        r = subprocess.run([str(BIN / "edge-agent"), "run", "--config", str(st.config),
                            "--max-items", "3"], env=st.env, capture_output=True, text=True,
                           timeout=120)
        row.tries += 1
        one_line = len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
        if v.returncode == r.returncode == 1 and one_line and v.stderr == r.stderr:
            assert isinstance(row.refused, int)
            row.refused += 1
        else:
            row.notes.append(f"{name}: validate {v.returncode}, run {r.returncode}")
    row.notes.append("validate-config and run agree, one line each")
    return row


def bad_bundles(c: Campaign) -> Row:
    """Every hostile bundle of tests/common/badbundles.py, handed to the real agent."""
    sys.path.insert(0, str(ROOT / "tests" / "common"))
    from badbundles import CASES

    row = Row("bad bundles (unlisted, links, special files, dup keys, oversize)", refused=0)
    st = c.station("bad-bundle")
    cases = [case for case in CASES if not case.kwargs]  # kwargs = limits the agent has not
    for i, case in enumerate(cases):
        work = c.root / "bad-bundles" / str(i)
        work.mkdir(parents=True)
        bad = case.make(c.bundle, work)
        st.write_config(bundle={"path": str(bad)})
        r = subprocess.run([str(BIN / "edge-agent"), "run", "--config", str(st.config),
                            "--max-items", "3"], env=st.env, capture_output=True, text=True,
                           timeout=120)
        row.tries += 1
        safe = read_pin_level(st.pins, PIN) is not True
        named = case.error.lower() in r.stderr.lower()  # refused for the right reason
        if r.returncode != 0 and named and "Traceback" not in r.stderr and safe:
            assert isinstance(row.refused, int)
            row.refused += 1
        else:
            row.notes.append(f"{case.name}: exit {r.returncode}, output safe {safe}, "
                             f"{r.stderr.strip().splitlines()[-1:]}")
    row.unsafe_s = 0.0 if read_pin_level(st.pins, PIN) is not True else float("inf")
    row.notes.append("refused at start, output safe, no traceback")
    return row


# Issue 36: configs that validated on b07fc59 and then broke the run or the output.
BOUND_CONFIGS: dict[str, dict[str, Any]] = {
    "pulse 1e300": {"actuator": {"pulse_ms": 1e300}},
    "delay 1e300": {"actuator": {"delay_ms": 1e300}},
    "pin -1": {"actuator": {"pin": -1}},
    "pin 10^30": {"actuator": {"pin": 10**30}},
    "pin 'abc'": {"actuator": {"pin": "abc"}},
    "pin '-5'": {"actuator": {"pin": "-5"}},
    "trigger pin = actuator pin": {"trigger": {"type": "gpio", "pin": "GPIO17"}},
}
DUPLICATED = {  # text edits of the dumped YAML: a key given twice
    "second actuator section": lambda t: t + "actuator:\n  type: none\n",
    "safe_state twice": lambda t: t.replace("actuator:\n", "actuator:\n  safe_state: 'on'\n"
                                            "  safe_state: 'off'\n", 1),
}
WARNED = {"delay 0": {"actuator": {"delay_ms": 0}},
          "pulse 5000 ms at 20 items/s": {"actuator": {"pulse_ms": 5000}}}


def config_bounds(c: Campaign) -> Row:
    """Every config of issue 36: validate-config, run and safe-state refuse it alike, in one
    line; settings that cannot work are warned about. unsafe = one accepted and then
    leaving the output on, or run and validate-config disagreeing."""
    row = Row("config bounds (1e300 pulse/delay, bad pins, shared pin, duplicate keys)",
              refused=0)
    st = c.station("config-bounds")
    cases: list[tuple[str, Callable[[], None]]] = []
    for name, over in BOUND_CONFIGS.items():
        cases.append((name, lambda over=over: st.write_config(**over)))
    for name, edit in DUPLICATED.items():
        def dup(edit: Callable[[str], str] = edit) -> None:
            st.write_config()
            st.config.write_text(edit(st.config.read_text()))
        cases.append((name, dup))
    for name, make in cases:
        make()
        outs = [subprocess.run([str(BIN / "edge-agent"), *args], env=st.env,
                               capture_output=True, text=True, timeout=120)
                for args in (["validate-config", str(st.config)],
                             ["run", "--config", str(st.config), "--max-items", "3"],
                             ["safe-state", "--config", str(st.config)])]
        row.tries += 1
        one = all(o.returncode == 1 and len(o.stderr.strip().splitlines()) == 1
                  and "Traceback" not in o.stderr for o in outs)
        same = len({o.stderr.split("error: ", 1)[-1] for o in outs}) == 1
        if one and same and read_pin_level(st.pins, PIN) is not True:
            assert isinstance(row.refused, int)
            row.refused += 1
        else:
            row.unsafe += 1
            row.notes.append(f"{name}: exits {[o.returncode for o in outs]}")
    for name, over in WARNED.items():
        st.write_config(**over)
        v = subprocess.run([str(BIN / "edge-agent"), "validate-config", str(st.config)],
                           capture_output=True, text=True, timeout=60)
        row.tries += 1
        if v.returncode == 0 and "warning:" in v.stdout:
            row.notes.append(f"{name}: accepted with a warning")
        else:
            row.unsafe += 1
            row.notes.append(f"{name}: no warning")
    row.unsafe_s = 0.0 if read_pin_level(st.pins, PIN) is not True else float("inf")
    return row


def nonfinite_scores(c: Campaign) -> Row:
    """A real ONNX model that passes its test vectors and emits NaN on the line's parts
    (``devicekit.make_bundle(nan_band=True)``): 40 parts through the real agent and the
    collector. unsafe = a part passed (or synced) without its reason."""
    from devicekit import make_bundle

    row = Row("non-finite scores (a model emitting NaN on the line)")
    bundle = make_bundle(c.root / "nan-bundle", version="nan-1", nan_band=True)
    st = Station(c.root, bundle, "nonfinite")
    st.write_config()
    st.start_collector()
    try:
        out = subprocess.run([str(BIN / "edge-agent"), "run", "--config", str(st.config),
                              "--max-items", "40", "--json", "--events"], env=st.env,
                             capture_output=True, text=True, timeout=300)
        st.safe_state()
        st.collect(out.stdout)
        st.drain()
        j = Journal(st.jdir)
        try:
            recs = [r for r in (j.get(i) for i in j.ids()) if r]
        finally:
            j.close()
        row.tries = len(recs)
        row.unsafe = sum(1 for r in recs if r["action"] != "reject"
                         or "non-finite" not in (r.get("error") or ""))
        synced = [r for r in st.host_records() if r.get("action") == "pass"]
        row.unsafe += len(synced)
        st.account(row)
        row.notes.append(f"{len(recs) - row.unsafe} rejected as unclassifiable (error_policy "
                         "reject), reason journaled")
    finally:
        st.close()
    row.unsafe_s = 0.0 if read_pin_level(st.pins, PIN) is not True else float("inf")
    return row


def update_attacks(c: Campaign) -> Row:
    """A hostile update host (tests/device/fakehost.py) against the real agent, one attack a
    run of a few seconds with update.poll_s 1. unsafe = the agent served anything but its
    signed, current version, re-applied, or reported an attack more than once."""
    from devicekit import make_bundle
    from fakehost import FakeHost

    from edge_common.bundle import generate_keypair, pack_tar, sign_manifest

    row = Row("update-path attacks (lying host, older signed, mismatch, deep, unsigned)",
              refused=0)
    priv, pub = generate_keypair()
    other, _ = generate_keypair()
    keys = c.root / "update-keys"
    keys.mkdir()
    (keys / "edge.pub").write_bytes(pub)
    current = "2026.06.01-000000-structured-0.50"

    def signed(name: str, version: str, key: bytes | None = priv,
               deep: bool = False) -> Path:
        b = make_bundle(c.root / "update-bundles" / name, version=version)
        if deep:
            m = (b / "manifest.json").read_text().rstrip().rstrip("}")
            (b / "manifest.json").write_text(m + ', "x": ' + "[" * 100_000 + "]" * 100_000
                                             + "}")
        if key is not None:
            sign_manifest(b, key)
        return b

    serving = signed("current", current)
    attacks = [  # (name, bundle dir, claimed version, expect a report)
        ("claims newer, serves older signed",
         signed("older", "2026.01.01-000000-structured-0.50"), "2099.01.01-000000-claimed", 1),
        ("claim differs from the signed manifest",
         signed("mislabel", "2026.09.01-000000-structured-0.50"), "2026.12.01-000000-x", 1),
        ("manifest nested 100,000 deep", signed("deep", "2026.10.01-000000-deep", deep=True),
         "2026.10.01-000000-deep", 1),
        ("unsigned newer", signed("unsigned", "2026.11.01-000000-u", key=None),
         "2026.11.01-000000-u", 1),
        ("signed by an unknown key", signed("otherkey", "2026.11.02-000000-o", key=other),
         "2026.11.02-000000-o", 1),
        ("equal version, respelled", signed("equal", current),
         "2026-06-01_000000_STRUCTURED-0.50", 0),
    ]
    host = FakeHost()
    st = Station(c.root, serving, "update-attacks")
    try:
        for name, bundle, claim, expect in attacks:
            tar = pack_tar(bundle, c.root / "update-bundles" / f"{bundle.name}.tar")
            host.serve(tar, claim=claim)
            before = len(host.reports)
            st.write_config(bundle={"path": str(serving), "public_key": str(keys / "edge.pub")},
                            host={"url": host.url}, samples={"rate": 0.0},
                            update={"enabled": True, "poll_s": 1, "health_window_s": 0,
                                    "keys_dir": str(keys)})
            out = subprocess.run([str(BIN / "edge-agent"), "run", "--config", str(st.config),
                                  "--duration", "4", "--json"], env=st.env,
                                 capture_output=True, text=True, timeout=120)
            st.safe_state()
            row.tries += 1
            j = Journal(st.jdir)
            try:
                versions = {r["model_version"] for r in (j.get(i) for i in j.ids()) if r}
            finally:
                j.close()
            reports = host.reports[before:]
            ok = (out.returncode == 0 and versions == {current} and len(reports) == expect
                  and all(r["outcome"] == "refused" for r in reports)
                  and "Traceback" not in out.stderr)
            if ok:
                assert isinstance(row.refused, int)
                row.refused += 1
            else:
                row.unsafe += 1
                row.notes.append(f"{name}: exit {out.returncode}, served {sorted(versions)}, "
                                 f"{len(reports)} reports")
        row.notes.append(f"{host.downloads} downloads for {len(attacks)} attacks")
    finally:
        host.close()
    row.unsafe_s = 0.0 if read_pin_level(st.pins, PIN) is not True else float("inf")
    return row


def sigstop_mid_pulse(c: Campaign) -> Row:
    """SIGSTOP of the agent at a random moment of a pulse, 20 times (then SIGCONT): the
    output's on-time, from the pin's own log, must stay within pulse_ms + 100 ms (the
    guard process times the pulse; issue 37). unsafe s = the worst on-time over the bound
    (0 when every pulse ended in time); the worst on-time is in the notes."""
    row = Row("SIGSTOP of the agent mid-pulse (output guard)")
    st = c.station("sigstop")
    st.write_config(decision={"threshold": 0.0}, host={"url": None, "token_file": None},
                    samples={"rate": 0.0})
    proc = st.start_agent()
    worst = 0.0
    try:
        st.wait_running(proc)
        for _ in range(20):
            n = len(read_pin_log(st.pins, PIN))
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # a new rising edge
                log = read_pin_log(st.pins, PIN)
                if len(log) > n and log[-1][1]:
                    break
                time.sleep(0.001)
            time.sleep(c.rng.uniform(0, PULSE_MS / 1000))  # somewhere in the pulse
            proc.send_signal(signal.SIGSTOP)
            time.sleep(0.4)
            log = read_pin_log(st.pins, PIN)
            proc.send_signal(signal.SIGCONT)
            row.tries += 1
            on = [t for t, level in log if level][-1]
            off = [t for t, level in log if not level and t > on]
            held = (off[0] - on) / 1e6 if off else float("inf")
            worst = max(worst, held)
            time.sleep(c.rng.uniform(0.05, 0.2))
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        st.collect(out)
        st.safe_state()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    row.unsafe_s = max(0.0, worst - PULSE_MS - 100.0) / 1000 if worst != float("inf") else worst
    row.unsafe += int(worst > PULSE_MS + 100)
    row.notes.append(f"longest on-time {worst:.1f} ms for {PULSE_MS:.0f} ms pulses "
                     "(bound: pulse_ms + 100 ms)")
    return row


def graceful_stops(c: Campaign) -> Row:
    """SIGTERM at random moments of a line whose pulses are 500 ms away (so some are always
    pending at the stop), 10 times, 5 parts/s, every part a reject: every journal row that
    says its pulse fired (done, late) must find the output active within its window (due
    time .. + 150 ms, the pin's own log) and every rising edge a row; pulses pending at the
    stop are 'unfired' and counted in reconciled. unsafe = rows and edges that disagree."""
    row = Row("graceful stops with pulses pending (delay 500 ms)")
    st = c.station("graceful")
    st.write_config(decision={"threshold": 0.0}, actuator={"delay_ms": 500.0},
                    trigger={"rate_hz": 5}, host={"url": None, "token_file": None},
                    samples={"rate": 0.0})
    for _ in range(10):
        proc = st.start_agent()
        st.wait_running(proc)
        time.sleep(c.rng.uniform(0.3, 1.5))
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        st.collect(out)
        st.safe_state()
        row.tries += 1
    j = Journal(st.jdir)
    try:
        acts = j._db.execute("SELECT body, actuation FROM decisions").fetchall()
        counts = j.counts()
    finally:
        j.close()
    window = 150e6
    due = sorted(json.loads(b)["t_trigger_ns"] + 500e6 for b, a in acts if a in ("done", "late"))
    log = read_pin_log(st.pins, PIN)
    on_spans, start = [], None
    for t, level in log:
        if level and start is None:
            start = t
        elif not level and start is not None:
            on_spans.append((start, t))
            start = None
    no_pulse = sum(1 for d in due if not any(a <= d + window and b >= d for a, b in on_spans))
    no_row = sum(1 for a, _ in on_spans if not any(d <= a <= d + window for d in due))
    unfired = sum(1 for _, a in acts if a == "unfired")
    row.unsafe = no_pulse + no_row
    row.notes.append(f"{len(due)} pulses journaled as fired, {len(on_spans)} output pulses in "
                     f"the pin's log ({no_pulse} rows without a pulse, {no_row} pulses without "
                     f"a row); {unfired} unfired at stops (reconciled {counts['reconciled']})")
    row.unsafe_s = 0.0 if read_pin_level(st.pins, PIN) is not True else float("inf")
    return row


class MqttResults:
    """A subscriber on ``<prefix>/<device>/result`` (QoS 1), results kept by record id (QoS 1
    is at-least-once: a message seen twice is one message)."""

    def __init__(self, port: int, topic: str) -> None:
        import paho.mqtt.client as mqtt

        self.by_id: dict[str, dict[str, Any]] = {}
        self.ready = False
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-results")
        self.client.on_message = lambda c, u, m: self._take(m.payload)
        self.client.on_subscribe = lambda *a: setattr(self, "ready", True)
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()
        deadline = time.monotonic() + 10
        while not self.ready and time.monotonic() < deadline:
            time.sleep(0.01)

    def _take(self, payload: bytes) -> None:
        body = json.loads(payload)
        self.by_id[body["id"]] = body

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


LT_PARTS = 1000
LT_KILLS = 10


def line_truth(c: Campaign) -> Row:
    """Issue 37's campaign: 1,000 parts from a PLC (plckit.ModbusPlc: its own part numbers,
    acks after a random 0-40 ms, bursts of 8 triggers into ``max_in_flight`` 2 for
    overruns) through the real ``edge-agent run`` (Modbus server trigger, MQTT results to a
    real mosquitto, journal ``synchronous: full``), a result deadline set to the 80th
    percentile of a calibration run's trigger-to-verdict times (``plc.verdict_ms``; about a
    fifth late once the kills and bursts load the line), one clean stop (SIGTERM) and 10
    SIGKILLs at random moments, each restarted. Then part by part: the journal's row, what
    the PLC acked (its received result), and the MQTT result message must agree: same
    parts, Pass/Fail, fault code, late. A part the PLC never got a result for (the agent
    killed or stopped first) must be a Fail the journal says was not delivered.
    unsafe = parts that disagree (0 is the goal)."""
    sys.path.insert(0, str(ROOT / "tests"))  # plckit's own helpers (syskit)
    from plckit import ModbusPlc, Mosquitto

    row = Row("1,000 parts: journal = PLC = MQTT, part by part")
    st = c.station("linetruth")
    mq = Mosquitto(st.root / "mqtt").start()
    sub = MqttResults(mq.port, f"lt/{DEVICE}/result")
    port = _free_port()
    rng = c.rng

    def config(deadline_ms: float) -> None:
        st.write_config(
            trigger={"type": "modbus"}, actuator={"type": "none"}, results=["mqtt"],
            host={"url": None, "token_file": None}, samples={"rate": 0.0},
            journal={"synchronous": "full"},
            plc={"modbus": {"port": port}, "result_deadline_ms": deadline_ms,
                 "max_in_flight": 2,
                 "mqtt": {"port": mq.port, "topic_prefix": "lt", "status_every_s": 5.0}})

    seqs: dict[int, bool] = {}  # part number -> the PLC's trigger write succeeded
    session_of: dict[int, str] = {}  # part number -> how its session ended
    received: list[tuple[int, bool, int]] = []
    failed_acks: dict[int, str] = {}
    next_seq = [1]
    ends: list[str] = []

    def session(n_parts: int, sig: signal.Signals | None, after_s: float = 0.0) -> None:
        """Start the agent, trigger up to ``n_parts``; with ``sig``, send it ``after_s``
        seconds into the triggering (the PLC goes on triggering into the dying agent);
        without, wait for every ack and stop it cleanly."""
        proc = subprocess.Popen([str(BIN / "edge-agent"), "run", "--config", str(st.config)],
                                env=st.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, preexec_fn=_no_core)
        plc = ModbusPlc(port, ack_delay=lambda: rng.uniform(0.0, 0.04))
        name = f"session {len(ends) + 1} ({sig.name if sig else 'to the end'})"
        mine: list[int] = []
        timer = None
        try:
            plc.connect(timeout=120)
            if sig is not None:
                timer = threading.Timer(after_s, proc.send_signal, [sig])
                timer.start()
            sent = 0
            while sent < n_parts and proc.poll() is None:
                burst = 8 if rng.random() < 0.04 else 1
                for _ in range(min(burst, n_parts - sent)):
                    seq = next_seq[0]
                    next_seq[0] += 1
                    seqs[seq] = plc.trigger(seq)
                    mine.append(seq)
                    sent += 1
                time.sleep(rng.uniform(0.01, 0.04))
            if timer is not None and proc.poll() is None and timer.is_alive():
                timer.cancel()  # the parts ran out first: the signal now
                time.sleep(rng.uniform(0.0, 0.05))
                proc.send_signal(sig)
            if sig is None:
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and len(plc.received) + len(
                        plc.failed_acks) < sent:
                    time.sleep(0.01)
                proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            row.tries += 1
        finally:
            if timer is not None:
                timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            plc.close()
            received.extend(plc.received)
            failed_acks.update(plc.failed_acks)
            ends.append(name)
            session_of.update({s: name for s in mine})

    try:
        config(10000.0)
        session(60, None)  # calibration: every verdict in time
        j = Journal(st.jdir)
        try:
            lat = sorted(r["plc"]["verdict_ms"] for r in (j.get(i) for i in j.ids())
                         if r and r.get("plc", {}).get("verdict_ms") and not r["fault"])
        finally:
            j.close()
        deadline_ms = max(1.0, round(lat[int(0.8 * (len(lat) - 1))], 1))
        config(deadline_ms)
        signals = [signal.SIGKILL] * LT_KILLS
        signals.insert(rng.randrange(LT_KILLS + 1), signal.SIGTERM)  # the clean stop
        per = (LT_PARTS - 60) // (len(signals) + 1)
        for sig in signals:  # the signal somewhere in the session's triggering
            session(per * 2, sig, rng.uniform(0.2, 1.5))
        while next_seq[0] <= LT_PARTS:  # the rest, to the end
            session(LT_PARTS + 1 - next_seq[0], None)
        session(0, None)  # a last start: nothing may stay open
        time.sleep(2.0)  # MQTT messages in flight
    finally:
        sub.close()
        mq.stop()

    j = Journal(st.jdir)
    try:
        rows = [r for r in (j.get(i) for i in j.ids()) if r]
        counts = j.counts()
    finally:
        j.close()
    by_seq: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        by_seq.setdefault(int(r.get("plc", {}).get("seq", 0)), []).append(r)
    plc_got = {seq: (passed, fault) for seq, passed, fault in received}
    mq_by_seq: dict[int, list[dict[str, Any]]] = {}
    for body in sub.by_id.values():
        mq_by_seq.setdefault(int(body["seq"]), []).append(body)
    kinds: dict[str, int] = {}
    seen: list[str] = []

    def disagree(kind: str) -> None:
        kinds[kind] = kinds.get(kind, 0) + 1
        r = (by_seq.get(seq) or [{}])[0]
        seen.append(f"part {seq} ({session_of.get(seq)}; ack failed: "
                    f"{failed_acks.get(seq)}): {kind}; row {r.get('state')} {r.get('result')} "
                    f"{r.get('fault')} late={r.get('late')} plc={r.get('plc')}; PLC acked "
                    f"{plc_got.get(seq)}; MQTT {mq_by_seq.get(seq)}")

    for seq, trig_ok in seqs.items():
        rs, ms = by_seq.get(seq, []), mq_by_seq.get(seq, [])
        if len(rs) != 1:
            if not (len(rs) == 0 and not trig_ok and seq not in plc_got):
                disagree("rows != 1")
            continue
        r = rs[0]
        plc = r.get("plc", {})
        fault = int(plc.get("fault") or 0)
        if r.get("state") != "done":
            disagree("row open")
        elif plc.get("delivered"):
            if plc_got.get(seq) != (r["result"] == "pass", fault):
                disagree("journal != PLC")
            elif bool(r.get("late")) != (fault == 1):
                disagree("late != fault 1")
        elif seq in plc_got or r["result"] != "fail":
            disagree("undelivered but the PLC has it")
        if len(ms) != 1:
            disagree("MQTT results != 1")
        elif (ms[0]["pass"], ms[0]["fault"], ms[0]["late"], ms[0]["id"]) != (
                r["result"] == "pass", fault, bool(r.get("late")), r["id"]):
            disagree("journal != MQTT")
    extra = set(by_seq) - set(seqs)
    if extra:
        kinds["rows for parts never triggered"] = len(extra)
    bad = sum(kinds.values())
    row.unsafe = bad
    delivered = [r for r in rows if r.get("plc", {}).get("delivered")]
    late = sum(1 for r in rows if r.get("late"))
    row.notes.append(
        f"{len(seqs)} parts ({sum(1 for v in seqs.values() if not v)} trigger writes failed: "
        f"agent down), {len(rows)} rows, {len(received)} results acked by the PLC, "
        f"{len(sub.by_id)} MQTT results; deadline {deadline_ms} ms: {late} late "
        f"({100 * late / max(1, len(rows)):.0f} %); overrun {counts['fault_overrun']}, "
        f"stopped {counts['fault_stopped']}, crash-closed {counts['fault_crash']}, "
        f"duplicate {counts['fault_duplicate']}; {len(delivered)} delivered; "
        f"{sum('SIGKILL' in e for e in ends)} SIGKILLs + "
        f"{sum('SIGTERM' in e for e in ends)} clean stop mid-run; DISAGREEMENTS {bad}"
        + (f" ({', '.join(f'{k}: {n}' for k, n in kinds.items())})" if kinds else ""))
    print(f"line truth: {bad} parts disagree", file=sys.stderr)
    for line in seen:
        print("  " + line, file=sys.stderr)
    return row


class Campaign:
    def __init__(self, root: Path, bundle: Path, kills: int, seed: int) -> None:
        self.root = root
        self.bundle = bundle
        self.kills = kills
        self.rng = random.Random(seed)

    def station(self, name: str) -> Station:
        return Station(self.root, self.bundle, name)


SCENARIOS: list[Callable[[Campaign], Row]] = [
    agent_kills(signal.SIGKILL),
    agent_kills(signal.SIGABRT),
    agent_kills(signal.SIGSEGV),
    collector_kills,
    outage_with_caps,
    disk_full,
    corrupt_journal,
    bad_configs,
    bad_bundles,
    config_bounds,
    nonfinite_scores,
    update_attacks,
    sigstop_mid_pulse,
    graceful_stops,
    line_truth,
]


# -- report --------------------------------------------------------------------------


HEADER = ("fault", "tries", "lost", "duplicated", "actuated w/o journal", "unsafe s (max)",
          "refused", "unsafe accepts", "notes")


def format_table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in rows:
        unsafe = "-" if r.unsafe_s is None else f"{r.unsafe_s:.3f}"
        lines.append(
            f"| {r.fault} | {r.tries} | {r.lost} | {r.duplicated} | {r.unjournaled} | "
            f"{unsafe} | {r.refused} | {r.unsafe} | {'; '.join(r.notes)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--kills", type=int, default=8, help="kills per signal")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default=None, help="run scenarios whose name contains this")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "faults.md")
    args = p.parse_args(argv)
    from devicekit import make_bundle

    t0 = time.monotonic()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        root = Path(tmp)
        bundle = make_bundle(root / "bundle")
        campaign = Campaign(root, bundle, args.kills, args.seed)
        for scenario in SCENARIOS:
            if args.only and args.only not in scenario.__name__:
                continue
            t = time.monotonic()
            row = scenario(campaign)
            rows.append(row)
            print(f"{row.fault}: done in {time.monotonic() - t:.1f} s", file=sys.stderr)
    elapsed = time.monotonic() - t0
    table = format_table(rows)
    ok = all(
        r.lost == 0 and r.duplicated == 0 and r.unjournaled == 0 and r.unsafe == 0
        and (r.unsafe_s is None or r.unsafe_s <= 1.0)
        for r in rows
    )
    if args.json:
        print(json.dumps({"rows": [asdict(r) for r in rows], "elapsed_s": elapsed, "ok": ok}))
    else:
        print(table)
    if not args.only:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            "# Fault campaign (benchmarks/bench_faults.py)\n\n"
            f"{time.strftime('%Y-%m-%d', time.gmtime())}, {cpu_model()} ({os.cpu_count()} "
            f"CPUs), seed {args.seed}, {args.kills} kills per signal, {elapsed:.0f} s in all. "
            "Kills at random points of a 20 items/s line (60 ms conveyor delay, 30 ms "
            "pulses); `edge-agent safe-state` after every exit as the unit's ExecStopPost. "
            f"Verdict: {'all faults safe, nothing lost' if ok else 'FAILURES, see rows'}.\n\n"
            + table + "\n"
        )
    print(f"{elapsed:.0f} s; {'OK' if ok else 'FAILED'}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
