"""The per-block latency table (``pipeline.latency_table``): its block shapes are exactly
what ``stage_prune`` builds; a real table timed on this machine by the agent's own bench
(``edge-agent bench --profile``, a subprocess, as on a board); the cache; the overhead
calibration; a changed CPU or runtime version discards the entries."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torchvision.models import mobilenet_v2

from edgectl.fleet.ansible import profile_runner
from edgectl.pipeline import latency_table as lt
from edgectl.pipeline import search_units
from edgectl.pipeline.checkpoint import channel_plan

IMG = 32
KEEPS = [(1.0,) * 15,
         (1.0, 1.0, 0.5, 1.0, 0.75, 0.5, 0.5, 0.25, 0.25, 0.5, 0.5, 1.0, 1.0, 0.5, 0.25),
         (0.5,) * 15, (1,) * 12 + (0.3, 0.3, 1)]


@pytest.fixture(scope="module")
def dense():
    torch.manual_seed(0)
    return mobilenet_v2(width_mult=0.5, num_classes=3).eval()


@pytest.mark.parametrize("keep", KEEPS)
def test_block_shapes_are_what_stage_prune_builds(dense, keep):
    pruned = search_units.stage_prune(dense, list(keep), IMG, 8)
    assert lt.pruned_plan(dense, keep, 8) == channel_plan(pruned)
    x = torch.zeros(1, 3, IMG, IMG)
    specs = lt.block_specs(dense, keep, IMG, 8)
    assert [s.index for s in specs] == list(range(19))
    with torch.no_grad():
        for s in specs:
            assert x.shape[1:] == (s.in_channels, s.size, s.size)
            alone = lt.block_module(dense, keep, s, 8)
            y = alone(torch.zeros(1, s.in_channels, s.size, s.size))
            x = pruned.features[s.index](x) if s.index < lt.HEAD else None
            if x is not None:
                assert y.shape == x.shape
            else:
                assert y.shape == (1, 3)


def test_a_table_timed_by_the_agent_bench_is_cached_and_calibrated(dense, tmp_path):
    runner = profile_runner("local", None)
    path = lt.table_path(tmp_path, "local", "onnx", "fp32", 1, IMG, dense)
    table = lt.LatencyTable(path, dense, IMG, "onnx", "fp32", 1, runner)
    dense_keep, half = (1.0,) * 15, (0.5,) * 15
    assert table.missing(dense_keep) == 19 and table.peek(dense_keep) is None
    assert table.ensure([dense_keep]) == 19
    facts = table.facts()
    assert facts["cpu"] and facts["runtime"] == "onnxruntime" and facts["runtime_version"]
    measured, report = lt.measure_model(dense, IMG, "onnx", runner, 1)
    assert measured > 0 and report["results"][0]["file"] == "model-fp32.onnx"
    table.calibrate(measured)
    assert table.estimate(dense_keep) == pytest.approx(measured)   # exact by construction
    assert table.peek(dense_keep) == pytest.approx(measured)
    est = table.estimate(half)                                     # measures what it lacks
    assert math.isfinite(est) and table.measured > 19
    again = lt.LatencyTable(path, dense, IMG, "onnx", "fp32", 1,
                            runner=lambda *_a: pytest.fail("a cached table measured again"))
    assert again.missing(half) == 0 and again.ensure([half, dense_keep]) == 0
    assert again.estimate(half) == pytest.approx(est)
    # another CPU or runtime version reported by the same target: the entries go
    report = {"device": "x", "machine": {"cpu": "another CPU", "runtimes": {
        "onnxruntime": facts["runtime_version"]}}, "results": []}
    again._check_facts(report)
    assert again.missing(dense_keep) == 19 and again.facts()["cpu"] == "another CPU"


def test_table_files_differ_by_what_they_measure(dense, tmp_path):
    a = lt.table_path(tmp_path, "local", "onnx", "fp32", 1, IMG, dense)
    assert a != lt.table_path(tmp_path, "local", "onnx", "fp32", 2, IMG, dense)
    assert a != lt.table_path(tmp_path, "pi4", "onnx", "fp32", 1, IMG, dense)
    assert a != lt.table_path(tmp_path, "local", "tflite", "fp32", 1, IMG, dense)
    assert a != lt.table_path(tmp_path, "local", "onnx", "fp32", 1, 64, dense)
    assert a != lt.table_path(tmp_path, "local", "onnx", "int8", 1, IMG, dense)
    with pytest.raises(Exception, match="precision fp32.int8"):
        lt.LatencyTable(a, dense, IMG, "onnx", "fp16", 1, profile_runner("local", None))


def test_an_int8_table_times_quantized_blocks(dense, tmp_path):
    """INT8: each block and each end-to-end model quantized by the build's quantizer
    (QDQ for ONNX Runtime) before the agent's bench times it."""
    import onnx

    block = lt.block_module(dense, (1.0,) * 15, lt.block_specs(dense, (1.0,) * 15, IMG, 8)[3], 8)
    spec = lt.block_specs(dense, (1.0,) * 15, IMG, 8)[3]
    path = lt.export_as(block, "onnx", "int8", tmp_path / "b.onnx", spec.size,
                        spec.in_channels)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and not list(tmp_path.glob("*.fp32*"))
    runner = profile_runner("local", None)
    table = lt.LatencyTable(tmp_path / "t.json", dense, IMG, "onnx", "int8", 1, runner)
    assert table.ensure([(1.0,) * 15]) == len(table.specs((1.0,) * 15))
    ms, report = lt.measure_model(dense, IMG, "onnx", runner, 1, "int8")
    table.calibrate(ms)
    assert table.estimate((1.0,) * 15) == pytest.approx(ms)
    assert table.facts()["precision"] == "int8"


