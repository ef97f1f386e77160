"""Agent hooks: swap_classifier between items, snapshot (heartbeat body), add_worker."""

from __future__ import annotations

import threading
import time

from devicekit import make_bundle

from edge_agent.classifier import Classifier
from edge_agent.config import load_config
from edge_agent.service import Agent


class Worker:
    def __init__(self) -> None:
        self.started = threading.Event()
        self.stopped = threading.Event()
        self.thread_name = None

    def start(self) -> None:  # blocking style: runs until stop()
        self.thread_name = threading.current_thread().name
        self.started.set()
        self.stopped.wait()

    def stop(self) -> None:
        self.stopped.set()


def test_swap_snapshot_and_workers(tmp_path, sim_config):
    cfg = load_config(sim_config, env={})
    cfg.trigger.rate_hz = 100
    agent = Agent(cfg)
    worker = Worker()
    agent.add_worker(worker)
    new = Classifier.load(str(make_bundle(tmp_path / "b2", version="test-2")))
    seen: list[str] = []
    agent.on_decision = lambda rec: seen.append(rec["model_version"])
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(agent.run(max_items=60)))
    t.start()
    assert worker.started.wait(10) and worker.thread_name != threading.main_thread().name
    while agent.stats.items < 10:
        time.sleep(0.01)
    snap = agent.snapshot()
    assert set(snap) >= {
        "device_id",
        "model_version",
        "uptime_s",
        "fps",
        "latency_ms",
        "deadline_misses",
        "counts",
        "disk_bytes",
        "temperature_c",
    }
    assert snap["device_id"] == "test-device" and snap["model_version"] == "test-1"
    assert set(snap["latency_ms"]["total"]) == {"p50", "p95", "p99"}
    # systemd's STATUS= line (`systemctl status edge-agent`) names the model it serves.
    assert agent.status_line().startswith("model test-1: ")
    done = agent.swap_classifier(new)
    assert done.wait(10)
    t.join(timeout=30)
    assert agent.status_line().startswith("model test-2: ")
    assert worker.stopped.is_set()
    assert result["items"] == 60 and result["model_version"] == "test-2"
    # Every item used one model; the switch happened once, between items.
    first_new = seen.index("test-2")
    assert set(seen[:first_new]) == {"test-1"} and set(seen[first_new:]) == {"test-2"}
    agent.close()
    new.close()
