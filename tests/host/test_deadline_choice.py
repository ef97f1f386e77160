"""The runtime × precision × threads the deadline search runs in (``--runtime auto``,
``--precision auto``, ``--target-threads``): the dense model timed on the target in each,
the fastest kept, FP32 and fewer threads within the tie band, a runtime the target lacks
listed and never chosen."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_common.errors import EdgeError
from edgectl.cli import main
from edgectl.fleet.ansible import profile_runner
from edgectl.pipeline import latency_table as lt
from edgectl.pipeline.deadline import CHOICE_TIE, KINDS, choose_target
from edgectl.pipeline.front import front_rows
from edgectl.pipeline.model import build_model


def test_every_combination_is_measured_here_and_the_fastest_is_chosen():
    """Real exports (ONNX, LiteRT; FP32 and INT8 by the build's quantizer) timed by the
    agent's bench on this machine."""
    rows = choose_target(build_model(6).eval(), 32, profile_runner("local", None),
                         list(KINDS), [1], rounds=1)["rows"]
    assert [(r["runtime"], r["precision"]) for r in rows] == list(KINDS)
    assert all(r["dense_ms"] > 0 and r["error"] is None for r in rows), rows
    chosen = [r for r in rows if r["chosen"]]
    assert len(chosen) == 1
    assert chosen[0]["dense_ms"] <= min(r["dense_ms"] for r in rows) * (1 + CHOICE_TIE)


class FakeBoard:
    """A board's bench: fixed times per (file, threads), LiteRT not installed."""

    def __init__(self, ms: dict[tuple[str, int], list[float]], tflite: bool = False) -> None:
        self.ms, self.tflite, self.trips = ms, tflite, 0

    def __call__(self, folder: Path, threads: list[int]) -> dict:
        listing = json.loads((folder / lt.PROFILE_LIST).read_text())["models"]
        rows = []
        for m in listing:
            for t in threads:
                if m["file"].endswith(".tflite") and not self.tflite:
                    rows.append({"file": m["file"], "threads": t,
                                 "error": "EdgeError: no TFLite runtime: pip install "
                                          "ai-edge-litert"})
                else:
                    rows.append({"file": m["file"], "threads": t, "latency_ms": {
                        "p95": self.ms[(m["file"], t)][self.trips]}})
        self.trips += 1
        return {"device": "board", "machine": {"cpu": "Cortex-A72"}, "results": rows}


@pytest.fixture
def no_export(monkeypatch):
    # what is timed is the fake board's table; exporting is tested above
    monkeypatch.setattr(lt, "export_as", lambda m, fmt, prec, path, size, channels=3:
                        path.write_bytes(b"model") and path)


def test_median_of_trips_a_missing_runtime_and_the_tie_rule(no_export):
    board = FakeBoard({
        ("model-fp32.onnx", 1): [10.0, 30.0, 11.0],   # median 11 (one busy trip)
        ("model-int8.onnx", 1): [9.0, 9.0, 9.0],
        ("model-fp32.onnx", 4): [5.0, 5.1, 4.9],      # fastest FP32
        ("model-int8.onnx", 4): [4.8, 4.8, 4.8],      # faster, but within the tie band
    })
    choice = choose_target(build_model(6).eval(), 32, board, list(KINDS), [4, 1], rounds=3)
    assert board.trips == 3
    rows = {(r["runtime"], r["precision"], r["threads"]): r for r in choice["rows"]}
    assert rows[("onnx", "fp32", 1)]["dense_ms"] == 11.0
    assert rows[("tflite", "int8", 4)]["dense_ms"] is None
    assert "ai-edge-litert" in rows[("tflite", "int8", 4)]["error"]
    assert not any(r["chosen"] for r in choice["rows"] if r["runtime"] == "tflite")
    assert (choice["runtime"], choice["precision"], choice["threads"]) == ("onnx", "fp32", 4)


def test_int8_wins_when_it_is_clearly_faster_and_fewer_threads_within_the_band(no_export):
    board = FakeBoard({("model-fp32.onnx", 1): [10.0], ("model-int8.onnx", 1): [6.0],
                       ("model-fp32.onnx", 2): [9.0], ("model-int8.onnx", 2): [5.9]},
                      tflite=False)
    choice = choose_target(build_model(6).eval(), 32, board, [("onnx", "fp32"),
                                                              ("onnx", "int8")], [1, 2],
                           rounds=1)
    assert (choice["precision"], choice["threads"]) == ("int8", 1)


def test_a_target_that_runs_none_of_them_is_an_error_naming_why(no_export):
    with pytest.raises(EdgeError, match="runs none of tflite fp32 ×1.*ai-edge-litert"):
        choose_target(build_model(6).eval(), 32, FakeBoard({}), [("tflite", "fp32")], [1],
                      rounds=1)


def test_the_front_lists_the_combinations_not_searched_as_measured_rows():
    build = {"pruning": {"method": "deadline", "oracle": {"runtime": "onnx"},
                         "start_ms": 2.0, "final_ms": 1.0, "keep": [0.5] * 15, "steps": [],
                         "target_choice": [
                             {"runtime": "onnx", "precision": "fp32", "threads": 1,
                              "dense_ms": 2.0, "chosen": True},
                             {"runtime": "tflite", "precision": "int8", "threads": 1,
                              "dense_ms": 2.5, "chosen": False},
                             {"runtime": "tflite", "precision": "fp32", "threads": 1,
                              "dense_ms": None, "error": "no runtime", "chosen": False}]},
             "baseline": {"accuracy": 0.9}, "model": {"accuracy": 0.89}, "artifacts": []}
    rows = front_rows(build, local_target=False)
    dense = [r for r in rows if r["model"].startswith("dense")]
    assert [(r["runtime"], r["precision"], r["latency_ms"]) for r in dense] == \
        [("litert", "int8", 2.5)]
    assert dense[0]["latency_source"] == "measured" and not dense[0]["front"]


def test_target_threads_and_auto_in_the_plan(cli_runner, tmp_path):
    base = ["build", "--img-size", "32", "--train-size", "96", "--test-size", "48",
            "--target-latency-ms", "1", "--out", str(tmp_path / "o"), "--dry-run", "--json"]
    env = {"EDGECTL_CACHE": str(tmp_path / "cache")}
    bad = cli_runner.invoke(main, [*base, "--target-threads", "1,x"], env=env)
    assert bad.exit_code == 2 and "'x' is not a thread count" in bad.output
    res = cli_runner.invoke(main, [*base, "--runtime", "auto", "--precision", "int8",
                                   "--target-threads", "2,1,2"], env=env)
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    # onnx and tflite INT8 at 1 and 2 threads, 3 trips each; the plan shown is the first
    assert info["choice_measurements"] == 3 * 2 * 2
    assert (info["runtime"], info["precision"], info["threads"]) == ("onnx", "int8", 1)
    assert not (tmp_path / "o").exists()
    # what the bundle would not hold is never searched for
    only = cli_runner.invoke(main, [*base, "--formats", "onnx", "--quantize", "none",
                                    "--runtime", "tflite"], env=env)
    assert only.exit_code == 2 and "the bundle would not hold that artifact" in only.output
    narrowed = cli_runner.invoke(main, [*base, "--formats", "onnx", "--quantize", "none",
                                        "--runtime", "auto", "--precision", "auto"], env=env)
    assert narrowed.exit_code == 0, narrowed.output
    assert "choice_measurements" not in json.loads(narrowed.stdout)  # one pair: no choice
