"""The demo's final report renders the shapes the real commands print (no process started)."""

from __future__ import annotations

from pathlib import Path

from edgectl.demo import _fmt_ms, _report


def test_fmt_ms_takes_objects_numbers_and_missing():
    assert _fmt_ms({"p50": 1.234}) == "1.23 ms"
    assert _fmt_ms(0.5) == "0.50 ms"
    assert _fmt_ms({"p50": None}) == "-"
    assert _fmt_ms(None) == "-"


def test_report_shows_every_figure(tmp_path: Path):
    build = {
        "bundle": str(tmp_path / "bundle"),
        "baseline": {"accuracy": 0.914, "params": 2231558, "sparsity": 0.0,
                     "size_bytes": 9165963, "latency_ms": {"p50": 4.19, "p95": 4.4}},
        "model": {"accuracy": 0.905, "params": 1106510, "sparsity": 0.504,
                  "size_bytes": 4664139, "latency_ms": {"p50": 2.1}},
        "artifacts": [
            {"format": "onnx", "precision": "int8", "bytes": 1200000, "accuracy": 0.905,
             "latency_ms": 0.18, "max_abs_diff": 0.47},
        ],
    }
    summary = {"items": 1500, "rejects": 1290, "reviews": 25, "deadline_misses": 0,
               "accuracy": 0.91, "fps": 25.0,
               "latency_ms": {"total": {"p50": 4.5, "p95": 7.5, "p99": 10.1},
                              "actuation": {"p50": None, "p95": None, "p99": None}}}
    bench = [{"results": [{"artifact": "model.int8.onnx", "threads": 1,
                           "latency_ms": {"p50": 0.2, "p99": 0.3}, "throughput_fps": 4000.0}]}]
    status = {"devices": [{"device": "station-1", "received": 1500}]}
    text = _report(build, summary, status, bench, tmp_path, 300.0)
    for needle in ("0.9140", "0.9050", "9.17 MB", "4.19 ms", "onnx int8", "items inspected: 1500",
                   "rejects: 1290", "live accuracy", "0.91", "total 10.10 ms",
                   "end-to-end p99: 10.10 ms", "model.int8.onnx (1 thr)", "station-1",
                   str(tmp_path / "bundle")):
        assert needle in text, needle
