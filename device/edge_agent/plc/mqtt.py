"""MQTT (paho-mqtt 2, ``CallbackAPIVersion.VERSION2``): decisions and status for MES/SCADA.

Topics (``<p>`` = ``plc.mqtt.topic_prefix``, ``<d>`` = the device id), JSON, QoS 1:

- ``<p>/<d>/decision``: every completed record (``id`` is unique: a subscriber drops a
  redelivered one by it; QoS 1 is at-least-once).
- ``<p>/<d>/result``: the result the PLC got for every part (``seq``, ``pass``,
  ``class_id``, ``confidence``, ``fault``, ``fault_name``, ``late``, ``id`` of its record),
  timeouts, overruns, stopped parts and parts a crash left open included. Both are
  published from the part's completed journal record, so they say what the journal says.
- ``<p>/<d>/status``: retained; the station's state every ``status_every_s``; the last
  will (and a clean stop) sets it to ``offline``.

While the broker is away paho keeps every QoS 1 message (``buffer_max`` at most; the
oldest beyond are refused and counted in ``dropped``) and sends them, in order, when it
reconnects; messages in flight at a disconnect are sent again (duplicates, same ``id``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from edge_agent.plc import require
from edge_agent.plc.handshake import FAULT_NAMES, NO_CLASS, Result

log = logging.getLogger(__name__)

DECISION_KEYS = (
    "id", "ts", "item", "decision", "action", "label", "score", "reject_score", "error",
    "model_version", "deadline_missed", "plc", "result", "fault", "late",
)


class MqttSink:
    """Publishes decisions, results and status to one broker (see the module docstring)."""

    name = "mqtt"

    def __init__(self, cfg: Any, device_id: str) -> None:
        self.cfg = cfg
        self.device_id = device_id
        base = f"{cfg.topic_prefix.rstrip('/')}/{device_id}"
        self.topics = {k: f"{base}/{k}" for k in ("decision", "result", "status")}
        self.station: Any = None
        self.client: Any = None
        self.connected = threading.Event()
        self.published = 0
        self.acked = 0
        self.dropped = 0
        self._lock = threading.Lock()
        self._next_status = 0.0
        self._closing = False

    def start(self, station: Any) -> None:
        mqtt = require("paho.mqtt.client")
        self.station = station
        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"edge-agent-{self.device_id}",
            clean_session=True,
        )
        c.max_queued_messages_set(self.cfg.buffer_max)
        c.max_inflight_messages_set(100)
        c.reconnect_delay_set(min_delay=1, max_delay=5)
        c.will_set(self.topics["status"], "offline", qos=1, retain=True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_connect_fail = self._on_connect_fail
        c.on_publish = self._on_publish
        self.client = c
        # connect_async + loop_start: paho's thread connects and reconnects by itself, so a
        # broker that is away at start only raises a fault; messages wait meanwhile.
        c.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        c.loop_start()

    # -- paho callbacks (paho's thread) ----------------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self.station.link_fault(self.name, f"broker refused the connection: {reason}")
            return
        self.connected.set()
        self.station.link_ok(self.name)
        self._next_status = 0.0

    def _on_disconnect(self, client: Any, _u: Any, flags: Any, reason: Any, props: Any) -> None:
        self.connected.clear()
        if self._closing:
            return  # our own clean disconnect
        with self._lock:
            waiting = self.published - self.acked
        self.station.link_fault(
            self.name,
            f"broker {self.cfg.host}:{self.cfg.port} away ({reason}); "
            f"{waiting} messages buffered",
        )

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        with self._lock:
            waiting = self.published - self.acked
        self.station.link_fault(
            self.name,
            f"broker {self.cfg.host}:{self.cfg.port} unreachable; {waiting} messages buffered",
        )

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with self._lock:
            self.acked += 1

    # -- Backend -------------------------------------------------------------------------

    def _publish(self, topic: str, payload: str, retain: bool = False) -> None:
        if self.client is None:
            return
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        with self._lock:
            if info.rc == 0 or info.rc == 4:  # success, or queued while disconnected
                self.published += 1
            else:
                self.dropped += 1

    def decision(self, rec: dict[str, Any]) -> None:
        body = {k: rec.get(k) for k in DECISION_KEYS}
        body["device_id"] = self.device_id
        self._publish(self.topics["decision"], json.dumps(body, sort_keys=True))
        plc = rec.get("plc")
        if isinstance(plc, dict) and plc.get("result") is not None:
            self._publish(self.topics["result"], json.dumps(result_body(rec), sort_keys=True))

    def result(self, result: Result) -> None:
        """Published from the completed record instead (``decision``)."""

    def state(self, state: dict[str, Any]) -> None:
        now = time.monotonic()
        if now < self._next_status or self.station is None:
            return
        self._next_status = now + self.cfg.status_every_s
        with self._lock:
            waiting, dropped = self.published - self.acked, self.dropped
        body = {
            **self.station.snapshot(),
            "device_id": self.device_id,
            "faults": dict(self.station.faults),
            "mqtt": {"unacked": waiting, "dropped": dropped},
            "updated": time.time(),
        }
        self._publish(self.topics["status"], json.dumps(body, sort_keys=True), retain=True)

    def flush(self, timeout_s: float) -> bool:
        """Wait until every message published so far is acknowledged by the broker."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            with self._lock:
                if self.acked >= self.published:
                    return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        if self.client is None:
            return
        if self.connected.is_set():
            self._publish(self.topics["status"], "offline", retain=True)
            self.flush(2.0)
        self._closing = True
        self.client.disconnect()
        self.client.loop_stop()
        self.client = None


def result_body(rec: dict[str, Any]) -> dict[str, Any]:
    """The ``result`` message of a completed record: what the PLC got for the part."""
    plc = rec["plc"]
    fault = int(plc.get("fault") or 0)
    return {
        "seq": plc.get("seq"), "pass": rec.get("result") == "pass",
        "class_id": plc.get("class_id", NO_CLASS),
        "confidence": plc.get("confidence", 0.0), "fault": fault,
        "fault_name": rec.get("fault") or FAULT_NAMES.get(fault, "none"),
        "late": bool(rec.get("late")), "id": rec.get("id"),
    }
