"""Modbus TCP (pymodbus 3): the agent's server, and a client writing results to a PLC.

Server register map (device id: any; addresses 0-based; docs/plc.md has the table):

- coils (FC1/5/15): 0 Trigger, 1 ResultAck. Both are commands: the agent clears them as
  it takes them (a PLC reads back 0 = taken).
- discrete inputs (FC2): 0 Ready, 1 Busy, 2 ResultValid, 3 Pass, 4 Fail, 5 Fault.
- holding registers (FC3/6/16): 0 PartSeq (the PLC's number for the part this command
  triggers; used once, reads back 0; 0 = the agent numbers it), 1 Command (bit 0 trigger,
  bit 1 result ack, both = ack then trigger; reads back 0), 2 AckSeq (the ResultSeq the
  ack is for: an ack for another number is refused and counted, so a PLC acting on a
  stale read cannot ack a result it has not seen; 0 = unchecked). One FC16 write of
  ``[seq, 3, result_seq]`` to 0..2 acks a result and triggers the next part.
- input registers (FC4): 0 Heartbeat, 1 Status (the discrete inputs as bits 0..5),
  2 ResultSeq, 3 ClassId, 4 Confidence ×10000, 5 ResultFault, 6 StationFault, 7 InFlight,
  8 ResultCount, 9 LastTriggerSeq, 10 Queued (results waiting behind the one shown).

Results are shown one at a time, oldest first: ResultValid stays set until the PLC acks,
then the next one is shown. The ack is the delivery the journal records (``confirms``): the
reply to the PLC's ack write is sent once the part's completed record is committed, so a
PLC whose ack write succeeded holds a result the journal holds too. The client
(``results: [modbus-client]``) writes each result as one FC16 block into the PLC's holding
registers at ``plc_base``: ResultSeq, ClassId,
Confidence ×10000, ResultFault, Flags (bit 0 Pass, 1 Fail, 2 Fault), ResultCount (steps
by one per result: the PLC's "new result" edge), Heartbeat, StationFault.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from typing import Any

from edge_agent.backoff import backoff_delay
from edge_agent.plc import require
from edge_agent.plc.handshake import FAULT_NONE, Result

log = logging.getLogger(__name__)

COIL_TRIGGER, COIL_ACK = 0, 1
HR_PART_SEQ, HR_COMMAND, HR_ACK_SEQ = 0, 1, 2
CMD_TRIGGER, CMD_ACK = 1, 2
DI_BITS = ("ready", "busy", "result_valid", "pass", "fail", "fault")
IR_NAMES = (
    "heartbeat", "status", "result_seq", "class_id", "confidence", "result_fault",
    "station_fault", "in_flight", "result_count", "last_trigger_seq", "queued",
)
OUTBOX_MAX = 1000
RETRY_FIRST_S, RETRY_MAX_S = 0.1, 5.0   # the client's reconnect backoff (edge_agent.backoff)


def confidence_word(p: float) -> int:
    return max(0, min(10000, round(p * 10000)))


class ModbusServer:
    """The agent as a Modbus TCP server (the map above) on ``bind:port``."""

    name = "modbus"
    confirms = True  # the PLC's ack is the delivery (station.delivered)

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.station: Any = None
        self._state: dict[str, Any] = {}
        self._outbox: collections.deque[Result] = collections.deque()
        self._lock = threading.Lock()
        self.result_count = 0
        self.dropped = 0
        self.part_seq = 0
        self.last_trigger_seq = 0
        self.acks_refused = 0  # acks whose AckSeq was not the shown result
        self._replying = 0  # requests being answered (event loop thread)
        self.ack_seq = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None

    # -- the register image ---------------------------------------------------------------

    def bits(self) -> dict[str, bool]:
        st = self._state
        with self._lock:
            head = self._outbox[0] if self._outbox else None
        return {
            "ready": bool(st.get("ready")),
            "busy": bool(st.get("busy")),
            "result_valid": head is not None,
            "pass": head is not None and head.passed,
            "fail": head is not None and not head.passed,
            "fault": bool(st.get("fault")) or (head is not None and head.fault != FAULT_NONE),
        }

    def inputs(self) -> list[int]:
        bits = self.bits()
        with self._lock:
            head = self._outbox[0] if self._outbox else None
            queued = max(0, len(self._outbox) - 1)
        status = sum(1 << i for i, k in enumerate(DI_BITS) if bits[k])
        st = self._state
        return [
            int(st.get("heartbeat", 0)) & 0xFFFF,
            status,
            head.seq if head else 0,
            head.class_id if head else 0,
            confidence_word(head.confidence) if head else 0,
            head.fault if head else 0,
            int(st.get("fault", 0)),
            min(int(st.get("in_flight", 0)), 0xFFFF),
            self.result_count & 0xFFFF,
            self.last_trigger_seq,
            min(queued, 0xFFFF),
        ]

    def _trigger(self, seq: int, acked: list[bool]) -> None:
        """A trigger command; the reply waits until the part's record is written
        (``acked``), so a PLC whose trigger write succeeded has a part the journal has."""
        self.last_trigger_seq = self.station.on_trigger(seq or None)
        acked.append(True)

    def _ack(self, acked: list[bool], seq: int = 0) -> None:
        """Ack the shown result; with ``seq`` only if it is the shown one. The reply waits
        until the completed record is written (``acked``)."""
        with self._lock:
            if not self._outbox:
                return
            if seq and self._outbox[0].seq != seq:
                self.acks_refused += 1
                log.warning("modbus: ack for part %d refused: the result shown is part %d",
                            seq, self._outbox[0].seq)
                return
            result = self._outbox.popleft()
        self.station.delivered(result)
        acked.append(True)

    def drain(self, timeout_s: float) -> list[Result]:
        """Wait up to ``timeout_s`` for the PLC to ack what is shown (and for the replies to
        those acks to be written: an ack the journal holds reaches the PLC); take what is
        left."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            with self._lock:
                if not self._outbox and not self._replying:
                    break
            time.sleep(0.01)
        time.sleep(0.05)  # the last reply leaves the event loop before the server closes
        with self._lock:
            left = list(self._outbox)
            self._outbox.clear()
        return left

    async def _action(
        self,
        fc: int,
        start: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[Any] | None,
    ) -> None:
        """pymodbus calls this on every request, before it reads or writes the block. The
        reply to a trigger or an ack waits until the part's record (opened, or completed)
        is written."""
        acked: list[bool] = []
        self._replying += 1  # a stop waits for this reply (drain)
        try:
            self._command(fc, address, registers, values, acked)
            if acked:
                # Written here, in this thread: the reply leaves right after the commit
                # (blocking this loop for one commit, as the PLC waits for it anyway).
                self.station.write_records()
        finally:
            self._replying -= 1
        return None

    def _command(self, fc: int, address: int, registers: list[int],
                 values: list[Any] | None, acked: list[bool]) -> None:
        if fc in (5, 15) and values:
            for k, v in enumerate(values):
                bit = address + k
                if v and bit in (COIL_TRIGGER, COIL_ACK):
                    values[k] = False  # a command: taken, reads back 0
                    if bit == COIL_TRIGGER:
                        self._trigger(self.part_seq, acked)
                        self.part_seq = 0
                    else:
                        self._ack(acked)
        elif fc in (6, 16) and values:
            # The whole write first (PartSeq, AckSeq), then the command it carries.
            command = 0
            for k, v in enumerate(values):
                reg = address + k
                if reg == HR_PART_SEQ:
                    self.part_seq = int(v)
                elif reg == HR_ACK_SEQ:
                    self.ack_seq = int(v)
                elif reg == HR_COMMAND and v:
                    command = int(v)
                    values[k] = 0  # a command: taken, reads back 0
            if command & CMD_ACK:
                self._ack(acked, self.ack_seq)
                self.ack_seq = 0
            if command & CMD_TRIGGER:
                self._trigger(self.part_seq, acked)
                self.part_seq = 0  # one number, one part (a stale number would repeat)
            for k in range(len(values)):
                if command and address + k in (HR_PART_SEQ, HR_ACK_SEQ):
                    values[k] = 0  # used: reads back 0
        elif fc == 2:
            b = self.bits()
            registers[0] = sum(1 << i for i, k in enumerate(DI_BITS) if b[k])
        elif fc == 4:
            registers[: len(IR_NAMES)] = self.inputs()

    # -- Backend -------------------------------------------------------------------------

    def start(self, station: Any) -> None:
        require("pymodbus")
        from pymodbus.server import ModbusTcpServer
        from pymodbus.simulator import DataType, SimData, SimDevice

        self.station = station
        device = SimDevice(
            0,
            simdata=(
                [SimData(0, count=16, values=False, datatype=DataType.BITS)],
                [SimData(0, count=16, values=False, datatype=DataType.BITS)],
                [SimData(0, count=16, values=0, datatype=DataType.REGISTERS)],
                [SimData(0, count=16, values=0, datatype=DataType.REGISTERS)],
            ),
            action=self._action,
        )
        started = threading.Event()
        error: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)

            async def main() -> None:
                self._server = ModbusTcpServer(device, address=(self.cfg.bind, self.cfg.port))
                try:
                    await self._server.serve_forever(background=True)
                except BaseException as err:  # noqa: BLE001
                    error.append(err)
                    return
                finally:
                    started.set()
                await self._server.serving

            try:
                loop.run_until_complete(main())
            finally:
                started.set()
                loop.close()

        self._thread = threading.Thread(target=run, name="modbus-server", daemon=True)
        self._thread.start()
        started.wait(10)
        if error or not started.is_set():
            self.close()
            why = error[0] if error else "timed out"
            raise OSError(f"cannot listen on {self.cfg.bind}:{self.cfg.port}: {why}")
        log.info("modbus: server on %s:%s", self.cfg.bind, self.cfg.port)

    def result(self, result: Result) -> None:
        with self._lock:
            self._outbox.append(result)
            self.result_count += 1
            dropped = None
            if len(self._outbox) > OUTBOX_MAX:  # the PLC stopped acking: keep the newest
                dropped = self._outbox.popleft()
                self.dropped += 1
        if dropped is not None:
            self.station.undelivered(dropped)

    def state(self, state: dict[str, Any]) -> None:
        self._state = state

    def decision(self, rec: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        loop, server = self._loop, self._server
        if loop is not None and server is not None and loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(server.shutdown(), loop).result(5)
            except Exception:  # noqa: BLE001
                log.debug("modbus: shutdown", exc_info=True)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


class ModbusClient:
    """Writes each result into a PLC's holding registers (the block in the docstring)."""

    name = "modbus-client"

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.station: Any = None
        self._queue: collections.deque[list[int]] = collections.deque(maxlen=OUTBOX_MAX)
        self._cv = threading.Condition()
        self._state: dict[str, Any] = {}
        self._count = 0
        self._stop = False
        self._client: Any = None
        self._thread: threading.Thread | None = None
        self.written = 0

    def start(self, station: Any) -> None:
        require("pymodbus")
        from pymodbus.client import ModbusTcpClient

        self.station = station
        self._client = ModbusTcpClient(
            self.cfg.plc_host, port=self.cfg.plc_port, timeout=self.cfg.timeout_s, retries=0
        )
        self._thread = threading.Thread(target=self._run, name="modbus-client", daemon=True)
        self._thread.start()

    def result(self, result: Result) -> None:
        self._count = (self._count + 1) & 0xFFFF
        flags = (1 if result.passed else 2) | (4 if result.fault else 0)
        block = [result.seq, result.class_id, confidence_word(result.confidence), result.fault,
                 flags, self._count]
        with self._cv:
            self._queue.append(block)
            self._cv.notify()

    def state(self, state: dict[str, Any]) -> None:
        self._state = state

    def decision(self, rec: dict[str, Any]) -> None:
        pass

    def _run(self) -> None:
        failures = 0
        last_beat = -1
        while True:
            with self._cv:
                if self._stop and not self._queue:
                    return
                if not self._queue:
                    self._cv.wait(0.1)
                block = self._queue[0] if self._queue else None
            try:
                if not self._client.connected and not self._client.connect():
                    raise ConnectionError(
                        f"cannot connect to {self.cfg.plc_host}:{self.cfg.plc_port}"
                    )
                kw = {"device_id": self.cfg.plc_device_id}
                if block is not None:
                    rr = self._client.write_registers(self.cfg.plc_base, block, **kw)
                    if rr.isError():
                        raise ConnectionError(f"write refused: {rr}")
                    with self._cv:
                        if self._queue and self._queue[0] is block:
                            self._queue.popleft()
                    self.written += 1
                beat = int(self._state.get("heartbeat", 0))
                if beat != last_beat:
                    words = [beat & 0xFFFF, int(self._state.get("fault", 0))]
                    self._client.write_registers(self.cfg.plc_base + 6, words, **kw)
                    last_beat = beat
                self.station.link_ok(self.name)
                failures = 0
            except Exception as err:  # noqa: BLE001 - a PLC away: fault, retry
                self.station.link_fault(self.name, f"{self.cfg.plc_host}: {err}")
                self._client.close()
                if self._stop:
                    return
                failures += 1
                time.sleep(backoff_delay(failures, RETRY_FIRST_S, RETRY_MAX_S))

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(timeout=3)
        if self._client is not None:
            self._client.close()
