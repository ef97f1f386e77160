"""The bundle's latency budget on the board: a bundle built for a faster board raises the
``latency_budget`` fault (status, heartbeat, metrics) while the line runs on; a model
change starts the watch over; a bundle without a budget is never judged."""

from __future__ import annotations

import json

import yaml
from devicekit import make_bundle

from edge_agent.budget import FAULT, BudgetWatch, budget_of
from edge_agent.config import load_config
from edge_agent.service import Agent
from edge_common.manifest import write_manifest


class Faults:
    def __init__(self) -> None:
        self.active: dict[str, str] = {}
        self.raised = 0

    def raise_(self, name: str, msg: str) -> None:
        self.raised += 1
        self.active[name] = msg

    def clear(self, name: str) -> None:
        self.active.pop(name, None)


def test_budget_of_accepts_only_a_positive_finite_budget():
    assert budget_of({}) is None
    for bad in (0, -1, float("nan"), float("inf"), True, "5", None):
        assert budget_of({"deadline": {"budget_ms": bad}}) is None, bad
    assert budget_of({"deadline": {"budget_ms": 2.5}})["budget_ms"] == 2.5


def test_over_budget_raises_once_clears_when_back_under_and_resets_on_a_new_model():
    f = Faults()
    w = BudgetWatch(f.raise_, f.clear, window=100, every=10, min_items=20)
    m = {"deadline": {"budget_ms": 5.0, "device": "pi4", "cpu": "Cortex-A72"}}
    for _ in range(19):
        w.add("v1", m, 9.0)
    assert FAULT not in f.active  # too few items to judge
    for _ in range(41):
        w.add("v1", m, 9.0)
    assert "budget of 5 ms" in f.active[FAULT] and "pi4, Cortex-A72" in f.active[FAULT]
    assert f.raised == 1 and w.over and w.p95_ms == 9.0
    for _ in range(100):
        w.add("v1", m, 3.0)
    assert FAULT not in f.active and not w.over
    for _ in range(60):
        w.add("v1", m, 9.0)
    assert w.over
    w.add("v2", {}, 50.0)  # a bundle with no budget: the fault goes, nothing is judged
    assert FAULT not in f.active and not w.over and w.budget_ms is None
    for _ in range(100):
        w.add("v2", {}, 50.0)
    assert FAULT not in f.active


def test_an_agent_running_a_bundle_built_for_a_faster_board_faults_and_keeps_going(
        tmp_path, sim_config):
    bundle = make_bundle(tmp_path / "fast-board-bundle", version="deadline-1")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["deadline"] = {"budget_ms": 1e-6, "quantile": "p95", "device": "jetson-orin",
                            "cpu": "Cortex-A78AE", "runtime": "onnxruntime",
                            "precision": "fp32", "threads": 1, "measured_ms": 1e-6}
    write_manifest(bundle, manifest)
    data = yaml.safe_load(sim_config.read_text())
    data["bundle"]["path"] = str(bundle)
    sim_config.write_text(yaml.safe_dump(data))
    agent = Agent(load_config(sim_config, env={}))
    try:
        summary = agent.run(max_items=120)
        snap = agent.snapshot()
    finally:
        agent.close()
    assert summary["items"] == 120  # the line ran on
    assert "jetson-orin" in snap["faults"][FAULT]
    assert snap["latency_budget"]["over"] and snap["latency_budget"]["budget_ms"] == 1e-6
