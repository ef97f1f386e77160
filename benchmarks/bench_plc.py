"""Trigger → ResultValid latency per PLC backend, against the GPIO path, in one run.

The same agent (the tiny colour model of tests/device/devicekit.py, an in-memory camera,
journal ``synchronous: normal``) serves every row; only the trigger and the result path
change. Parts are sent one at a time (the next after the previous result), so each figure
is one part's round trip, as the PLC sees it:

- gpio: gpiozero ``MockFactory`` input driven (the beam-break edge) → the decision is
  committed and its pulse scheduled (``on_decision``): the GPIO path's "result valid".
- modbus: a pymodbus client writes ``[PartSeq, 1]`` (FC16) → polls input registers (FC4)
  until ResultValid; then acks.
- opcua: an asyncua client writes PartSeq and Trigger → polls ResultValid; then acks.
- mqtt: GPIO trigger as above → the decision arrives at a subscriber of a real mosquitto
  (skipped with a note when mosquitto is not installed).

    .venv/bin/python benchmarks/bench_plc.py [--parts 300] [--json]

Prints the table with the CPU model and writes it to ``benchmarks/results/plc.md``.
Figures are ratios within this one run; absolute milliseconds depend on the machine and
its load (client polling adds up to its poll period, 0.5 ms here).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "device"))
sys.path.insert(0, str(ROOT / "tests"))

from devicekit import make_bundle, write_config  # noqa: E402
from plckit import AgentThread, Mosquitto, PartCamera, free_port  # noqa: E402
from syskit import find  # noqa: E402

from edge_agent.config import load_config  # noqa: E402
from edge_agent.machine import cpu_model  # noqa: E402
from edge_agent.service import Agent  # noqa: E402
from edge_common.timing import percentiles  # noqa: E402

VALID = 4


def _agent(work: Path, bundle: Path, name: str, pin_factory: Any = None, **sections: Any):
    folder = work / name
    folder.mkdir()
    cfg = load_config(write_config(folder / "agent.yaml", bundle, **sections), env={})
    cfg.journal.dir = str(folder / "journal")
    return Agent(cfg, camera=PartCamera(every=3), pin_factory=pin_factory)


def bench_gpio(work: Path, bundle: Path, parts: int, mqtt_port: int | None = None) -> list[float]:
    from gpiozero.pins.mock import MockFactory

    factory = MockFactory()
    sections: dict[str, Any] = {
        "trigger": {"type": "gpio", "pin": 4, "pull": "down", "bounce_ms": None},
        "actuator": {"type": "none"},
    }
    name = "gpio"
    if mqtt_port is not None:
        sections |= {"results": ["mqtt"], "plc": {"mqtt": {"port": mqtt_port}}}
        name = "mqtt"
    agent = _agent(work, bundle, name, pin_factory=factory, **sections)
    got = threading.Event()
    stamp: list[int] = []
    sub = None
    if mqtt_port is None:
        agent.on_decision = lambda rec: (stamp.append(time.monotonic_ns()), got.set())
    else:
        import paho.mqtt.client as mqtt

        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench")
        sub.on_message = lambda c, u, m: (stamp.append(time.monotonic_ns()), got.set())
        sub.connect("127.0.0.1", mqtt_port)
        sub.subscribe(f"edgectl/{agent.config.device_id}/decision", qos=1)
        sub.loop_start()
    run = AgentThread(agent).start()
    pin = factory.pin(4)
    out = []
    try:
        time.sleep(0.5 if sub is not None else 0.0)  # the agent's MQTT connection is up
        for _ in range(parts):
            got.clear()
            t0 = time.monotonic_ns()
            pin.drive_high()
            if not got.wait(10):
                raise RuntimeError(f"{name}: no result")
            out.append((stamp[-1] - t0) / 1e6)
            pin.drive_low()
    finally:
        run.stop()
        agent.close()
        if sub is not None:
            sub.loop_stop()
    return out


def bench_modbus(work: Path, bundle: Path, parts: int) -> list[float]:
    from pymodbus.client import ModbusTcpClient

    port = free_port()
    agent = _agent(work, bundle, "modbus", trigger="modbus", actuator={"type": "none"},
                   plc={"modbus": {"port": port}})
    run = AgentThread(agent).start()
    client = ModbusTcpClient("127.0.0.1", port=port)
    client.connect()
    out = []
    try:
        for seq in range(1, parts + 1):
            t0 = time.monotonic_ns()
            client.write_registers(0, [seq, 1])
            while not client.read_input_registers(0, count=3).registers[1] & VALID:
                time.sleep(0.0005)
            out.append((time.monotonic_ns() - t0) / 1e6)
            client.write_coil(1, True)
    finally:
        client.close()
        run.stop()
        agent.close()
    return out


def bench_opcua(work: Path, bundle: Path, parts: int) -> list[float]:
    from asyncua import Client, ua

    port = free_port()
    url, ns = f"opc.tcp://127.0.0.1:{port}/edge-agent/", "urn:edgectl:edge-agent"
    agent = _agent(work, bundle, "opcua", trigger="opcua", actuator={"type": "none"},
                   plc={"opcua": {"endpoint": url}})
    run = AgentThread(agent).start()

    async def drive() -> list[float]:
        out = []
        async with Client(url, timeout=10) as client:
            idx = await client.get_namespace_index(ns)
            node = {
                k: await client.nodes.objects.get_child([f"{idx}:Station", f"{idx}:{k}"])
                for k in ("PartSeq", "Trigger", "ResultValid", "ResultAck")
            }
            for seq in range(1, parts + 1):
                t0 = time.monotonic_ns()
                await node["PartSeq"].write_value(ua.Variant(seq, ua.VariantType.UInt16))
                await node["Trigger"].write_value(True)
                while not await node["ResultValid"].read_value():
                    await asyncio.sleep(0.0005)
                out.append((time.monotonic_ns() - t0) / 1e6)
                await node["ResultAck"].write_value(True)
                while await node["ResultValid"].read_value():
                    await asyncio.sleep(0.0005)
        return out

    try:
        return asyncio.run(drive())
    finally:
        run.stop()
        agent.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", type=int, default=300)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "plc.md"))
    args = ap.parse_args(argv)
    rows: dict[str, dict[str, float]] = {}
    notes = []
    with tempfile.TemporaryDirectory(prefix="bench-plc-") as tmp:
        work = Path(tmp)
        bundle = make_bundle(work / "bundle")
        rows["gpio"] = percentiles(bench_gpio(work, bundle, args.parts))
        rows["modbus"] = percentiles(bench_modbus(work, bundle, args.parts))
        rows["opcua"] = percentiles(bench_opcua(work, bundle, args.parts))
        if find("mosquitto"):
            broker = Mosquitto(work / "broker").start()
            try:
                rows["mqtt"] = percentiles(bench_gpio(work, bundle, args.parts, broker.port))
            finally:
                broker.stop()
        else:
            notes.append("mqtt: mosquitto not installed, row skipped")
    cpu = f"{cpu_model()} ({os.cpu_count()} cores)"
    if args.json:
        print(json.dumps({"cpu": cpu, "parts": args.parts, "rows": rows, "notes": notes}))
    base = rows["gpio"]["p50"] or 1.0
    lines = [
        "# PLC backends: trigger → ResultValid latency",
        "",
        f"`benchmarks/bench_plc.py --parts {args.parts}`, one run, "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}, CPU: {cpu}. Same agent and tiny model "
        "for every row; parts one at a time. Ratios are to GPIO's p50 in this run.",
        "",
        "| backend | result valid = | n | p50 ms | p95 ms | p99 ms | p50 / gpio p50 |",
        "|---|---|---|---|---|---|---|",
    ]
    what = {
        "gpio": "decision committed, pulse scheduled",
        "modbus": "FC4 poll sees ResultValid",
        "opcua": "client read sees ResultValid",
        "mqtt": "subscriber gets the decision",
    }
    for name, q in rows.items():
        lines.append(
            f"| {name} | {what[name]} | {q['n']} | {q['p50']:.2f} | {q['p95']:.2f} | "
            f"{q['p99']:.2f} | {q['p50'] / base:.2f}× |"
        )
    lines += [""] + [f"- {n}" for n in notes]
    text = "\n".join(lines).rstrip() + "\n"
    Path(args.out).write_text(text)
    if not args.json:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
