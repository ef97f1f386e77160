"""MQTT against a real mosquitto started by the test (127.0.0.1, its own config and folder).

Every decision reaches a persistent QoS 1 subscriber across a broker restart: the agent
buffers while the broker is away (paho keeps QoS 1 messages and resends them), the broker
keeps the subscriber's queue across the restart (persistence). QoS 1 is at-least-once, so
a message in flight at the restart may arrive twice: the subscriber identifies duplicates
by the decision ``id`` (a UUID). The test proves no loss (unique ids == journaled ids)
and reports the duplicates it dropped.
"""

from __future__ import annotations

import json
import threading
import time

import paho.mqtt.client as mqtt
from devicekit import write_config
from plckit import AgentThread, Mosquitto, PartCamera

from edge_agent.config import load_config
from edge_agent.service import Agent

N = 300


class Subscriber:
    """A SCADA-side client with a persistent session (clean_session=False, QoS 1)."""

    def __init__(self, port: int, topics: list[str]) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.topics = topics
        self.subscribed = threading.Event()
        c = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="scada-test", clean_session=False
        )
        c.reconnect_delay_set(min_delay=1, max_delay=2)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_subscribe = lambda *a: self.subscribed.set()
        c.connect_async("127.0.0.1", port, keepalive=5)
        c.loop_start()
        self.client = c

    def _on_connect(self, client, userdata, flags, reason, props):
        client.subscribe([(t, 1) for t in self.topics])

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.messages.append((msg.topic, msg.payload))

    def payloads(self, topic: str) -> list:
        with self.lock:
            return [json.loads(p) if p.startswith(b"{") else p.decode()
                    for t, p in self.messages if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_every_decision_reaches_the_subscriber_across_a_broker_restart(tmp_path, tiny_bundle):
    broker = Mosquitto(tmp_path / "broker").start()
    prefix = "plant/line1"
    base = f"{prefix}/test-device"
    cfg = load_config(
        write_config(
            tmp_path / "agent.yaml",
            tiny_bundle,
            trigger={"type": "interval", "rate_hz": 150},
            actuator={"type": "none"},
            results=["mqtt"],
            plc={"mqtt": {"port": broker.port, "topic_prefix": prefix, "status_every_s": 0.2,
                          "keepalive_s": 2}},
        ),
        env={},
    )
    sub = Subscriber(broker.port, [f"{base}/decision", f"{base}/status", f"{base}/result"])
    agent = Agent(cfg, camera=PartCamera(every=4))
    try:
        assert sub.subscribed.wait(10)
        run = AgentThread(agent, max_items=N).start()
        while len(sub.payloads(f"{base}/decision")) < N // 4:
            time.sleep(0.01)
        broker.stop()  # the broker goes away mid-run ...
        end = time.monotonic() + 10
        while "plc_mqtt" not in agent.faults:  # ... the agent shows it ...
            assert time.monotonic() < end, "the broker's absence is not shown"
            time.sleep(0.01)
        made = agent.stats.items
        while agent.stats.items < min(made + 50, N) and run.thread.is_alive():  # ... buffers
            time.sleep(0.01)
        broker.start()
        run.thread.join(timeout=60)
        ids = set(agent.journal.ids())
        assert len(ids) == N
        end = time.monotonic() + 30
        while time.monotonic() < end:
            got = {d["id"] for d in sub.payloads(f"{base}/decision")}
            if got >= ids:
                break
            time.sleep(0.05)
        decisions = sub.payloads(f"{base}/decision")
        unique = {d["id"] for d in decisions}
        duplicates = len(decisions) - len(unique)
        print(f"mqtt: {len(decisions)} messages, {len(unique)} unique, {duplicates} duplicates")
        assert unique == ids  # nothing lost, nothing foreign
        assert sum(d["decision"] == "reject" for d in {d["id"]: d for d in decisions}.values()) \
            == N // 4
        # decisions carry the PLC part number, in trigger order
        seqs = [d["plc"]["seq"] for d in {d["id"]: d for d in decisions}.values()]
        assert sorted(seqs) == list(range(1, N + 1))
        results = sub.payloads(f"{base}/result")
        assert {r["seq"] for r in results} == set(range(1, N + 1))
        status = [s for s in sub.payloads(f"{base}/status") if isinstance(s, dict)]
        assert status and {"heartbeat", "ready", "fault", "counts"} <= set(status[-1])
        assert "plc_mqtt" not in agent.faults  # cleared on reconnect
    finally:
        agent.stop()
        sub.close()
        agent.close()
        broker.stop()


def test_status_is_retained_and_offline_after_a_stop(tmp_path, tiny_bundle):
    broker = Mosquitto(tmp_path / "broker").start()
    try:
        cfg = load_config(
            write_config(
                tmp_path / "agent.yaml", tiny_bundle,
                trigger={"type": "interval", "rate_hz": 50},
                actuator={"type": "none"},
                results=["mqtt"],
                plc={"mqtt": {"port": broker.port, "status_every_s": 0.1}},
            ),
            env={},
        )
        agent = Agent(cfg, camera=PartCamera())
        agent.run(max_items=20)
        agent.close()
        got: list[bytes] = []
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="late-reader")
        c.on_message = lambda cl, u, m: got.append(m.payload)
        c.connect("127.0.0.1", broker.port)
        c.subscribe("edgectl/test-device/status", qos=1)
        end = time.monotonic() + 10
        while not got and time.monotonic() < end:
            c.loop(0.1)
        c.disconnect()
        assert got == [b"offline"]  # retained: a late reader sees the agent is gone
    finally:
        broker.stop()
