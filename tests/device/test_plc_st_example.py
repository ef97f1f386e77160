"""docs/plc.md's Structured Text example, transcribed line by line, run against the real
agent over pymodbus (issue 37): 1,000 parts at scan times of 5, 10 and 20 ms, the master
modelled as the doc describes it (one FC16 write channel on a rising edge of ``xSend``,
one cyclic FC4 read every 1–2 scans, in either order within a bus cycle, so the program
often acts on a read taken before its own write). It must never lock up: every part gets
the agent's verdict before it reaches the rejector, and the program never flags a fault.

The transcription keeps the ST's names and order; ``test_the_transcribed_program_is_the_
doc's`` fails when the doc's program changes, so the two cannot drift apart."""

from __future__ import annotations

import hashlib
import os
import random
import re
import subprocess
import sys
import threading
import time

import pytest
from devicekit import ROOT, write_config
from netkit import free_port
from pymodbus.client import ModbusTcpClient

# sha256 of the ```iecst block of docs/plc.md this file transcribes.
ST_SHA256 = "a82607750d4e4481e33e1ec5e7c9f343da10f2aa4983dca134ce2a849cc8cce1"
PARTS = int(os.environ.get("EDGECTL_ST_PARTS", "1000"))


def doc_program() -> str:
    text = (ROOT / "docs" / "plc.md").read_text()
    m = re.search(r"```iecst\n(.*?)```", text, re.DOTALL)
    assert m, "docs/plc.md has no ```iecst block"
    return m.group(1)


class RTrig:
    def __init__(self) -> None:
        self.m = False
        self.Q = False

    def __call__(self, CLK: bool) -> None:  # noqa: N803 - the ST name
        self.Q = CLK and not self.m
        self.m = CLK


class Ton:
    def __init__(self) -> None:
        self.start: float | None = None
        self.Q = False

    def __call__(self, IN: bool, PT: float, now: float) -> None:  # noqa: N803
        if not IN:
            self.start, self.Q = None, False
            return
        if self.start is None:
            self.start = now
        self.Q = now - self.start >= PT


class PLC_Inspection:  # noqa: N801 - the ST program's name
    """docs/plc.md's program, one statement per line, same names and order."""

    def __init__(self) -> None:
        self.xPartAtCamera = self.xPartAtRejector = self.xReject = False
        self.awIn = [0] * 11
        self.awOut = [0] * 3
        self.xSend = False
        self.iStep = 0
        self.wNextSeq = 1
        self.aQueue = [0] * 16
        self.aVerdict = [0] * 16
        self.iHead = self.iTrig = self.iRes = self.iTail = 0
        self.xAck = False
        self.wAckSeq = self.wSentTrig = self.wSentAck = 0
        self.xFault = False
        self.rtCam, self.rtRej = RTrig(), RTrig()
        self.tonHeartbeat, self.tonConfirm = Ton(), Ton()
        self.wLastBeat = 0

    def scan(self, now: float) -> bool | None:
        """One scan; returns the rejector's decision when a part reached it (True = reject)."""
        rejected = None
        # 1. a part at the camera: number it and queue it
        self.rtCam(CLK=self.xPartAtCamera)
        if self.rtCam.Q:
            self.aQueue[self.iTail] = self.wNextSeq
            self.aVerdict[self.iTail] = 0
            self.iTail = (self.iTail + 1) % 16
            self.wNextSeq = (self.wNextSeq + 1) & 0xFFFF
            if self.wNextSeq == 0:
                self.wNextSeq = 1
        # 2. a result for the oldest part waiting for one (FIFO): take it, ack it next
        if not self.xAck and self.iRes != self.iTrig and (self.awIn[1] & 0x0004) != 0:
            if self.awIn[2] == self.aQueue[self.iRes]:
                self.aVerdict[self.iRes] = 1 if (self.awIn[1] & 0x0008) != 0 else 2
                self.wAckSeq = self.awIn[2]
                self.xAck = True
                self.iRes = (self.iRes + 1) % 16
            elif self.awIn[2] != self.wSentAck:
                self.xFault = True
        # 3. one write in flight: write, drop xSend for a scan, wait until the read shows it
        if self.iStep == 0:
            if self.xAck or self.iTrig != self.iTail:
                self.awOut[0] = 0
                self.awOut[1] = 0
                self.awOut[2] = 0
                if self.xAck:
                    self.awOut[1] = 2
                    self.awOut[2] = self.wAckSeq
                    self.wSentAck = self.wAckSeq
                    self.xAck = False
                if self.iTrig != self.iTail:
                    self.awOut[0] = self.aQueue[self.iTrig]
                    self.awOut[1] = self.awOut[1] | 1
                    self.wSentTrig = self.aQueue[self.iTrig]
                    self.iTrig = (self.iTrig + 1) % 16
                self.xSend = True
                self.iStep = 1
        elif self.iStep == 1:
            self.xSend = False
            self.iStep = 2
        elif self.iStep == 2:
            if (((self.awOut[1] & 1) == 0 or self.awIn[9] == self.wSentTrig)
                    and ((self.awOut[1] & 2) == 0 or self.awIn[2] != self.wSentAck
                         or (self.awIn[1] & 0x0004) == 0)):
                self.iStep = 0
            elif self.tonConfirm.Q:
                self.xFault = True
                self.iStep = 0
        self.tonConfirm(IN=self.iStep == 2, PT=1.0, now=now)
        # 4. heartbeat watchdog: no step for 2 s = agent gone
        self.tonHeartbeat(IN=self.awIn[0] == self.wLastBeat, PT=2.0, now=now)
        self.wLastBeat = self.awIn[0]
        # 5. the part at the rejector: reject unless it has a Pass (default to reject)
        self.rtRej(CLK=self.xPartAtRejector)
        if self.rtRej.Q and self.iHead != self.iTail:
            self.xReject = (self.aVerdict[self.iHead] != 1) or self.tonHeartbeat.Q or self.xFault
            rejected = self.xReject
            self.verdicts.append(self.aVerdict[self.iHead])
            if self.iTrig == self.iHead:
                self.iTrig = (self.iTrig + 1) % 16
                self.iRes = self.iTrig
            self.iHead = (self.iHead + 1) % 16
        return rejected

    verdicts: list[int]


