"""Collector load: simulated boards sync decision batches to `edgectl serve` on loopback,
on SQLite with 1 worker and on PostgreSQL with 1, 2 and 4 workers, at one offered load.

    python benchmarks/bench_collector.py --all                  # the four configs, one run
    python benchmarks/bench_collector.py --db postgres --workers 4
        [--boards 200] [--rate 10] [--interval 2] [--batch 200] [--duration 30] [--json]
    python benchmarks/bench_collector.py --fleet-page [--devices 50]   # the fleet pages

Each board behaves as the agent's sync worker (device/edge_agent/sync.py): it produces
``--rate`` decisions per second into its journal; every ``--interval`` seconds it posts its
backlog in batches of at most ``--batch`` records, one request at a time, and a heartbeat
every ``--heartbeat-s``. Records have the agent's shape (service.py: id, seq, ts, item,
label, score, reject_score, probs over the six labels, decision, action, latency_ms per
stage...). So the offered load is ``boards × rate`` records/s whatever the server does;
a collector that falls behind shows it as fewer records accepted per second and longer
requests (the boards' backlogs grow), exactly as a fleet would see it.

The collector runs as `edgectl serve` in its own processes; PostgreSQL is a cluster this
script creates in a temp dir (tests/pgkit.py) with PostgreSQL's defaults for durability:
fsync on, synchronous_commit on (every batch is on disk before the board hears "accepted").
``--pg-synchronous-commit off`` is an opt-in for comparison only: the durability of
SQLite's WAL with synchronous=NORMAL that the collector uses (a power cut may lose the
last commits, never corrupt); the table header says which setting a run used. The load
generator (asyncio streams speaking plain HTTP/1.1 keep-alive, one connection per board,
bodies built from a per-board template) runs on the same machine and competes for
its cores: its CPU time is reported beside the server's. Exit 1 on any failed request or
stored != accepted. Results: benchmarks/results/collector.md (and .json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from edge_common.cpuinfo import cpu_model
from edge_common.synthetic import LABELS
from edge_common.timing import percentiles

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
CONFIGS = [("sqlite", 1), ("postgres", 1), ("postgres", 2), ("postgres", 4)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def record(board: str, seq: int, rng: random.Random) -> dict:
    """One journal row as the agent writes it (device/edge_agent/service.py)."""
    probs = [rng.random() for _ in LABELS]
    total = sum(probs)
    probs = [p / total for p in probs]
    best = max(range(len(LABELS)), key=probs.__getitem__)
    decision = "ok" if best == 0 else "reject"
    return {
        "id": os.urandom(16).hex(), "seq": seq, "ts": time.time(),
        "t_trigger_ns": time.monotonic_ns(), "item": seq, "label": LABELS[best],
        "score": round(probs[best], 6), "reject_score": round(1 - probs[0], 6),
        "probs": {k: round(p, 6) for k, p in zip(LABELS, probs, strict=True)},
        "decision": decision, "action": "reject" if decision == "reject" else "pass",
        "error": None, "truth": None, "model_version": "mnv2-int8-1.0.0",
        "latency_ms": {"capture": 2.1, "preprocess": 1.3, "inference": 9.8, "decision": 0.02,
                       "total": 13.4},
        "deadline_missed": False, "sample": None,
    }


def cpu_check_us() -> float:
    """How fast this machine is right now: ``json.loads`` of a 200-record batch, µs per
    record (best of 5). The cores are shared (a VM, other work): the same code has been
    seen to run 2× slower from one hour to the next, so each row says what it ran on."""
    body = Board("check", "t", argparse.Namespace(rate=1.0), random.Random(0)).body(200)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(20):
            json.loads(body)
        best = min(best, (time.perf_counter() - t0) / 20 / 200)
    return round(best * 1e6, 2)


def process_cpu_s(root_pid: int) -> float:
    """User+system CPU seconds of ``root_pid`` and its children so far (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    by_parent: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for p in Path("/proc").glob("[0-9]*/stat"):
        try:
            f = p.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid = int(p.parent.name)
        stats[pid] = f
        by_parent.setdefault(int(f[1]), []).append(pid)
    total, todo = 0.0, [root_pid]
    while todo:
        pid = todo.pop()
        if pid in stats:
            f = stats[pid]
            total += (int(f[11]) + int(f[12])) / tick   # utime, stime
        todo += by_parent.get(pid, [])
    return total


class HttpConn:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams: a fraction of httpx's CPU
    per request, so the generator leaves the cores to the collector."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, headers: bytes) -> tuple[int, bytes]:
        for attempt in (0, 1):
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            try:
                self.writer.write(b"POST %s HTTP/1.1\r\nHost: %s\r\n%sContent-Length: %d\r\n\r\n"
                                  % (path.encode(), self.host.encode(), headers, len(body)))
                self.writer.write(body)
                await self.writer.drain()
                assert self.reader is not None
                status = int((await self.reader.readline()).split()[1])
                length, close = 0, False
                while True:
                    line = await self.reader.readline()
                    if line in (b"\r\n", b""):
                        break
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"connection" and value.strip().lower() == b"close":
                        close = True
                data = await self.reader.readexactly(length) if length else b""
                if close:
                    self.close()
                return status, data
            except (ConnectionError, asyncio.IncompleteReadError, IndexError, ValueError):
                self.close()
                if attempt:
                    raise
        raise ConnectionError("unreachable")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class Board:
    def __init__(self, name: str, token: str, args, rng: random.Random) -> None:
        self.name, self.args, self.rng = name, args, rng
        self.headers = (f"Authorization: Bearer {token}\r\n"
                        "Content-Type: application/json\r\n").encode()
        self.conn: HttpConn | None = None
        self.seq = 0
        # Bodies are built from one template per board, only ids and times change: the
        # generator spends its CPU sending, not encoding.
        proto = record(name, 0, rng)
        proto["id"], proto["seq"], proto["ts"] = "@ID@", 0, 0.0
        self.tmpl = json.dumps(proto).replace('"@ID@"', '"%s"').replace('"seq": 0,', '"seq": %d,') \
            .replace('"ts": 0.0,', '"ts": %.6f,')

    def body(self, n: int) -> bytes:
        now = time.time()
        parts = []
        for _ in range(n):
            self.seq += 1
            parts.append(self.tmpl % (os.urandom(16).hex(), self.seq, now))
        return ('{"records":[' + ",".join(parts) + "]}").encode()


async def run_board(conn: HttpConn, b: Board, stats: dict, t0: float,
                    end: float, warm: float) -> None:
    a = b.args
    produced_at = t0 - b.rng.random() * a.interval      # boards out of phase
    next_round = t0 + b.rng.random() * a.interval
    next_hb = next_round
    backlog = 0.0
    while True:
        now = time.monotonic()
        if next_round > now:
            await asyncio.sleep(next_round - now)
        now = time.monotonic()
        if now >= end:
            return
        backlog += (now - produced_at) * a.rate
        produced_at = now
        reqs = []
        if now >= next_hb:
            next_hb = now + a.heartbeat_s
            reqs.append(("heartbeat", json.dumps({"device_id": b.name, "model_version":
                                                  "mnv2-int8-1.0.0", "fps": a.rate}).encode(), 0))
        while backlog >= 1 and time.monotonic() < end:
            n = min(int(backlog), a.batch)
            backlog -= n
            for kind, body, k in reqs + [("decisions", b.body(n), n)]:
                t_req = time.perf_counter()
                try:
                    code, data = await conn.post(f"/api/v1/devices/{b.name}/{kind}", body,
                                                 b.headers)
                    ok, why = code == 200, f"HTTP {code}"
                    accepted = json.loads(data).get("accepted", 0) if ok and k else 0
                except (OSError, asyncio.IncompleteReadError) as err:
                    ok, why, accepted = False, type(err).__name__, 0
                dt = (time.perf_counter() - t_req) * 1000
                counted = time.monotonic() >= warm
                if counted:
                    stats["requests"] += 1
                    stats["accepted"] += accepted
                    if k:
                        stats["latency_ms"].append(dt)
                stats["accepted_all"] += accepted
                if not ok:
                    stats["errors"] += 1
                    stats["error_kinds"][why] = stats["error_kinds"].get(why, 0) + 1
            reqs = []
            # the agent marks rows sent, then reads more: the next batch follows at once
            produced = time.monotonic()
            backlog += (produced - produced_at) * a.rate
            produced_at = produced
        next_round += a.interval
        if next_round < time.monotonic():
            next_round = time.monotonic()


def start_pg(synchronous_commit: str):
    from pgkit import PgCluster, pg_bindir

    bindir = pg_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL is not installed (apt-get install postgresql)")
    return PgCluster(bindir, durable=True, synchronous_commit=synchronous_commit).start()


def start_server(db: str, data_dir: Path, port: int, workers: int) -> subprocess.Popen:
    cmd = [sys.executable, "-c", "from edgectl.cli import main; main()", "serve", "--db", db,
           "--data-dir", str(data_dir), "--port", str(port), "--workers", str(workers)]
    log = open(data_dir.parent / "serve.log", "ab")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(cmd, stdout=log, stderr=log)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1).status_code == 200:
                time.sleep(1.0 if workers > 1 else 0.2)  # let every worker come up
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
        if proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit(f"collector did not start: {(data_dir.parent / 'serve.log').read_text()}")


