"""`edge-agent bench`: the JSON of docs/architecture.md for every artifact × thread count."""

from __future__ import annotations

import json
from pathlib import Path

from edge_agent.cli import main


def test_bench_json_per_contract(tiny_bundle, capsys):
    rc = main(
        [
            "bench",
            "--bundle",
            str(tiny_bundle),
            "--threads",
            "1,2",
            "--runs",
            "5",
            "--warmup",
            "1",
            "--json",
        ]
    )
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) >= {"device", "machine", "bundle", "results", "created"}
    m = report["machine"]
    assert set(m) >= {"cpu", "cores", "arch", "governor", "temperature_c", "throttled", "runtimes"}
    assert m["runtimes"]["onnxruntime"]
    assert report["bundle"] == {"name": "tiny-colour", "version": "test-1"}
    assert [(r["artifact"], r["threads"]) for r in report["results"]] == [
        ("model.fp32.onnx", 1),
        ("model.fp32.onnx", 2),
    ]
    for r in report["results"]:
        assert set(r["latency_ms"]) == {"p50", "p95", "p99"}
        assert r["latency_ms"]["p50"] <= r["latency_ms"]["p99"]
        assert r["load_ms"] > 0 and r["throughput_fps"] > 0 and r["peak_rss_mb"] > 10
        # Agreement with the outputs recorded in the bundle, not an "accuracy".
        assert r["agreement"] == 1.0 and 0 <= r["max_abs_diff"] < 1e-4
        assert "accuracy" not in r
        # The fixture also stores labels "y": only then is a labels_accuracy reported.
        assert r["labels_accuracy"] == 1.0
        assert r["bytes"] == (tiny_bundle / "model.fp32.onnx").stat().st_size


def test_bench_measures_a_reference_model_beside_the_artifacts(tiny_bundle, tmp_path, capsys):
    """--reference (the dense FP32 model on a real run) is measured like an artifact and
    marked; it has no recorded outputs, so no agreement. A model the runtime refuses is a
    row with its error, not a crash of the whole benchmark."""
    import shutil

    from onnxkit import tiny_onnx

    dense = shutil.copy(tiny_bundle / "model.fp32.onnx", tmp_path / "dense.onnx")
    wrong = tiny_onnx(tmp_path / "wrong-input.onnx")  # 4×4 input: the bundle's vectors do not fit
    for ref, ok in ((dense, True), (wrong, False)):
        rc = main(["bench", "--bundle", str(tiny_bundle), "--runs", "3", "--warmup", "0",
                   "--no-isolate", "--json", "--reference", str(ref)])
        assert rc == 0
        rows = json.loads(capsys.readouterr().out)["results"]
        refs = [r for r in rows if r.get("reference")]
        assert [r["artifact"] for r in refs] == [Path(ref).name]
        if ok:
            assert refs[0]["agreement"] is None and refs[0]["latency_ms"]["p50"] > 0
        else:
            assert refs[0]["error"].startswith("failed: ")
        assert all(r["agreement"] == 1.0 for r in rows if not r.get("reference"))


def test_bench_table_in_process(tiny_bundle, capsys):
    rc = main(
        ["bench", "--bundle", str(tiny_bundle), "--runs", "3", "--warmup", "0", "--no-isolate"]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "model.fp32.onnx" in out and "tiny-colour@test-1" in out
