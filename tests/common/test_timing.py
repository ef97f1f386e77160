"""The one latency measurer: warm-up, repeats, percentiles; alternating rounds; artifacts."""

from __future__ import annotations

import time

import numpy as np
from onnxkit import SIZE, tiny_onnx

from edge_common.timing import artifact_latency, best_of_rounds, measure_latency


def test_measure_latency_warms_up_then_times_runs():
    calls = []
    stats = measure_latency(lambda: calls.append(1), warmup=3, runs=7)
    assert len(calls) == 10 and stats["n"] == 7
    assert stats["min"] <= stats["p50"] <= stats["p95"] <= stats["p99"] <= stats["max"]


def test_best_of_rounds_alternates_and_keeps_the_lowest_median():
    order: list[str] = []
    slow_first = {"n": 0}

    def a():
        order.append("a")
        slow_first["n"] += 1
        time.sleep(0.2 if slow_first["n"] <= 3 else 0.0)  # slow in round one only

    def b():
        order.append("b")

    best = best_of_rounds({"a": a, "b": b}, rounds=2, warmup=1, runs=2)
    assert order == ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3  # turns within a round
    # round two's no-op median, not round one's ≥ 200 ms (sleep never returns early)
    assert best["a"] < 200.0


def test_artifact_latency_runs_the_file_in_its_runtime(tmp_path):
    path = tiny_onnx(tmp_path / "m.onnx")
    x = np.zeros((2, 3, SIZE, SIZE), np.float32)
    lat = artifact_latency(path, "onnx", x, threads=1, runs=5, warmup=1)
    assert lat["n"] == 5 and lat["batch"] == 2 and lat["threads"] == 1 and lat["p50"] > 0