async def drive(url: str, admin_token: str, args) -> dict:
    limits = httpx.Limits(max_connections=args.boards, max_keepalive_connections=args.boards)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        admin = {"Authorization": f"Bearer {admin_token}"}
        rng = random.Random(args.seed)
        boards = []
        for i in range(args.boards):
            name = f"board-{i:05d}"
            r = await client.post(f"{url}/devices", json={"name": name}, headers=admin)
            r.raise_for_status()
            boards.append(Board(name, r.json()["token"], args, random.Random(rng.random())))
        stats = {"requests": 0, "errors": 0, "accepted": 0, "accepted_all": 0,
                 "latency_ms": [], "error_kinds": {}}
        t0 = time.monotonic()
        warm, end = t0 + args.warmup, t0 + args.warmup + args.duration
        host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
        conns = [HttpConn(host, int(port)) for _ in boards]
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        await asyncio.gather(*(run_board(c, b, stats, t0, end, warm)
                               for c, b in zip(conns, boards, strict=True)))
        for c in conns:
            c.close()
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        stats["elapsed_s"] = time.monotonic() - t0
        stats["generator_cpu_s"] = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        return stats


def run_config(backend: str, workers: int, args, pg) -> dict:
    from edgectl.collector.store import Store

    load, speed = os.getloadavg()[0], cpu_check_us()
    with tempfile.TemporaryDirectory(prefix="bench-collector-") as tmp:
        data = Path(tmp) / "data"
        db = f"sqlite:///{Path(tmp) / 'collector.db'}" if backend == "sqlite" else pg.create_db()
        port = free_port()
        proc = start_server(db, data, port, workers)
        try:
            token = (data / "admin.token").read_text().strip()
            cpu_before = process_cpu_s(proc.pid)
            db_before = process_cpu_s(pg.postmaster_pid()) if pg is not None else 0.0
            t_wall = time.monotonic()
            stats = asyncio.run(drive(f"http://127.0.0.1:{port}/api/v1", token, args))
            server_cpu = process_cpu_s(proc.pid) - cpu_before
            wall = time.monotonic() - t_wall
            # PostgreSQL's backends exit with their connections: measure before stopping
            db_cpu = process_cpu_s(pg.postmaster_pid()) - db_before if pg is not None else None
        finally:
            proc.terminate()
            proc.wait(30)
        store = Store(db, migrate=False)
        try:
            stored = store.decision_count()
            bytes_per_row = stored_bytes(store) / max(stored, 1)
        finally:
            store.close()
    lat = percentiles(stats["latency_ms"]) if stats["latency_ms"] else {}
    return {
        "db": backend, "workers": workers, "boards": args.boards, "rate_per_board": args.rate,
        "offered_records_per_s": args.boards * args.rate, "batch": args.batch,
        "interval_s": args.interval, "duration_s": args.duration,
        "requests": stats["requests"], "errors": stats["errors"],
        "error_kinds": stats["error_kinds"],
        "records_accepted": stats["accepted"],
        "records_per_s": round(stats["accepted"] / args.duration, 1),
        "records_stored": stored, "records_accepted_all": stats["accepted_all"],
        "latency_ms": {k: round(v, 1) for k, v in lat.items() if k in ("p50", "p95", "p99")},
        "server_cpu_s": round(server_cpu, 1), "generator_cpu_s": round(stats["generator_cpu_s"], 1),
        "postgres_cpu_s": None if db_cpu is None else round(db_cpu, 1),
        "stored_bytes_per_record": round(bytes_per_row),
        "collector_us_per_record": round(1e6 * server_cpu / max(stats["accepted_all"], 1), 1),
        "postgres_us_per_record": None if db_cpu is None else
        round(1e6 * db_cpu / max(stats["accepted_all"], 1), 1),
        "wall_s": round(wall, 1), "load_avg_1m_at_start": round(load, 2),
        "cpu_check_us_per_record": speed,
        "pg_synchronous_commit": args.pg_synchronous_commit if backend == "postgres" else None,
    }


