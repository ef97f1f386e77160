"""OPC UA (asyncua): the agent's server, the handshake signals as variables of one object.

Node tree (namespace ``plc.opcua.namespace``, default ``urn:edgectl:edge-agent``; every
browse name in that namespace; docs/plc.md):

    Objects/
      Station/                 (object)
        Heartbeat    UInt16    steps every plc.heartbeat_ms
        Ready        Boolean   a trigger would be taken
        Busy         Boolean   a part waits for its verdict
        Trigger      Boolean   client writes True: a part is in place (reads back False once taken)
        PartSeq      UInt16    client writes the part's number before Trigger (0: ours)
        ResultValid  Boolean   the Result* variables hold the oldest unacknowledged result
        ResultAck    Boolean   client writes True: result read (the next one is shown)
        Pass, Fail   Boolean
        ResultSeq    UInt16    the part the result belongs to
        ClassId      UInt16    index into the bundle's labels (65535: none)
        Confidence   Float     top-1 probability, 0..1
        FaultCode    UInt16    the result's fault (0 none, 1 timeout, ... docs/plc.md)
        StationFault UInt16    the station's fault (0 none, 5 link, 3 stopped)

Only the trigger backend takes Trigger writes; as a plain result sink the object shows the
results and the state. Security: NoSecurity endpoints only, for a closed cell network; bind
the endpoint to that network's interface.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from typing import Any

from edge_agent.plc import require
from edge_agent.plc.handshake import Result

log = logging.getLogger(__name__)

# name: (variant type, writable by clients)
NODES = {
    "Heartbeat": ("UInt16", False),
    "Ready": ("Boolean", False),
    "Busy": ("Boolean", False),
    "Trigger": ("Boolean", True),
    "PartSeq": ("UInt16", True),
    "ResultValid": ("Boolean", False),
    "ResultAck": ("Boolean", True),
    "Pass": ("Boolean", False),
    "Fail": ("Boolean", False),
    "ResultSeq": ("UInt16", False),
    "ClassId": ("UInt16", False),
    "Confidence": ("Float", False),
    "FaultCode": ("UInt16", False),
    "StationFault": ("UInt16", False),
}
OUTBOX_MAX = 1000


class OpcUaServer:
    """The station object on an asyncua server in its own thread and event loop."""

    name = "opcua"

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.station: Any = None
        self.nodes: dict[str, Any] = {}
        self._ua: Any = None
        self._server: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._outbox: collections.deque[Result] = collections.deque()
        self._shown: Result | None = None
        self._last_state: dict[str, Any] = {}
        self._stopped: asyncio.Event | None = None

    # -- in the server's loop --------------------------------------------------------------

    async def _write(self, values: dict[str, Any]) -> None:
        ua = self._ua
        for name, value in values.items():
            vtype = getattr(ua.VariantType, NODES[name][0])
            await self.nodes[name].write_value(ua.Variant(value, vtype))

    async def _show_next(self) -> None:
        """Show the oldest result (values first, ResultValid last) or clear ResultValid."""
        if self._shown is None and self._outbox:
            r = self._outbox.popleft()
            self._shown = r
            await self._write(
                {
                    "ResultSeq": r.seq, "ClassId": r.class_id,
                    "Confidence": float(r.confidence), "FaultCode": r.fault,
                    "Pass": r.passed, "Fail": not r.passed,
                }
            )
            await self._write({"ResultValid": True})
        elif self._shown is None:
            await self._write({"ResultValid": False})

    async def _on_write(self, event: Any, _dispatcher: Any) -> None:
        """asyncua's PostWrite callback: client writes to Trigger / ResultAck."""
        for wv in event.request_params.NodesToWrite:
            if wv.NodeId == self.nodes["Trigger"].nodeid and wv.Value.Value.Value:
                seq = int(await self.nodes["PartSeq"].read_value())
                if self.station.source is self:
                    self.station.on_trigger(seq or None)
                await self._write({"Trigger": False})
            elif wv.NodeId == self.nodes["ResultAck"].nodeid and wv.Value.Value.Value:
                self._shown = None
                await self._write({"ResultAck": False})
                await self._show_next()

    async def _main(self, started: threading.Event, error: list[BaseException]) -> None:
        asyncua = require("asyncua")
        from asyncua.common.callback import CallbackType

        ua = self._ua = asyncua.ua
        self._stopped = asyncio.Event()
        try:
            server = asyncua.Server()
            await server.init()
            server.set_endpoint(self.cfg.endpoint)
            server.set_server_name("edge-agent")
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
            idx = await server.register_namespace(self.cfg.namespace)
            obj = await server.nodes.objects.add_object(idx, "Station")
            for name, (vtype, writable) in NODES.items():
                initial = False if vtype == "Boolean" else 0.0 if vtype == "Float" else 0
                node = await obj.add_variable(
                    idx, name, ua.Variant(initial, getattr(ua.VariantType, vtype))
                )
                if writable:
                    await node.set_writable()
                self.nodes[name] = node
            server.subscribe_server_callback(CallbackType.PostWrite, self._on_write)
            await server.start()
            self._server = server
        except BaseException as err:  # noqa: BLE001
            error.append(err)
            started.set()
            return
        started.set()
        await self._stopped.wait()
        await server.stop()

    # -- Backend (any thread) ---------------------------------------------------------------

    def start(self, station: Any) -> None:
        require("asyncua")
        self.station = station
        started = threading.Event()
        error: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._main(started, error))
            finally:
                started.set()
                loop.close()

        self._thread = threading.Thread(target=run, name="opcua-server", daemon=True)
        self._thread.start()
        started.wait(30)
        if error or self._server is None:
            self.close()
            raise OSError(f"cannot serve {self.cfg.endpoint}: {error[0] if error else 'timeout'}")
        log.info("opcua: server at %s (namespace %s)", self.cfg.endpoint, self.cfg.namespace)
        self._call(self._write({"Ready": True}))

    def _call(self, coro: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed() or self._server is None:
            coro.close()
            return
        try:
            asyncio.run_coroutine_threadsafe(coro, loop)
        except RuntimeError:
            coro.close()

    def result(self, result: Result) -> None:
        async def add() -> None:
            self._outbox.append(result)
            while len(self._outbox) > OUTBOX_MAX:
                self._outbox.popleft()
            await self._show_next()

        self._call(add())

    def state(self, state: dict[str, Any]) -> None:
        values = {
            "Heartbeat": int(state.get("heartbeat", 0)) & 0xFFFF,
            "Ready": bool(state.get("ready")),
            "Busy": bool(state.get("busy")),
            "StationFault": int(state.get("fault", 0)),
        }
        if values != self._last_state:
            self._last_state = values
            self._call(self._write(values))

    def decision(self, rec: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stopped.set)
            except RuntimeError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self._server = None
