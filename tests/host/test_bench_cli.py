"""`edgectl bench` on this machine (no Ansible), stored runs, --compare, bad input;
the fleet helpers' pure parts (recap parsing, run file names)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from edgectl.cli import main
from edgectl.fleet import ansible as fa

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> Path:
    """The device tests' torch-free tiny bundle (tests/device/devicekit.py)."""
    spec = importlib.util.spec_from_file_location(
        "edge_devicekit_for_bench", ROOT / "tests" / "device" / "devicekit.py"
    )
    kit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kit)
    return kit.make_bundle(tmp_path_factory.mktemp("bench") / "tiny", version="v-7")


def test_local_bench_prints_the_agent_report_and_stores_it(cli_runner, tiny_bundle, tmp_path):
    res = cli_runner.invoke(main, ["bench", "--device", "local", "--bundle", str(tiny_bundle),
                                   "--threads", "1,2", "--runs", "5", "--json",
                                   "--results-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    [run] = json.loads(res.stdout)
    assert run["host"] == "local" and run["via"] == "local"
    assert run["bundle"]["version"] == "v-7"
    assert [r["threads"] for r in run["results"]] == [1, 2]
    assert all(r["latency_ms"]["p50"] > 0 for r in run["results"])
    [stored] = tmp_path.iterdir()
    assert stored.name.startswith("local_v-7_") and stored.suffix == ".json"
    assert json.loads(stored.read_text())["results"] == run["results"]


def test_table_output_and_compare_list_runs_side_by_side(cli_runner, tiny_bundle, tmp_path):
    for threads in ("1", "1,2"):
        res = cli_runner.invoke(main, ["bench", "-d", "local", "-b", str(tiny_bundle),
                                       "--threads", threads, "--runs", "3",
                                       "--results-dir", str(tmp_path)])
        assert res.exit_code == 0, res.output
        assert "model.fp32.onnx" in res.output and "stored: " in res.output
    res = cli_runner.invoke(main, ["bench", "--compare", "--results-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[1].count("local@v-7") == 2  # two runs, two columns
    rows = {tuple(line.split()[:2]): line.split()[2:] for line in lines[2:]}
    assert len(rows[("model.fp32.onnx", "1")]) == 2  # both runs measured 1 thread
    assert rows[("model.fp32.onnx", "2")][0] == "-"  # only the second measured 2
    assert rows[("model.fp32.onnx", "2")][1] != "-"
    res = cli_runner.invoke(main, ["bench", "--compare", "--device", "pi4", "--json",
                                   "--results-dir", str(tmp_path)])
    assert json.loads(res.stdout) == []


@pytest.mark.parametrize(("args", "message"), [
    (["--threads", "1,x"], "--threads must be a list like 1,2,4"),
    (["--threads", "0"], "--threads must be positive"),
])
def test_bad_threads_are_one_clear_error(cli_runner, tiny_bundle, tmp_path, args, message):
    res = cli_runner.invoke(main, ["bench", "-d", "local", "-b", str(tiny_bundle),
                                   "--results-dir", str(tmp_path), *args])
    assert res.exit_code == 1
    assert message in res.output
    assert not tmp_path.exists() or not list(tmp_path.iterdir())


def test_device_and_bundle_are_required_unless_comparing(cli_runner, tiny_bundle):
    res = cli_runner.invoke(main, ["bench", "--bundle", str(tiny_bundle)])
    assert res.exit_code == 2 and "give --device NAME" in res.output
    res = cli_runner.invoke(main, ["bench", "--device", "local"])
    assert res.exit_code == 2 and "give --bundle PATH" in res.output


def test_a_board_without_an_inventory_is_a_clear_error(cli_runner, tiny_bundle, monkeypatch,
                                                       tmp_path):
    monkeypatch.setenv("EDGECTL_INVENTORY", str(tmp_path / "missing.yml"))
    res = cli_runner.invoke(main, ["bench", "-d", "pi4", "-b", str(tiny_bundle)])
    assert res.exit_code == 1
    assert "no inventory" in res.output and "--inventory" in res.output


RECAP = """
TASK [edge_model : Switch the active model] ****
changed: [pi4-a]

PLAY RECAP *********************************************************************
pi4-a                      : ok=25   changed=2    unreachable=0    failed=0    skipped=12   rescued=0    ignored=0
jetson-b                   : ok=3    changed=0    unreachable=1    failed=0    skipped=0    rescued=0    ignored=0
"""  # noqa: E501


def test_parse_recap_reads_every_host_and_counter():
    recap = fa.parse_recap(RECAP)
    assert recap["pi4-a"] == {"ok": 25, "changed": 2, "unreachable": 0, "failed": 0,
                              "skipped": 12, "rescued": 0, "ignored": 0}
    result = fa.PlaybookResult(returncode=4, output=RECAP, recap=recap)
    assert result.changed == 2
    assert result.failed_hosts() == ["jetson-b"]


def test_store_run_never_overwrites_an_earlier_run(tmp_path):
    report = {"device": "vm", "bundle": {"name": "n", "version": "2026.1/x"},
              "created": "2026-11-26T10:15:00Z", "results": []}
    first = fa.store_run(report, host="pi4-a", target="pi4", via="ansible", results_dir=tmp_path)
    second = fa.store_run(report, host="pi4-a", target="pi4", via="ansible", results_dir=tmp_path)
    assert first.name == "pi4-a_2026.1-x_20261126T101500Z.json"
    assert second != first and second.exists() and first.exists()
    assert [r["host"] for r in fa.load_runs(tmp_path, "pi4")] == ["pi4-a", "pi4-a"]
    assert fa.load_runs(tmp_path, "jetson") == []


def _report(rows):
    return {"results": [{"threads": 1, "format": "onnx", "precision": p, "artifact": a,
                         "latency_ms": {"p50": ms, "p95": ms * 1.1}, "throughput_fps": 1e3 / ms,
                         "agreement": None if ref else 1.0, "bytes": 2_000_000,
                         **({"reference": True} if ref else {})}
                        for a, p, ms, ref in rows]}


def test_table_rows_ratio_to_dense_and_the_unstructured_note():
    from edgectl.fleet.benchtable import FIELDS, bench_rows, notes

    manifest = {"metrics": {"sparsity_pruning": 0.5},
                "provenance": {"pruning": {"method": "unstructured", "actual": 0.5}},
                "artifacts": [{"path": "model.fp32.onnx", "bytes": 1, "metrics": {"accuracy": 0.9}},
                              {"path": "model.int8.onnx", "bytes": 1,
                               "metrics": {"accuracy": 0.89}}]}
    rows = bench_rows(_report([("model.fp32.onnx", "fp32", 9.9, False),
                               ("model.int8.onnx", "int8", 4.0, False),
                               ("dense.fp32.onnx", "fp32", 10.0, True)]), manifest)
    assert all(set(FIELDS) <= set(r) for r in rows)
    by = {r["artifact"]: r for r in rows}
    assert by["model.fp32.onnx"]["vs_dense_ort_fp32"] == 0.99
    assert by["model.int8.onnx"]["vs_dense_ort_fp32"] == 0.4
    assert by["model.int8.onnx"]["accuracy"] == 0.89 and by["model.int8.onnx"]["size_mb"] == 2.0
    assert by["dense.fp32.onnx"]["accuracy"] is None and by["dense.fp32.onnx"]["sparsity"] == 0.0
    said = " ".join(notes(rows, manifest))
    assert "brings no speed" in said and "--prune structured" in said
    manifest["provenance"]["pruning"]["method"] = "structured"
    assert "brings no speed" not in " ".join(notes(bench_rows(_report(
        [("model.fp32.onnx", "fp32", 5.0, False), ("d.onnx", "fp32", 10.0, True)]), manifest),
        manifest))
    # No dense model in the run: no ratio, and the note says how to get one.
    rows = bench_rows(_report([("model.fp32.onnx", "fp32", 5.0, False)]), manifest)
    assert rows[0]["vs_dense_ort_fp32"] is None and "--reference" in notes(rows, manifest)[0]


def test_table_columns_stay_aligned_with_a_long_reference_name():
    from edgectl.fleet.benchtable import bench_rows, format_table

    rows = bench_rows(_report([("model.fp32.onnx", "fp32", 5.0, False),
                               ("dense.fp32.onnx", "fp32", 10.0, True)]), {"artifacts": []})
    head, *lines = format_table(rows).splitlines()
    end = head.index("format") + len("format")
    assert [ln[end - 4:end] for ln in lines] == ["onnx", "onnx"], format_table(rows)
    assert "dense.fp32.onnx (dense ref)" in lines[1]


def test_bench_of_a_build_measures_its_dense_baseline(cli_runner, tiny_checkpoint, tmp_path):
    """The user's case: `edgectl build`, then `edgectl bench --device local` on its bundle;
    the dense FP32 ONNX of OUT/baseline is exported and measured in the same run."""
    out = tmp_path / "build"
    res = cli_runner.invoke(main, [
        "build", "--from", str(tiny_checkpoint), "--img-size", "32", "--train-size", "48",
        "--test-size", "24", "--prune", "unstructured", "--sparsity", "0.5",
        "--finetune-epochs", "0", "--formats", "onnx", "--calib-size", "8",
        "--latency-runs", "3", "--min-accuracy", "0", "--out", str(out)],
        env={"EDGECTL_CACHE": str(tmp_path / "cache")})
    assert res.exit_code == 0, res.output
    res = cli_runner.invoke(main, ["bench", "-d", "local", "-b", str(out / "bundle"), "--runs",
                                   "5", "--json", "--results-dir", str(tmp_path / "runs")])
    assert res.exit_code == 0, res.output
    [run] = json.loads(res.stdout)
    rows = {r["artifact"]: r for r in run["table"]}
    assert set(rows) == {"model.fp32.onnx", "model.int8.onnx", "dense.fp32.onnx"}
    dense = rows["dense.fp32.onnx"]
    assert dense["reference"] and dense["vs_dense_ort_fp32"] == 1
    manifest = json.loads((out / "bundle" / "manifest.json").read_text())
    for a in manifest["artifacts"]:
        r = rows[a["path"]]
        assert r["accuracy"] == a["metrics"]["accuracy"]  # the test set's, from the build
        assert r["agreement"] == 1.0  # same runtime as at build: the recorded outputs
        assert r["vs_dense_ort_fp32"] > 0 and r["sparsity"] == pytest.approx(0.5, abs=0.01)
    fp32_ratio = rows["model.fp32.onnx"]["vs_dense_ort_fp32"]
    assert ("brings no speed" in " ".join(run["notes"])) == (fp32_ratio >= 0.9)
    res = cli_runner.invoke(main, ["bench", "-d", "local", "-b", str(out / "bundle"), "--runs",
                                   "3", "--results-dir", str(tmp_path / "runs")])
    assert res.exit_code == 0 and "vs dense" in res.output and "(dense ref)" in res.output
