"""OPC UA against a real asyncua client on 127.0.0.1: the client drives the agent's server
through 200 parts by the documented namespace URI and browse names and matches every
result to its part."""

from __future__ import annotations

import asyncio

import pytest
from asyncua import Client, ua
from devicekit import write_config
from netkit import free_port
from plckit import AgentThread, PartCamera, busy_port

from edge_agent.config import load_config
from edge_agent.plc.handshake import FAULT_NONE
from edge_agent.service import Agent
from edge_common.errors import HardwareError

NS = "urn:edgectl:test-line"
N = 200


async def _drive(url: str) -> list[tuple[int, bool, int, int, float]]:
    out = []
    async with Client(url, timeout=10) as client:
        idx = await client.get_namespace_index(NS)

        async def node(name):
            return await client.nodes.objects.get_child([f"{idx}:Station", f"{idx}:{name}"])

        n = {k: await node(k) for k in (
            "Ready", "Trigger", "PartSeq", "ResultValid", "ResultAck", "Pass", "Fail",
            "ResultSeq", "ClassId", "Confidence", "FaultCode", "Heartbeat",
        )}
        assert await n["Ready"].read_value() is True
        for i in range(1, N + 1):
            seq = 500 + i
            await n["PartSeq"].write_value(ua.Variant(seq, ua.VariantType.UInt16))
            await n["Trigger"].write_value(True)
            for _ in range(10000):
                if await n["ResultValid"].read_value():
                    break
                await asyncio.sleep(0.001)
            else:
                raise AssertionError(f"no result for part {seq}")
            vals = await client.read_values(
                [n["ResultSeq"], n["Pass"], n["Fail"], n["ClassId"], n["FaultCode"],
                 n["Confidence"]]
            )
            rseq, passed, failed, class_id, fault, conf = vals
            assert rseq == seq and passed is (not failed)
            out.append((rseq, passed, class_id, fault, conf))
            await n["ResultAck"].write_value(True)
            for _ in range(10000):  # the next ResultValid only after our ack
                if not await n["ResultValid"].read_value():
                    break
                await asyncio.sleep(0.001)
    return out


def test_an_opcua_client_drives_200_parts_through_the_agent(tmp_path, tiny_bundle):
    port = free_port()
    url = f"opc.tcp://127.0.0.1:{port}/edge-agent/"
    cfg = load_config(
        write_config(
            tmp_path / "agent.yaml",
            tiny_bundle,
            trigger="opcua",
            actuator={"type": "none"},
            # a loaded CI box must not turn a slow part into a timeout: that has its own test
            plc={"opcua": {"endpoint": url, "namespace": NS}, "result_deadline_ms": 10000},
        ),
        env={},
    )
    agent = Agent(cfg, camera=PartCamera(every=5))
    run = AgentThread(agent).start()
    try:
        results = asyncio.run(_drive(url))
    finally:
        summary = run.stop()
        agent.close()
    assert [r[0] for r in results] == [500 + i for i in range(1, N + 1)]
    for i, (_, passed, class_id, fault, conf) in enumerate(results, start=1):
        reject = i % 5 == 0
        assert passed is not reject and class_id == (1 if reject else 0)
        assert fault == FAULT_NONE and 0.5 < conf <= 1.0
    assert summary["items"] == N and summary["rejects"] == N // 5


def test_an_opcua_endpoint_that_cannot_be_bound_stops_the_start(tmp_path, tiny_bundle):
    with busy_port() as port:
        cfg = load_config(
            write_config(
                tmp_path / "agent.yaml", tiny_bundle, trigger="opcua",
                actuator={"type": "none"},
                plc={"opcua": {"endpoint": f"opc.tcp://127.0.0.1:{port}/x/"}},
            ),
            env={},
        )
        agent = Agent(cfg, camera=PartCamera())
        try:
            with pytest.raises(HardwareError, match="opcua"):
                agent.open()
            assert "plc" in agent.snapshot()["faults"]
        finally:
            agent.actuator.stop()
            agent.close()
