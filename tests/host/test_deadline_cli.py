"""`edgectl build --target-latency-ms` on this machine (``--target-device local``, the
agent's own bench in a subprocess, real ONNX Runtime): the plan, the search, its table
cache, the front and the bundle, and a rerun that resumes instead of starting over.

The bench runs every model file for real, but the figures the search decides on are the
file's MAC count (``mac_clock``), the deterministic oracle of the search tests: whether a
budget is met must not depend on what else the machine is doing (a real p95 under load
missed a budget set from an idle measurement). Real latencies are measured in benchmarks/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from onnxkit import mac_clocked, mac_ms

from edgectl.cli import main

# Width 1.0 (the tiny width-0.25 model has nothing left to cut at 8-channel rounding),
# 32×32, one epoch on 96 images: tens of seconds.
ARGS = ["--img-size", "32", "--train-size", "96", "--test-size", "48", "--batch-size", "16",
        "--calib-size", "8", "--latency-runs", "3", "--epochs", "1", "--finetune-epochs", "0",
        "--formats", "onnx", "--quantize", "none", "--allow-below-min",
        "--short-images", "32", "--accuracy-drop", "100", "--search-steps", "6"]


@pytest.fixture(scope="module")
def mac_clock():
    """``local`` as a target whose clock is the model's MACs: the agent's bench runs each
    file (its real report: machine, runtime, every row), then each row's latency is
    replaced by ``MACs / 1e5`` ms of that file (onnxkit.mac_clocked)."""
    from edgectl.fleet import ansible as fa

    real = fa.bench_local

    def bench(folder, threads, *args, **kw):
        return mac_clocked(real(folder, threads, *args, **kw), folder)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fa, "bench_local", bench)
        yield


@pytest.fixture(scope="module")
def dense_ms(mac_clock):
    """p95 of the stock width-1.0 model at 32×32 on that target, measured the way the
    search does."""
    from edgectl.fleet.ansible import profile_runner
    from edgectl.pipeline import latency_table as lt
    from edgectl.pipeline.model import build_model

    runner = profile_runner("local", None)
    ms, report = lt.measure_model(build_model(6).eval(), 32, "onnx", runner, 1)
    assert report["machine"]["cpu"]
    return ms


def _run(cli_runner, tmp_path: Path, *args: str):
    env = {"EDGECTL_CACHE": str(tmp_path / "cache")}
    return cli_runner.invoke(main, ["build", *ARGS, *args], env=env)


def test_hand_picked_pruning_with_a_budget_is_a_usage_error(cli_runner, tmp_path):
    res = _run(cli_runner, tmp_path, "--target-latency-ms", "1", "--prune", "structured",
               "--sparsity", "0.3", "--out", str(tmp_path / "o"))
    assert res.exit_code == 2
    assert "drop --prune, --sparsity" in res.output
    assert not (tmp_path / "o").exists()


# ~5 min on a quiet 2-core machine, past the suite's 600 s beside stress-ng on a shared one
@pytest.mark.timeout(1800)
def test_search_meets_the_budget_then_a_rerun_resumes(cli_runner, tmp_path, dense_ms):
    budget = round(dense_ms * 0.75, 4)
    out = tmp_path / "out"

    plan = _run(cli_runner, tmp_path, "--target-latency-ms", str(budget), "--out", str(out),
                "--dry-run", "--json")
    assert plan.exit_code == 0, plan.output
    info = json.loads(plan.stdout)
    assert info["start_est_ms"] is None and info["table_entries_to_measure_first"] > 0
    assert info["steps_are"].startswith("at most") and info["expected_steps"] == 6
    assert not (out / "bundle").exists() and not (out / "search").exists()

    res = _run(cli_runner, tmp_path, "--target-latency-ms", str(budget), "--out", str(out),
               "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    report = doc["pruning"]
    assert doc["version"].endswith(f"-deadline-{budget:g}ms")
    assert report["method"] == "deadline" and report["met"] and report["steps"]
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    d = manifest["deadline"]
    assert d["budget_ms"] == budget and d["device"] == "local" and d["cpu"]
    assert d["runtime"] == "onnxruntime" and d["runtime_version"]
    assert 0 < d["measured_ms"] <= budget and d["measured_ms"] == report["final_ms"]
    # the figure recorded is the shipped model's own (not a step's, not the dense one's)
    onnx = [a for a in manifest["artifacts"] if a["format"] == "onnx"]
    assert d["measured_ms"] == pytest.approx(mac_ms(out / "bundle" / onnx[0]["path"]))
    # every row of the front says where its latency comes from
    rows = json.loads((out / "front.json").read_text())
    assert rows == doc["front"]
    assert {r["latency_source"] for r in rows} <= {"measured", "measured-host", "estimated"}
    assert any(r["front"] for r in rows)
    assert Path(doc["front_png"]).read_bytes()[:4] == b"\x89PNG"
    assert len(report["estimation_error"]) == len(report["steps"])

    # the table is cached now: the plan is an estimate, nothing left to measure
    again = _run(cli_runner, tmp_path, "--target-latency-ms", str(budget), "--out", str(out),
                 "--dry-run", "--json")
    info = json.loads(again.stdout)
    assert info["table_entries_to_measure_first"] == 0 and info["start_est_ms"] > 0

    # a rerun with the same plan continues from the saved steps (as after Ctrl-C)
    rerun = _run(cli_runner, tmp_path, "--target-latency-ms", str(budget), "--out", str(out))
    assert rerun.exit_code == 0, rerun.output
    assert f"resuming after step {len(report['steps'])}" in rerun.output
    assert "latency table: timing" not in rerun.output.split("resuming")[0]
