"""The simulated station with the PLC example config (examples/agent-plc.yaml): trigger
modbus, results [mqtt, opcua], synthetic camera. `edge-agent validate-config` accepts it;
the agent runs it against a pymodbus client, a real mosquitto and an asyncua client.
A broker that is away only raises a fault; a missing library names the extra."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import paho.mqtt.client as mqtt
import pytest
import yaml
from asyncua import Client
from devicekit import ROOT, agent_cmd
from netkit import free_port
from plckit import AgentThread, Mosquitto
from pymodbus.client import ModbusTcpClient

from edge_agent.config import from_dict
from edge_agent.plc import make_backend
from edge_agent.service import Agent
from edge_common.errors import MissingExtraError

EXAMPLE = ROOT / "examples" / "agent-plc.yaml"
VALID, FAIL = 4, 16


def test_the_plc_example_validates_with_the_cli():
    out = subprocess.run(
        [*agent_cmd(), "validate-config", str(EXAMPLE)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "trigger modbus" in out.stdout and "results mqtt, opcua" in out.stdout


def _example(tmp_path, tiny_bundle, mqtt_port):
    data = yaml.safe_load(EXAMPLE.read_text())
    data["bundle"]["path"] = str(tiny_bundle)
    data["camera"]["size"] = 32
    data["journal"]["dir"] = str(tmp_path / "journal")
    data["plc"]["modbus"]["port"] = free_port()
    data["plc"]["opcua"]["endpoint"] = f"opc.tcp://127.0.0.1:{free_port()}/edge-agent/"
    data["plc"]["mqtt"]["port"] = mqtt_port
    data["plc"]["result_deadline_ms"] = 10000  # a loaded CI box; the deadline has its own test
    return from_dict(data, base=EXAMPLE.parent, env={})


async def _opcua_last_seq(url: str, ns: str) -> int:
    async with Client(url, timeout=10) as client:
        idx = await client.get_namespace_index(ns)
        node = await client.nodes.objects.get_child([f"{idx}:Station", f"{idx}:ResultSeq"])
        return int(await node.read_value())


def test_the_simulated_station_runs_modbus_in_mqtt_and_opcua_out(tmp_path, tiny_bundle):
    broker = Mosquitto(tmp_path / "broker").start()
    cfg = _example(tmp_path, tiny_bundle, broker.port)
    got: list[dict] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="mes")
    sub.on_message = lambda c, u, m: got.append(json.loads(m.payload))
    sub.connect("127.0.0.1", broker.port)
    sub.subscribe("plant/line1/line1-station3/decision", qos=1)
    sub.loop_start()
    agent = Agent(cfg)  # the config's own synthetic camera
    run = AgentThread(agent).start()
    plc = ModbusTcpClient("127.0.0.1", port=cfg.plc.modbus.port)
    assert plc.connect()
    try:
        for seq in range(1, 31):
            plc.write_registers(0, [seq, 1])
            end = time.monotonic() + 10
            while not (ir := plc.read_input_registers(0, count=11).registers)[1] & VALID:
                assert time.monotonic() < end
            assert ir[2] == seq and ir[5] == 0
            plc.write_coil(1, True)
        # OPC UA mirrors the results: the last one shown is part 30 (it has no ack there)
        # ... or an earlier one still waiting for its OPC UA ack: FIFO, never a later one.
        last = asyncio.run(_opcua_last_seq(cfg.plc.opcua.endpoint, cfg.plc.opcua.namespace))
        assert 1 <= last <= 30
        end = time.monotonic() + 10
        while len({d["id"] for d in got}) < 30 and time.monotonic() < end:
            time.sleep(0.05)
    finally:
        plc.close()
        summary = run.stop()
        sub.loop_stop()
        agent.close()
        broker.stop()
    assert summary["items"] == 30
    assert sorted(d["plc"]["seq"] for d in {d["id"]: d for d in got}.values()) == list(
        range(1, 31)
    )
    assert all(d["device_id"] == "line1-station3" for d in got)


def test_a_broker_away_raises_a_fault_and_the_plc_still_gets_its_results(
    tmp_path, tiny_bundle
):
    cfg = _example(tmp_path, tiny_bundle, free_port())  # nothing listens there
    cfg.results = ["mqtt"]
    agent = Agent(cfg)
    run = AgentThread(agent).start()
    plc = ModbusTcpClient("127.0.0.1", port=cfg.plc.modbus.port)
    assert plc.connect()
    try:
        plc.write_registers(0, [9, 1])
        end = time.monotonic() + 10
        while not (ir := plc.read_input_registers(0, count=11).registers)[1] & VALID:
            assert time.monotonic() < end
        assert ir[2] == 9
        end = time.monotonic() + 10
        while "plc_mqtt" not in agent.snapshot()["faults"]:
            assert time.monotonic() < end, "the broker's absence is not shown"
            time.sleep(0.05)
    finally:
        plc.close()
        run.stop()
        agent.close()
    status = json.loads((tmp_path / "journal" / "status.json").read_text())
    assert "plc_mqtt" in status["faults"] and status["plc"]["counts"]["results"] == 1


@pytest.mark.parametrize(("name", "module"), [
    ("modbus", "pymodbus"), ("opcua", "asyncua"), ("mqtt", "paho.mqtt.client"),
])
def test_a_missing_library_names_the_extra(monkeypatch, name, module):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    cfg = from_dict({"actuator": {"type": "none"}}, env={})
    backend = make_backend(name, cfg)
    with pytest.raises(MissingExtraError, match=r"edge-agent\[plc\]"):
        backend.start(object())