def run_line(port: int, scan_ms: float, parts: int, seed: int) -> dict:
    """The PLC's scan loop with its Modbus master and a conveyor: a part every 5 scans at
    the camera, at the rejector 20 scans later."""
    rng = random.Random(seed)
    plc = PLC_Inspection()
    plc.verdicts = []
    client = ModbusTcpClient("127.0.0.1", port=port)
    assert client.connect()
    scan = scan_ms / 1000.0
    period, travel = 5, 20  # scans
    last_send = False
    read_every = 1
    n = 0
    t0 = time.monotonic()
    try:
        while len(plc.verdicts) < parts:
            now = time.monotonic()
            # the conveyor: photo-eyes high for two scans per part
            plc.xPartAtCamera = n % period in (0, 1) and n // period < parts
            k = n - travel
            plc.xPartAtRejector = k >= 0 and k % period in (0, 1) and k // period < parts
            plc.scan(now)
            # the master's bus cycle: the write on a rising edge of xSend, the cyclic read
            # every 1-2 scans; within a cycle either may go first
            write = plc.xSend and not last_send
            last_send = plc.xSend
            read = n % read_every == 0
            if read:
                read_every = rng.choice((1, 2))
            ops = [op for op, on in (("write", write), ("read", read)) if on]
            rng.shuffle(ops)
            for op in ops:
                if op == "write":
                    client.write_registers(0, list(plc.awOut))
                else:
                    plc.awIn = list(client.read_input_registers(0, count=11).registers)
            n += 1
            if time.monotonic() - t0 > parts * period * scan * 3 + 60:
                raise AssertionError(f"locked up after {len(plc.verdicts)} parts")
            time.sleep(max(0.0, now + scan - time.monotonic()))
    finally:
        client.close()
    return {"verdicts": plc.verdicts, "fault": plc.xFault, "scans": n}


def test_the_transcribed_program_is_the_docs():
    """The transcription above follows docs/plc.md's program: change one, change both
    (and this hash: sha256 of the ```iecst block)."""
    digest = hashlib.sha256(doc_program().encode()).hexdigest()
    assert digest == ST_SHA256, f"docs/plc.md's ST changed: re-transcribe it, then set {digest}"


@pytest.mark.parametrize("scans", [(5.0, 10.0, 20.0)], ids=["5-10-20ms"])
def test_the_docs_st_program_runs_1000_parts_without_locking_up(tmp_path, tiny_bundle, scans):
    """The three scan times at once (three agents, three PLCs), 1,000 parts each."""
    agents, ports = [], []
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        for scan_ms in scans:
            port = free_port()
            folder = tmp_path / f"scan{scan_ms:g}"
            folder.mkdir()
            cfg = write_config(folder / "agent.yaml", tiny_bundle, trigger="modbus",
                               actuator={"type": "none"}, samples={"enabled": False},
                               plc={"modbus": {"port": port},
                                    "result_deadline_ms": 10 * scan_ms})
            agents.append(subprocess.Popen(
                [sys.executable, "-m", "edge_agent", "run", "--config", str(cfg)],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                text=True))
            ports.append(port)
        for port, agent in zip(ports, agents, strict=True):
            deadline = time.monotonic() + 60
            while True:
                assert agent.poll() is None, agent.stderr.read()
                try:
                    c = ModbusTcpClient("127.0.0.1", port=port)
                    if c.connect() and c.read_discrete_inputs(0, count=1).bits[0]:
                        c.close()
                        break
                    c.close()
                except Exception:  # noqa: BLE001 - not up yet
                    pass
                assert time.monotonic() < deadline, "agent did not start"
                time.sleep(0.1)
        results: dict[float, dict] = {}
        errors: list[BaseException] = []

        def line(scan_ms: float, port: int) -> None:
            try:
                results[scan_ms] = run_line(port, scan_ms, PARTS, seed=int(scan_ms))
            except BaseException as err:  # noqa: BLE001 - re-raised below
                errors.append(err)

        threads = [threading.Thread(target=line, args=(s, p)) for s, p in zip(scans, ports,
                                                                              strict=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
    finally:
        for agent in agents:
            agent.terminate()
            agent.wait(timeout=60)
            agent.stderr.close()
    for scan_ms in scans:
        r = results[scan_ms]
        assert len(r["verdicts"]) == PARTS
        assert not r["fault"], f"{scan_ms} ms: the program flagged the agent out of order"
        unanswered = r["verdicts"].count(0)
        assert unanswered == 0, f"{scan_ms} ms: {unanswered} parts reached the rejector " \
                                "without the agent's verdict"
