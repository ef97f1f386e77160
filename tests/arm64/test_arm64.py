"""arm64 userland: the device wheel on Debian bookworm arm64 (qemu-user), both runtimes.

Run with ``make test-arm64``. Every command below runs inside the emulated root; nothing
here asserts a timing (the bench figures go to benchmarks/results/arm64.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.arm64

PROBE = """
import importlib.metadata as md, json, platform, sys
import numpy
import onnxruntime
from ai_edge_litert.interpreter import Interpreter  # noqa: F401  (imports the C++ runtime)
import edge_agent, edge_common
venv_numpy = [d.version for d in md.distributions(path=[p for p in sys.path if 'venv' in p])
              if (d.metadata['Name'] or '').lower() == 'numpy']
print(json.dumps({
    'machine': platform.machine(),
    'python': platform.python_version(),
    'numpy': numpy.__version__,
    'numpy_file': numpy.__file__,
    'venv_numpy': venv_numpy,
    'onnxruntime': onnxruntime.__version__,
    'ai_edge_litert': md.version('ai-edge-litert'),
    'ml_dtypes': md.version('ml-dtypes'),
    'edge_agent': edge_agent.__file__,
    'torch_loaded': 'torch' in sys.modules,
}))
"""


def _json_line(text: str) -> dict:
    lines = [ln for ln in text.splitlines() if ln.startswith("{")]
    assert lines, f"no JSON line in: {text[-2000:]}"
    return json.loads(lines[-1])


@pytest.fixture(scope="session")
def probe(in_root, arm64_venv: str, arm64_work: Path) -> dict:
    (arm64_work / "probe.py").write_text(PROBE)
    res = in_root(f"{arm64_venv}/bin/python /work/probe.py")
    assert res.returncode == 0, res.stderr[-3000:]
    info = _json_line(res.stdout)
    (arm64_work / "probe.json").write_text(json.dumps(info))
    return info


def test_root_is_aarch64_debian_python_and_numpy(probe, arm64_venv):
    assert probe["machine"] == "aarch64"
    assert probe["python"] == "3.11.2"  # bookworm's python3
    # Debian's numpy from apt, not a wheel in the venv shadowing it
    assert probe["numpy"].startswith("1.24.")
    assert probe["numpy_file"].startswith("/usr/lib/python3/dist-packages/numpy/")
    assert probe["venv_numpy"] == []
    assert probe["edge_agent"].startswith(arm64_venv + "/")
    assert probe["torch_loaded"] is False


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_agent_verifies_and_classifies_on_each_runtime(
    in_root, arm64_venv, arm64_work, probe, fmt, precision
):
    """`edge-agent run`: load + signature + test-vector replay, then 12 synthetic items."""
    run_dir = arm64_work / f"run-{fmt}-{precision}"
    run_dir.mkdir()
    manifest = json.loads((arm64_work / "bundle" / "manifest.json").read_text())
    cfg = {
        "device_id": f"arm64-{fmt}-{precision}",
        "log_level": "info",
        "bundle": {"path": "/work/bundle", "public_key": "/work/sign.pub"},
        "runtime": {"type": fmt, "precision": precision, "threads": 1},
        "camera": {"type": "synthetic", "size": 32, "give_up_s": 30, "retry_backoff_s": 0.05},
        "trigger": {"type": "interval", "rate_hz": 0, "pin_factory": "mock"},
        "actuator": {"type": "gpio", "pin": 17, "pin_factory": "mock"},
        "journal": {"dir": f"/work/{run_dir.name}/journal"},
        "samples": {"rate": 0.0},
    }
    (run_dir / "agent.yaml").write_text(yaml.safe_dump(cfg))
    res = in_root(
        f"{arm64_venv}/bin/edge-agent run -c /work/{run_dir.name}/agent.yaml --max-items 12 --json"
    )
    assert res.returncode == 0, res.stderr[-3000:]
    summary = _json_line(res.stdout)
    assert summary["items"] == 12 and summary["errors"] == 0, summary
    assert summary["ok"] + summary["rejects"] + summary["reviews"] == 12
    assert summary["model_version"] == manifest["version"]
    count = manifest["test_vectors"]["count"]
    assert f"{fmt}/{precision} verified ({count} test vectors" in res.stderr, res.stderr[-3000:]
    assert (run_dir / "journal").is_dir()


def test_bench_measures_every_artifact(in_root, arm64_venv, arm64_work, probe):
    """`edge-agent bench`: every artifact loads and scores its vectors; figures to benchmarks/."""
    res = in_root(
        f"{arm64_venv}/bin/edge-agent bench --bundle /work/bundle --public-key /work/sign.pub "
        "--runs 30 --warmup 5 --json"
    )
    assert res.returncode == 0, res.stderr[-3000:]
    report = _json_line(res.stdout)
    kinds = {(r["format"], r["precision"]) for r in report["results"]}
    assert kinds == {("onnx", "fp32"), ("onnx", "int8"), ("tflite", "fp32"), ("tflite", "int8")}
    for row in report["results"]:
        assert "error" not in row, row
        assert row["vectors"] > 0 and row["agreement"] is not None
        assert row["latency_ms"]["p50"] > 0
    assert report["machine"]["arch"] == "aarch64"
    (arm64_work / "bench.json").write_text(json.dumps(report))
    out = os.environ.get("EDGECTL_ARM64_RESULTS")
    if out:  # `make test-arm64` records the smoke figures
        subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "bench_arm64.py"),
             "--bench", str(arm64_work / "bench.json"), "--probe", str(arm64_work / "probe.json"),
             "--out", out],
            check=True,
        )  # fmt: skip