def stored_bytes(store) -> int:
    """Bytes the database holds for decisions: the table with its indexes (PostgreSQL), or
    the whole file (SQLite; decisions are nearly all of it)."""
    import sqlalchemy as sa

    if store.path is not None:
        wal = store.path.with_name(store.path.name + "-wal")
        return store.path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    with store.engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT pg_total_relation_size('decisions')")).scalar())


KEEPS_UP = 0.97  # kept up: accepted ≥ 97 % of offered, p99 ≤ 1 s (no growing backlog)


def table(rows: list[dict], args) -> str:
    base = next((r for r in rows if r["db"] == "sqlite"), rows[0])
    offered = args.boards * args.rate
    out = [
        "# Collector throughput: SQLite × 1 worker vs PostgreSQL × 1, 2, 4 workers\n",
        f"CPU: {cpu_model()} ({os.cpu_count()} cores), {platform.platform()}, "
        f"load average {' / '.join(f'{x:.1f}' for x in os.getloadavg())}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.\n",
        f"Offered load (the same for every row): {args.boards} boards × {args.rate} decisions/s"
        f" = {offered} records/s; each board posts its backlog every "
        f"{args.interval} s in batches of ≤ {args.batch} (the agent's sync), a heartbeat every "
        f"{args.heartbeat_s} s; {args.warmup} s warm-up, then {args.duration} s measured.\n",
        f"PostgreSQL: fsync on, synchronous_commit {args.pg_synchronous_commit}"
        + (" (PostgreSQL's default: a batch is on disk before it is acknowledged)."
           if args.pg_synchronous_commit == "on" else
           " (opt-in: SQLite WAL + synchronous=NORMAL's durability, not the default).")
        + " SQLite: WAL, synchronous=NORMAL (the collector's settings).\n",
        "Command: `python benchmarks/bench_collector.py " + " ".join(sys.argv[1:]) + "`\n",
        "| db | workers | records/s accepted | × SQLite×1 | kept up | p50 ms | p95 ms | p99 ms "
        "| errors | stored = accepted | collector CPU s | collector µs/record "
        "| PostgreSQL CPU s | PostgreSQL µs/record | generator CPU s | stored B/record "
        "| load avg at start | CPU check µs |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lat = r["latency_ms"]
        ratio = r["records_per_s"] / base["records_per_s"] if base["records_per_s"] else 0
        kept = "yes" if kept_up(r, offered) else "no"
        out.append(f"| {r['db']} | {r['workers']} | {r['records_per_s']:.0f} | {ratio:.2f} | "
                   f"{kept} | {lat.get('p50')} | {lat.get('p95')} | {lat.get('p99')} | "
                   f"{r['errors']} | "
                   f"{'yes' if r['records_stored'] == r['records_accepted_all'] else 'NO'} | "
                   f"{r['server_cpu_s']} | {r['collector_us_per_record']} | "
                   f"{r['postgres_cpu_s'] or '-'} | {r['postgres_us_per_record'] or '-'} | "
                   f"{r['generator_cpu_s']} | {r['stored_bytes_per_record']} | "
                   f"{r['load_avg_1m_at_start']} | {r['cpu_check_us_per_record']} |")
    out.append("")
    out.append("Latency: decision-batch requests only, measured by the generator (includes its "
               f"own scheduling delay). Kept up: accepted ≥ {KEEPS_UP:.0%} of the offered "
               "load with p99 ≤ 1 s (the boards' backlogs do not grow). Collector CPU s: "
               "user+system of `edgectl serve` and its workers over the run (the machine has "
               f"{os.cpu_count()} cores × "
               f"{args.warmup + args.duration:.0f} s); µs/record: that CPU over every record "
               "accepted in the run (warm-up included); PostgreSQL CPU s: its server processes "
               "over the same run. The generator runs on the same cores. Stored B/record: "
               "the SQLite file, or the PostgreSQL decisions table with its indexes, divided "
               "by the rows in it. Load average (1 min) at the start of each row: other work "
               "on the machine shares its cores. CPU check: `json.loads` of a 200-record "
               "batch just before the row, µs per record (lower is faster): the machine's "
               "speed at that moment.")
    out.append("")
    out.append(verdict(rows, offered))
    return "\n".join(out) + "\n"


def kept_up(r: dict, offered: float) -> bool:
    return (r["records_per_s"] >= KEEPS_UP * offered and r["errors"] == 0
            and r["latency_ms"].get("p99", float("inf")) <= 1000)


def verdict(rows: list[dict], offered: float) -> str:
    """Issue 16's "done when", checked on this run's rows."""
    base = next((r for r in rows if r["db"] == "sqlite" and r["workers"] == 1), None)
    pg4 = next((r for r in rows if r["db"] == "postgres" and r["workers"] == 4), None)
    if base is None or pg4 is None or not base["records_per_s"]:
        return "Target (issue 16): needs the SQLite × 1 and PostgreSQL × 4 rows (--all)."
    ratio = pg4["records_per_s"] / base["records_per_s"]
    p99 = pg4["latency_ms"].get("p99", float("inf"))
    met = ratio >= 1.5 and p99 <= 1000 and pg4["errors"] == 0
    saturated = not kept_up(base, offered)
    return (f"Target (issue 16): PostgreSQL × 4 accepts ≥ 1.5× the records/s of SQLite × 1 at "
            f"this offered load, p99 ≤ 1 s, no errors. Here: {ratio:.2f}×, p99 {p99} ms, "
            f"{pg4['errors']} errors: **{'met' if met else 'not met'}**"
            + ("" if saturated else " (SQLite × 1 kept up with this load: no ratio above "
               "1.0 is possible here)") + ".")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--all", action="store_true", help="SQLite×1 and PostgreSQL×1, 2, 4")
    p.add_argument("--boards", type=int, default=200)
    p.add_argument("--rate", type=float, default=10.0, help="decisions/s per board")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between sync rounds")
    p.add_argument("--batch", type=int, default=200, help="records per request, at most")
    p.add_argument("--heartbeat-s", type=float, default=30.0)
    p.add_argument("--duration", type=float, default=30.0, help="measured seconds")
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "collector.md")
    p.add_argument("--json", action="store_true")
    p.add_argument("--pg-synchronous-commit", choices=["on", "off"], default="on",
                   help="PostgreSQL's synchronous_commit (default on, its own default); off "
                        "is an opt-in comparison, printed in the table header")
    p.add_argument("--fleet-page", action="store_true",
                   help="time the fleet pages under a simulated fleet instead (fleetpage.py)")
    p.add_argument("--devices", type=int, default=50, help="--fleet-page: devices")
    p.add_argument("--history-min", type=float, default=60.0, help="--fleet-page: minutes "
                   "of decisions per device")
    p.add_argument("--line-rate", type=float, default=2.0, help="--fleet-page: decisions/s")
    p.add_argument("--samples", type=int, default=20, help="--fleet-page: samples per device")
    p.add_argument("--requests", type=int, default=40, help="--fleet-page: fetches per page")
    p.add_argument("--fleet-out", type=Path,
                   default=ROOT / "benchmarks" / "results" / "fleet-page.md")
    args = p.parse_args()
    if args.fleet_page:
        sys.path.insert(0, str(Path(__file__).parent))
        import fleetpage

        return fleetpage.main(sys.modules[__name__], args)
    configs = CONFIGS if args.all else [(args.db, args.workers)]
    pg = start_pg(args.pg_synchronous_commit) if any(b == "postgres" for b, _ in configs) else None
    rows = []
    try:
        for backend, workers in configs:
            r = run_config(backend, workers, args, pg)
            rows.append(r)
            print(f"{backend} × {workers}: {r['records_per_s']} records/s, p99 "
                  f"{r['latency_ms'].get('p99')} ms, {r['errors']} errors, "
                  f"collector CPU {r['server_cpu_s']} s, generator CPU {r['generator_cpu_s']} s",
                  file=sys.stderr)
    finally:
        if pg is not None:
            pg.stop()
    if args.json:
        print(json.dumps(rows, indent=2))
    if args.all:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table(rows, args))
        args.out.with_suffix(".json").write_text(json.dumps(
            {"cpu": cpu_model(), "cores": os.cpu_count(), "rows": rows}, indent=2) + "\n")
        print(table(rows, args))
    ok = all(r["errors"] == 0 and r["records_stored"] == r["records_accepted_all"] for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
