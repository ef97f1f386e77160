"""The fleet pages under a simulated fleet: ``bench_collector.py --fleet-page``.

    python benchmarks/bench_collector.py --fleet-page [--devices 50] [--history-min 60]
        [--db sqlite|postgres] [--requests 40]

A collector (``edgectl serve``, its own process) holds ``--devices`` boards, each with a
heartbeat as the agent sends it, ``--history-min`` minutes of decisions at ``--rate``
per second (the agent's record shape, from ``bench_collector.record``), and kept
samples. Then each page is fetched ``--requests`` times with the admin token; the time is
the server's own (``Server-Timing: app;dur=…``, set by the collector's request-metrics
middleware around the whole app), beside the client's round trip. Target (issue 15): the
fleet page for 50 devices in under 300 ms server time. Results:
``benchmarks/results/fleet-page.md`` (and .json).
"""

from __future__ import annotations

import io
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
from PIL import Image

from edge_common.cpuinfo import cpu_model
from edge_common.timing import percentiles

TARGET_MS = 300.0
PAGES = ("/", "/devices/{device}", "/review", "/models", "/metrics")


def heartbeat(name: str, n: int, rng: random.Random) -> dict[str, Any]:
    """A heartbeat body shaped like edge_agent.report.snapshot."""
    rejects = int(n * 0.06)
    return {"device_id": name, "model_version": "mnv2-int8-1.0.0", "state": "running",
            "fps": round(rng.uniform(1.5, 2.5), 2), "items": n,
            "latency_ms": {"total": {"p50": 12.1, "p95": round(rng.uniform(14, 19), 2),
                                     "p99": 21.0}},
            "latency_hist_ms": {"le": [5.0, 10.0, 20.0, 50.0], "counts": [0, n // 4, n - 3, n],
                                "count": n, "sum": 13.1 * n},
            "deadline_misses": rng.randint(0, 3),
            "counts": {"total": n, "ok": n - rejects, "reject": rejects, "review": 0,
                       "deadline_misses": 0, "unsent": rng.randint(0, 40)},
            "faults": {"camera": "frame timeout"} if rng.random() < 0.1 else {},
            "temperature_c": round(rng.uniform(48, 66), 1)}


def populate(bc: ModuleType, url: str, admin: str, args: Any) -> dict[str, Any]:
    """Register the fleet and send its history through the device API, as boards do."""
    rng = random.Random(args.seed)
    h = {"Authorization": f"Bearer {admin}"}
    per_device = int(args.history_min * 60 * args.line_rate)
    png = io.BytesIO()
    Image.new("RGB", (64, 64), (120, 120, 120)).save(png, format="PNG")
    t0 = time.monotonic()
    with httpx.Client(base_url=url, timeout=120) as client:
        for i in range(args.devices):
            name = f"station-{i:03d}"
            r = client.post("/api/v1/devices", json={"name": name, "group": f"line-{i % 5}"},
                            headers=h)
            r.raise_for_status()
            dev = {"Authorization": f"Bearer {r.json()['token']}"}
            now = time.time()
            recs = []
            for k in range(per_device):
                rec = bc.record(name, k + 1, rng)
                rec["ts"] = now - args.history_min * 60 + k / args.line_rate
                recs.append(rec)
            for k in range(0, len(recs), 1000):
                res = client.post(f"/api/v1/devices/{name}/decisions", headers=dev,
                                  json={"device_id": name, "records": recs[k:k + 1000]})
                res.raise_for_status()
            for rec in [r for r in recs if r["decision"] == "reject"][-args.samples:]:
                client.put(f"/api/v1/devices/{name}/samples/{rec['id']}", content=png.getvalue(),
                           headers={**dev, "Content-Type": "image/png"}).raise_for_status()
            client.post(f"/api/v1/devices/{name}/heartbeat", headers=dev,
                        json=heartbeat(name, per_device, rng)).raise_for_status()
    return {"devices": args.devices, "decisions": per_device * args.devices,
            "samples_per_device": args.samples, "populate_s": round(time.monotonic() - t0, 1)}


def measure(url: str, admin: str, args: Any) -> list[dict[str, Any]]:
    h = {"Authorization": f"Bearer {admin}"}
    rows = []
    with httpx.Client(base_url=url, timeout=60, headers=h) as client:
        for page in PAGES:
            path = page.format(device="station-000")
            client.get(path).raise_for_status()  # warm: templates compiled, caches filled
            server, total, size = [], [], 0
            for _ in range(args.requests):
                t0 = time.perf_counter()
                r = client.get(path)
                total.append((time.perf_counter() - t0) * 1000)
                r.raise_for_status()
                server.append(float(r.headers["server-timing"].split("dur=")[1]))
                size = len(r.content)
            s, t = percentiles(server), percentiles(total)
            rows.append({"page": path, "n": args.requests, "bytes": size,
                         "server_p50_ms": round(s["p50"], 1), "server_p95_ms": round(s["p95"], 1),
                         "server_max_ms": round(max(server), 1),
                         "client_p50_ms": round(t["p50"], 1), "client_p95_ms": round(t["p95"], 1)})
    return rows


def report(rows: list[dict[str, Any]], setup: dict[str, Any], args: Any) -> str:
    fleet = rows[0]
    met = fleet["server_p95_ms"] < TARGET_MS
    lines = [
        "# Fleet pages: server time under a simulated fleet", "",
        f"CPU: {cpu_model()} ({os.cpu_count()} cores), {platform.platform()}, load average "
        f"{' / '.join(f'{x:.1f}' for x in os.getloadavg())}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
        f"Fleet: {setup['devices']} devices (5 groups), each with a heartbeat as the agent "
        f"sends it, {args.history_min:g} min of decisions at {args.line_rate:g}/s "
        f"({setup['decisions']:,} rows in all, sent through the device API) and "
        f"{setup['samples_per_device']} kept samples; database {args.db}; "
        f"`edgectl serve` in its own process, 1 worker.", "",
        f"Command: `python benchmarks/bench_collector.py --fleet-page --devices {args.devices} "
        f"--history-min {args.history_min:g} --line-rate {args.line_rate:g} --db {args.db} "
        f"--requests {args.requests}`", "",
        "| page | n | bytes | server p50 ms | server p95 ms | server max ms | client p50 ms "
        "| client p95 ms |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| `{r['page']}` | {r['n']} | {r['bytes']:,} | {r['server_p50_ms']} | "
                     f"{r['server_p95_ms']} | {r['server_max_ms']} | {r['client_p50_ms']} | "
                     f"{r['client_p95_ms']} |")
    lines += ["", "Server time: the collector's `Server-Timing: app;dur=` header (its request "
              "middleware, around the whole app: auth, queries, template); client: the "
              "round trip seen by the script on the same machine.", "",
              f"Target (issue 15): the fleet page for {args.devices} devices in under "
              f"{TARGET_MS:.0f} ms server time. Here: p95 {fleet['server_p95_ms']} ms, max "
              f"{fleet['server_max_ms']} ms: **{'met' if met else 'not met'}**.", ""]
    return "\n".join(lines)


def main(bc: ModuleType, args: Any) -> int:
    """Run the fleet-page benchmark with ``bench_collector``'s server and record helpers."""
    pg = bc.start_pg("on") if args.db == "postgres" else None
    work = Path(tempfile.mkdtemp(prefix="fleetpage-"))
    data = work / "collector"
    data.mkdir()
    db = pg.clean_collector_db() if pg else f"sqlite:///{data / 'collector.db'}"
    port = bc.free_port()
    proc = bc.start_server(db, data, port, 1)
    try:
        url = f"http://127.0.0.1:{port}"
        admin = (data / "admin.token").read_text().strip()
        setup = populate(bc, url, admin, args)
        print(f"populated in {setup['populate_s']} s; measuring", file=sys.stderr)
        rows = measure(url, admin, args)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if pg is not None:
            pg.stop()
    text = report(rows, setup, args)
    print(text)
    out = args.fleet_out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(
        {"cpu": cpu_model(), "cores": os.cpu_count(), "setup": setup, "rows": rows,
         "target_ms": TARGET_MS}, indent=2) + "\n")
    return 0 if rows[0]["server_p95_ms"] < TARGET_MS else 1
