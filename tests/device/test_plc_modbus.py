"""Modbus TCP against a real pymodbus client on 127.0.0.1: the PLC drives the agent's
server through 200 parts and matches every result to its part; a result deadline missed
is a Fail with fault 1; a port that cannot be bound stops the start, output safe."""

from __future__ import annotations

import time

import pytest
from devicekit import write_config
from gpiozero.pins.mock import MockFactory
from netkit import free_port
from plckit import AgentThread, PartCamera, busy_port
from pymodbus.client import ModbusTcpClient

from edge_agent.config import load_config
from edge_agent.plc.handshake import FAULT_NONE, FAULT_STOPPED, FAULT_TIMEOUT
from edge_agent.service import Agent
from edge_common.errors import HardwareError

READY, BUSY, VALID, PASS, FAIL, FAULT = (1 << i for i in range(6))


def _config(tmp_path, tiny_bundle, port, **plc):
    return load_config(
        write_config(
            tmp_path / "agent.yaml",
            tiny_bundle,
            trigger="modbus",
            actuator={"type": "none"},
            plc={"modbus": {"port": port}, **plc},
        ),
        env={},
    )


def _result(client, seq, timeout=10.0):
    """Poll the input registers until the result for ``seq`` is valid (what a PLC does)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ir = client.read_input_registers(0, count=11).registers
        if ir[1] & VALID:
            assert ir[2] == seq, f"result for part {ir[2]} while waiting for {seq}"
            return ir
        time.sleep(0.0005)
    raise AssertionError(f"no result for part {seq}")


def test_a_plc_drives_200_parts_through_the_modbus_server(tmp_path, tiny_bundle):
    port = free_port()
    # a loaded CI box must not turn a slow part into a timeout: that has its own test
    cfg = _config(tmp_path, tiny_bundle, port, result_deadline_ms=10000)
    agent = Agent(cfg, camera=PartCamera(every=3))
    run = AgentThread(agent).start()
    client = ModbusTcpClient("127.0.0.1", port=port)
    assert client.connect()
    try:
        assert client.read_discrete_inputs(0, count=6).bits[0]  # Ready
        beat = client.read_input_registers(0, count=1).registers[0]
        for n in range(1, 201):
            seq = 1000 + n  # the PLC's own part numbers
            if n % 2:
                client.write_registers(0, [seq, 1])  # PartSeq + Command=trigger (one FC16)
            else:
                client.write_register(0, seq)
                client.write_coil(0, True)  # the Trigger coil
            ir = _result(client, seq)
            reject = n % 3 == 0
            assert bool(ir[1] & FAIL) is reject and bool(ir[1] & PASS) is not reject
            assert ir[5] == FAULT_NONE and ir[3] == (1 if reject else 0)  # class id
            assert 5000 < ir[4] <= 10000  # confidence ×10000
            assert ir[9] == seq  # the number the agent latched
            if n % 2:
                client.write_coil(1, True)  # ResultAck
            else:
                client.write_register(1, 2)  # Command=ack
            assert not client.read_input_registers(1, count=1).registers[0] & VALID
        assert client.read_coils(0, count=2).bits[:2] == [False, False]  # commands taken
        end = time.monotonic() + 20      # the heartbeat moves (however loaded the machine)
        while client.read_input_registers(0, count=1).registers[0] == beat:
            assert time.monotonic() < end, "the heartbeat register never changed"
            time.sleep(0.05)
    finally:
        client.close()
        summary = run.stop()
    assert summary["items"] == 200 and summary["rejects"] == 66
    recs = [agent.journal.get(i) for i in agent.journal.ids()]
    assert sorted(r["plc"]["seq"] for r in recs) == list(range(1001, 1201))
    assert not any(r["plc"]["late"] for r in recs)
    agent.close()


def test_a_missed_result_deadline_is_a_fail_with_fault_code_1(tmp_path, tiny_bundle):
    port = free_port()
    cfg = _config(tmp_path, tiny_bundle, port, result_deadline_ms=50)
    agent = Agent(cfg, camera=PartCamera(every=1000, delay_s=0.15))  # green but too slow
    run = AgentThread(agent).start()
    client = ModbusTcpClient("127.0.0.1", port=port)
    assert client.connect()
    try:
        client.write_registers(0, [7, 1])
        ir = _result(client, 7)
        assert ir[1] & FAIL and ir[1] & FAULT and ir[5] == FAULT_TIMEOUT
        client.write_coil(1, True)
        time.sleep(0.3)  # the late verdict arrives: no second result for part 7
        assert not client.read_input_registers(1, count=1).registers[0] & VALID
    finally:
        client.close()
        run.stop()
    (rec,) = [agent.journal.get(i) for i in agent.journal.ids()]
    assert rec["plc"]["seq"] == 7 and rec["plc"]["late"] is True and rec["deadline_missed"]
    assert rec["plc"].get("result", "fail") == "fail"  # what the PLC got: the timeout's Fail
    assert agent.station.hs.counts["timeouts"] == 1
    agent.close()


def test_parts_undecided_at_stop_get_a_fail(tmp_path, tiny_bundle):
    port = free_port()
    agent = Agent(
        _config(tmp_path, tiny_bundle, port, result_deadline_ms=5000),
        camera=PartCamera(delay_s=0.5),
    )
    run = AgentThread(agent).start()
    client = ModbusTcpClient("127.0.0.1", port=port)
    assert client.connect()
    results = []
    agent.station.backends.append(_Recorder(results))
    try:
        client.write_registers(0, [1, 1])
        client.write_registers(0, [2, 1])  # queued behind part 1
        time.sleep(0.1)
    finally:
        client.close()
        run.stop()
    assert [r.seq for r in results] == [1, 2]
    assert results[1].fault == FAULT_STOPPED and not results[1].passed
    agent.close()


class _Recorder:
    name = "recorder"

    def __init__(self, out):
        self.out = out

    def result(self, r):
        self.out.append(r)

    def state(self, st):
        pass

    def decision(self, rec):
        pass

    def close(self):
        pass


def test_a_port_that_cannot_be_bound_stops_the_start_with_the_output_safe(
    tmp_path, tiny_bundle
):
    with busy_port() as port:
        cfg = load_config(
            write_config(
                tmp_path / "agent.yaml", tiny_bundle, trigger="modbus",
                plc={"modbus": {"port": port}},
            ),
            env={},
        )
        factory = MockFactory()
        agent = Agent(cfg, pin_factory=factory, camera=PartCamera())
        try:
            with pytest.raises(HardwareError, match="modbus"):
                agent.open()
            assert "plc" in agent.snapshot()["faults"]
            assert factory.pin(17).state is False  # reject output at its safe level
        finally:
            agent.actuator.stop()
            agent.close()


def test_the_client_writes_every_result_into_a_plcs_registers(tmp_path, tiny_bundle):
    """A pymodbus server plays the PLC; the agent (interval trigger, own part numbers)
    writes each result block there, in order, with a ResultCount that steps by one."""
    import asyncio
    import threading

    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    blocks: list[list[int]] = []

    async def action(fc, start, address, count, registers, values):
        if fc == 16 and address == 100 and values and len(values) == 6:
            blocks.append(list(values))
        return None

    port = free_port()
    device = SimDevice(
        1, simdata=[SimData(0, count=200, values=0, datatype=DataType.REGISTERS)], action=action
    )
    loop = asyncio.new_event_loop()
    up = threading.Event()
    holder = []

    async def start():
        holder.append(ModbusTcpServer(device, address=("127.0.0.1", port)))
        await holder[0].serve_forever(background=True)

    def serve():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        up.set()
        loop.run_forever()

    threading.Thread(target=serve, daemon=True).start()
    assert up.wait(10)
    cfg = load_config(
        write_config(
            tmp_path / "agent.yaml", tiny_bundle,
            trigger={"type": "interval", "rate_hz": 100},
            actuator={"type": "none"},
            results=["modbus-client"],
            plc={"modbus": {"plc_host": "127.0.0.1", "plc_port": port, "plc_base": 100}},
        ),
        env={},
    )
    agent = Agent(cfg, camera=PartCamera(every=2))
    try:
        agent.run(max_items=40)
    finally:
        agent.close()
        asyncio.run_coroutine_threadsafe(holder[0].shutdown(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
    assert [b[0] for b in blocks] == list(range(1, 41))  # ResultSeq, in order
    assert [b[5] for b in blocks] == list(range(1, 41))  # ResultCount
    for n, (_, class_id, conf, fault, flags, _) in enumerate(blocks, start=1):
        reject = n % 2 == 0
        assert flags == (2 if reject else 1) and fault == 0 and class_id == int(reject)
        assert conf > 5000
    assert "plc_modbus-client" not in agent.faults


def test_a_trigger_link_fault_fails_the_parts_in_flight(tmp_path, tiny_bundle):
    """The trigger's link faults (as a backend reports it) while a part waits: the part
    gets Fail with fault 5, new triggers too, the status shows it; recovery clears it."""
    port = free_port()
    agent = Agent(
        _config(tmp_path, tiny_bundle, port, result_deadline_ms=5000),
        camera=PartCamera(delay_s=1.0),  # part 1 is still undecided at the fault
    )
    run = AgentThread(agent).start()
    client = ModbusTcpClient("127.0.0.1", port=port)
    assert client.connect()
    try:
        client.write_registers(0, [1, 1])  # taken before the write returns
        agent.station.link_fault("modbus", "link lost (test)")
        ir = _result(client, 1)
        assert ir[1] & FAIL and ir[5] == 5 and ir[6] == 5  # result and station fault: link
        assert not ir[1] & READY
        assert agent.snapshot()["faults"]["plc_modbus"] == "link lost (test)"
        client.write_coil(1, True)
        agent.station.link_ok("modbus")
        client.write_registers(0, [2, 1])
        ir = _result(client, 2)
        assert ir[1] & PASS and ir[5] == 0
    finally:
        client.close()
        run.stop()
        agent.close()
    assert "plc_modbus" not in agent.faults