def test_bench_profile_layers_tables_this_machine_and_reports_its_error(cli_runner, tmp_path):
    """`edgectl bench --device local --profile-layers`: the table measured by the agent's
    bench, each check shape estimated and measured; a second run measures no block again."""
    import json

    from edgectl.cli import main

    env = {"EDGECTL_CACHE": str(tmp_path / "cache")}
    args = ["bench", "--device", "local", "--profile-layers", "--img-size", "32", "--json"]
    res = cli_runner.invoke(main, args, env=env)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    (t,) = doc["tables"]
    assert t["threads"] == 1 and t["entries"] == t["measured_now"] > 17
    assert t["facts"]["runtime"] == "onnxruntime" and t["facts"]["cpu"]
    assert [c["shape"] for c in t["checks"]] == ["dense", "uniform keep 0.75",
                                                  "uniform keep 0.5", "mixed"]
    for c in t["checks"]:
        assert c["measured_ms"] > 0 and c["estimated_ms"] > 0
        assert c["error"] == pytest.approx((c["estimated_ms"] - c["measured_ms"])
                                           / c["measured_ms"])
    assert (tmp_path / "cache" / "latency-tables").is_dir()
    again = json.loads(cli_runner.invoke(main, args, env=env).stdout)
    assert again["tables"][0]["measured_now"] == 0            # the cached table
    refused = cli_runner.invoke(main, ["bench", "--device", "local", "--profile-layers",
                                       "--bundle", str(tmp_path)], env=env)
    assert refused.exit_code == 2 and "drop --bundle" in refused.output


def _fake_runner(folder, threads):
    """A target whose block times are their file sizes in MB (bigger blocks, longer)."""
    listing = json.loads((folder / lt.PROFILE_LIST).read_text())["models"]
    return {"device": "fake", "machine": {"cpu": "fake", "runtimes": {"onnxruntime": "1"}},
            "results": [{"file": m["file"], "threads": t, "latency_ms": {
                "p50": (folder / m["file"]).stat().st_size / 1e6, "p95": 0.0}}
                for m in listing for t in threads]}


