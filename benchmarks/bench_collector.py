"""Collector load: N simulated devices post decision batches and heartbeats on loopback.

    python benchmarks/bench_collector.py [--devices 50] [--duration 60] [--batch 50]
        [--interval 0.5] [--heartbeat-s 5] [--max-requests 200000] [--json]

The collector runs as `edgectl serve` in its own process (its own GIL, as in production)
on a free 127.0.0.1 port with a fresh data dir; the devices are asyncio tasks on one
httpx client, each with its own token. Each device sends one batch every ``--interval``
seconds and a heartbeat every ``--heartbeat-s`` (the request rate is bounded by
design, and ``--max-requests`` caps the total). Reports accepted records/s, request
latency percentiles and errors; exits 1 if any request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from edge_common.timing import percentiles


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(data_dir: Path, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-c", "from edgectl.cli import main; main()", "serve",
           "--data-dir", str(data_dir), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("collector did not start")


async def device(client: httpx.AsyncClient, url: str, name: str, token: str, args, stats,
                 end: float) -> None:
    h = {"Authorization": f"Bearer {token}"}
    seq, next_hb = 0, 0.0
    while time.monotonic() < end and stats["requests"] < args.max_requests:
        t_round = time.monotonic()
        reqs = []
        if t_round >= next_hb:
            next_hb = t_round + args.heartbeat_s
            hb = {"device_id": name, "model_version": "bench", "fps": 10.0,
                  "counts": {"total": seq, "unsent": 0}}
            reqs.append(("heartbeat", hb))
        recs = []
        for _ in range(args.batch):
            seq += 1
            recs.append({"id": str(uuid.uuid4()), "seq": seq, "ts": time.time(),
                         "decision": "ok", "label": "ok", "score": 0.99,
                         "model_version": "bench", "latency_ms": {"total": 12.3}})
        reqs.append(("decisions", {"records": recs}))
        for kind, body in reqs:
            t0 = time.perf_counter()
            try:
                r = await client.post(f"{url}/devices/{name}/{kind}", json=body, headers=h)
                ok = r.status_code == 200
                if ok and kind == "decisions":
                    stats["accepted"] += r.json()["accepted"]
                why = f"HTTP {r.status_code}"
            except httpx.HTTPError as err:
                ok, why = False, type(err).__name__
            stats["latency_ms"].append((time.perf_counter() - t0) * 1000)
            stats["requests"] += 1
            if not ok:
                stats["errors"] += 1
                stats["error_kinds"][why] = stats["error_kinds"].get(why, 0) + 1
        await asyncio.sleep(max(0.0, args.interval - (time.monotonic() - t_round)))


async def run(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-collector-") as tmp:
        port = free_port()
        proc = start_server(Path(tmp), port)
        try:
            url = f"http://127.0.0.1:{port}/api/v1"
            admin = {"Authorization": f"Bearer {(Path(tmp) / 'admin.token').read_text().strip()}"}
            n = args.devices
            limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
            async with httpx.AsyncClient(timeout=30, limits=limits) as client:
                tokens = {}
                for i in range(args.devices):
                    name = f"bench-{i:03d}"
                    r = await client.post(f"{url}/devices", json={"name": name}, headers=admin)
                    r.raise_for_status()
                    tokens[name] = r.json()["token"]
                stats = {"requests": 0, "errors": 0, "accepted": 0, "latency_ms": [],
                         "error_kinds": {}}
                t0 = time.monotonic()
                end = t0 + args.duration
                await asyncio.gather(*(device(client, url, n, t, args, stats, end)
                                       for n, t in tokens.items()))
                elapsed = time.monotonic() - t0
                r = await client.get(f"{url}/fleet/status", headers=admin)
                stored = sum(row["received"] for row in r.json())
        finally:
            proc.terminate()
            proc.wait(30)
    lat = percentiles(stats["latency_ms"]) if stats["latency_ms"] else {}
    return {
        "devices": args.devices, "duration_s": round(elapsed, 1), "batch": args.batch,
        "interval_s": args.interval, "requests": stats["requests"], "errors": stats["errors"],
        "error_kinds": stats["error_kinds"],
        "records_accepted": stats["accepted"], "records_stored": stored,
        "records_per_s": round(stats["accepted"] / elapsed, 1),
        "requests_per_s": round(stats["requests"] / elapsed, 1),
        "latency_ms": {k: round(v, 2) for k, v in lat.items() if k in ("p50", "p95", "p99")},
        "cpus": os.cpu_count(),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--devices", type=int, default=50)
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    p.add_argument("--batch", type=int, default=50, help="records per batch")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between a device's batches")
    p.add_argument("--heartbeat-s", type=float, default=5.0)
    p.add_argument("--max-requests", type=int, default=200_000, help="total request cap")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    out = asyncio.run(run(args))
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{out['devices']} devices, {out['duration_s']} s: {out['requests']} requests "
              f"({out['requests_per_s']}/s), {out['errors']} errors; "
              f"{out['records_accepted']} records accepted ({out['records_per_s']}/s), "
              f"{out['records_stored']} stored; latency p50 {out['latency_ms'].get('p50')} ms, "
              f"p99 {out['latency_ms'].get('p99')} ms")
    ok = out["errors"] == 0 and out["records_stored"] == out["records_accepted"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
