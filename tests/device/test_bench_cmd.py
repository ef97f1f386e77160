"""`edge-agent bench`: the JSON of docs/architecture.md for every artifact × thread count."""

from __future__ import annotations

import json

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
        # Agreement with the outputs recorded at build, not a fake accuracy on vectors.
        assert r["agreement"] == 1.0 and 0 <= r["max_abs_diff"] < 1e-4
        assert "accuracy_on" not in r
        # The table's fields: size and accuracy from the manifest, speed vs FP32 ONNX.
        assert r["size_mb"] > 0 and r["p50_ms"] == r["latency_ms"]["p50"]
        assert r["vs_fp32_ort"] == 1.0  # the FP32 ONNX row is its own reference
    assert report["pruning"]["method"] == "none"


def test_bench_table_in_process(tiny_bundle, capsys):
    rc = main(
        ["bench", "--bundle", str(tiny_bundle), "--runs", "3", "--warmup", "0", "--no-isolate"]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "model.fp32.onnx" in out and "tiny-colour@test-1" in out


def test_agreement_reports_a_board_that_disagrees(tiny_bundle, tmp_path, capsys):
    """Recorded outputs that this machine does not reproduce show as lower agreement and a
    large max abs diff (the bench reports; the update path is what refuses such a bundle)."""
    import numpy as np

    from edge_agent.bench import measure_artifact
    from edge_common.bundle import load_bundle

    b = load_bundle(tiny_bundle)
    x, expected = b.test_vectors()
    art = b.artifacts[0]
    want = expected[art.path].copy()
    row = measure_artifact(str(b.artifact_path(art)), art.format, 1, x, want, 3, 1)
    assert row["agreement"] == 1.0
    flipped = want[:, ::-1].copy()  # every top-1 moved to another class
    row = measure_artifact(str(b.artifact_path(art)), art.format, 1, x, flipped, 3, 1)
    assert row["agreement"] < 1.0 and row["max_abs_diff"] > 0.01
    assert np.isfinite(row["max_abs_diff"])
    b.close()