def test_the_table_refits_to_every_end_to_end_point_it_sees(dense, tmp_path):
    table = lt.LatencyTable(tmp_path / "t.json", dense, IMG, "onnx", "fp32", 1, _fake_runner)
    full, half, quarter = (1.0,) * 15, (0.5,) * 15, (0.25,) * 15
    s_full, s_half, s_quarter = (table.blocks_ms(k) for k in (full, half, quarter))
    assert s_full > s_half > s_quarter > 0
    # one point (the dense model): scale 1, exact there
    table.calibrate(s_full + 1.0)
    assert table.doc["scale"] == 1.0
    assert table.estimate(full) == pytest.approx(s_full + 1.0)
    assert table.estimate(half) == pytest.approx(s_half + 1.0)
    # the target runs pruned models faster than the blocks' sum says: measured = 0.5·Σ + 1
    table.observe(half, 0.5 * s_half + 1.0)
    table.observe(full, 0.5 * s_full + 1.0)
    assert table.doc["scale"] == pytest.approx(0.5)
    assert table.estimate(quarter) == pytest.approx(0.5 * s_quarter + 1.0)
    # the fit is saved with the table, and bounded: a wild point cannot invert the order
    again = lt.LatencyTable(tmp_path / "t.json", dense, IMG, "onnx", "fp32", 1, _fake_runner)
    assert again.peek(quarter) == pytest.approx(0.5 * s_quarter + 1.0)
    again.observe(quarter, 1000.0)
    assert 0.25 <= again.doc["scale"] <= 4.0
    assert again.estimate(full) > again.estimate(quarter)   # scale stays positive


def test_a_table_saved_with_per_stage_points_loads_and_keeps_its_block_entries(dense, tmp_path):
    """A table cached before the search's units were split (7 keeps per point) is read: its
    block entries (keyed by shape) stay, its unreadable end-to-end points are dropped."""
    path = tmp_path / "t.json"
    table = lt.LatencyTable(path, dense, IMG, "onnx", "fp32", 1, _fake_runner)
    full = (1.0,) * 15
    table.calibrate(table.blocks_ms(full) + 1.0)
    doc = json.loads(path.read_text())
    doc["points"][",".join(["1"] * 7)] = 9.0
    doc["points"][",".join(["0.5"] * 7)] = 5.0
    path.write_text(json.dumps(doc))
    again = lt.LatencyTable(path, dense, IMG, "onnx", "fp32", 1, _fake_runner)
    assert list(again.doc["points"]) == [lt.DENSE_POINT]
    assert again.missing(full) == 0
    again.observe((0.5,) * 15, 1.0)                       # refits without tripping on them
    assert again.estimate(full) > again.estimate((0.5,) * 15)


def test_one_slow_trip_near_the_dense_model_does_not_tilt_the_fit(dense, tmp_path):
    table = lt.LatencyTable(tmp_path / "t.json", dense, IMG, "onnx", "fp32", 1, _fake_runner)
    full, quarter = (1.0,) * 15, (0.25,) * 15
    near = (1.0,) * 14 + (0.5,)
    s_full, s_near, s_quarter = (table.blocks_ms(k) for k in (full, near, quarter))
    assert s_near < s_full and (s_full - s_near) < lt.FIT_SPREAD * s_full
    table.calibrate(s_full + 1.0)
    table.observe(near, s_near + 1.0 + 0.5 * s_full)      # a slow trip: slower than dense
    # too close to the dense point to fit a slope: scale 1, the overhead the median residual
    assert table.doc["scale"] == 1.0
    assert table.estimate(quarter) == pytest.approx(
        s_quarter + 1.0 + 0.25 * s_full)                   # median of (1.0, 1.0 + 0.5·s_full)
    assert table.estimate(quarter) < table.estimate(full)
