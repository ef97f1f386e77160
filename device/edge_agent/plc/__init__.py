"""Talk to the line's PLC and to MES/SCADA: trigger sources and result sinks beside GPIO.

One interface (:class:`Backend`), one file per backend, each importing its library only
inside itself (``pip install 'edge-agent[plc]'``), so the agent imports on any machine:

- ``modbus.py``: Modbus TCP (pymodbus). ``modbus``: the agent's server (the PLC triggers
  and reads results; register map in docs/plc.md); ``modbus-client``: results written into
  a PLC's holding registers.
- ``opcua.py``: OPC UA (asyncua), the same signals as variables of one object.
- ``mqtt.py``: MQTT (paho-mqtt 2): every decision and a periodic status as JSON.

``handshake.py`` is the state machine (pure) they all share; ``station.py`` runs it: it is
the agent's trigger and fans results out to the backends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from edge_common.errors import MissingExtraError

if TYPE_CHECKING:
    from edge_agent.config import AgentConfig
    from edge_agent.plc.handshake import Result

TRIGGERS = ("modbus", "opcua")  # trigger.type values served by a PLC backend


class Backend(Protocol):
    """A PLC / MES link. Methods other than ``start`` never raise and never block long:
    a link that fails reports it through ``station.link_fault`` and keeps trying."""

    name: str

    def start(self, station: Any) -> None:
        """Open the link (bind the server, connect); raise ``HardwareError`` if it cannot."""

    def result(self, result: Result) -> None:
        """Present one part's result (called in FIFO order)."""

    def state(self, state: dict[str, Any]) -> None:
        """Heartbeat, ready, busy, fault code: on every change and every heartbeat."""

    def decision(self, rec: dict[str, Any]) -> None:
        """A decision committed to the journal (its full record)."""

    def close(self) -> None: ...


class ConfirmingBackend(Backend, Protocol):
    """A trigger source whose PLC acks each result (``confirms`` true: Modbus). A result
    counts as delivered at the ack; ``drain`` waits up to ``timeout_s`` for the acks of what
    is shown and returns the results never acked."""

    confirms: bool

    def drain(self, timeout_s: float) -> list[Result]: ...


def require(module: str) -> Any:
    """Import a backend library or say which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(module.split(".")[0], "plc") from err


def make_backend(name: str, cfg: AgentConfig) -> Backend:
    """The backend for ``name`` (a trigger type or a ``results:`` entry), not yet started."""
    if name == "modbus":
        from edge_agent.plc.modbus import ModbusServer

        return ModbusServer(cfg.plc.modbus)
    if name == "modbus-client":
        from edge_agent.plc.modbus import ModbusClient

        return ModbusClient(cfg.plc.modbus)
    if name == "opcua":
        from edge_agent.plc.opcua import OpcUaServer

        return OpcUaServer(cfg.plc.opcua)
    if name == "mqtt":
        from edge_agent.plc.mqtt import MqttSink

        return MqttSink(cfg.plc.mqtt, cfg.device_id)
    raise ValueError(f"plc: unknown backend {name!r}")
