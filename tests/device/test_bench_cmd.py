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
        # The fixture stores labels "y" for its vectors: accuracy is against them.
        assert r["accuracy"] == 1.0 and r["accuracy_on"] == "labels"


def test_bench_table_in_process(tiny_bundle, capsys):
    rc = main(
        ["bench", "--bundle", str(tiny_bundle), "--runs", "3", "--warmup", "0", "--no-isolate"]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "model.fp32.onnx" in out and "tiny-colour@test-1" in out
