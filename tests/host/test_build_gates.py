"""Build's INT8 accuracy gate (``--max-accuracy-drop``) and the speed note: the decision,
what the manifest records, and what the board then serves."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_common import bundle as B
from edge_common.errors import BundleError
from edge_common.preprocess import InputSpec
from edgectl.pipeline.build import ArtifactResult, Gate
from edgectl.pipeline.gates import int8_drop_gate
from edgectl.pipeline.speed import NO_SPEED_RATIO, speed_note


def _art(fmt: str, precision: str, acc: float, vs_fp32: float | None = None) -> ArtifactResult:
    a = ArtifactResult(fmt, precision, Path(f"model.{precision}.{fmt}"), {"max_abs_diff": 0.0})
    a.accuracy, a.accuracy_vs_fp32 = acc, vs_fp32
    return a


def test_int8_drop_gate_marks_only_the_artifact_that_drops_too_much():
    arts = [_art("onnx", "fp32", 0.90), _art("onnx", "int8", 0.875, -0.025),
            _art("tflite", "fp32", 0.90), _art("tflite", "int8", 0.895, -0.005)]
    lines = int8_drop_gate(arts, max_drop=1.0)          # points, as --max-accuracy-drop
    assert [a.deployable for a in arts] == [True, False, True, True]
    assert len(lines) == 1 and "model.int8.onnx" in lines[0] and "2.50 points" in lines[0]
    assert "--max-accuracy-drop 1" in lines[0]
    # a looser gate lets it through; an INT8 that gains is never held back
    arts = [_art("onnx", "fp32", 0.90), _art("onnx", "int8", 0.875, -0.025),
            _art("tflite", "int8", 0.95, +0.05)]
    assert int8_drop_gate(arts, max_drop=3.0) == [] and all(a.deployable for a in arts)
    assert int8_drop_gate(arts, max_drop=2.5) == []     # exactly at the limit passes
    gated = arts[1].gate_metrics(Gate(0.5, (0.3, "ok"), 3.0))
    assert gated["deployable"] is True and gated["max_accuracy_drop"] == 3.0
    assert gated["accuracy_vs_fp32"] == pytest.approx(-0.025)


def test_board_serves_fp32_when_the_int8_twin_is_not_deployable(tmp_path):
    """The manifest records the gate; ``select_artifact`` skips the failed file and refuses
    it when asked for by name (the agent then stays in its safe state)."""
    from edgectl.pipeline.bundle_writer import write_bundle
    from edgectl.pipeline.export import export_onnx
    from edgectl.pipeline.model import build_model

    torch.manual_seed(0)
    fp32 = export_onnx(build_model(2, width_mult=0.25).eval(), tmp_path / "a.onnx", 32)
    int8 = shutil.copy(fp32, tmp_path / "b.onnx")  # the file's content is not the point here
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    bad = {"accuracy": 0.5, "accuracy_vs_fp32": -0.3, "max_accuracy_drop": 1.0,
           "deployable": False}
    out = write_bundle(
        tmp_path / "bundle", name="t", version="1", labels=["ok", "bad"], reject_labels=["bad"],
        input_spec=InputSpec(size=32), metrics={}, baseline={}, provenance={},
        min_accuracy=0.0, test_inputs=x, default_precision="int8",
        artifacts=[{"path": fp32, "format": "onnx", "precision": "fp32",
                    "metrics": {"accuracy": 0.8, "deployable": True}},
                   {"path": int8, "format": "onnx", "precision": "int8", "metrics": bad}])
    b = B.load_bundle(out)
    assert b.deployable  # the bundle stands: its FP32 file passed
    entry = next(a for a in b.manifest["artifacts"] if a["precision"] == "int8")
    assert entry["metrics"]["deployable"] is False and entry["metrics"]["accuracy_vs_fp32"] == -0.3
    assert b.select_artifact("onnx").precision == "fp32"
    with pytest.raises(BundleError, match="not deployable"):
        b.select_artifact("onnx", "int8")


def test_speed_note_names_structured_only_when_unstructured_brings_no_speed():
    slow = speed_note("unstructured", 1.02)
    assert "--prune structured" in slow and "1.02x" in slow
    assert "--prune structured" in speed_note("unstructured", NO_SPEED_RATIO)
    assert "--prune structured" in speed_note("unstructured", None)  # not measured: still zeros
    fast = speed_note("unstructured", 0.5)
    assert "--prune structured" not in fast and "0.50x" in fast
    assert "--prune structured" not in speed_note("structured", 1.0)


def test_build_cli_declares_the_int8_gate(cli_runner, tmp_path):
    from edgectl.cli import main

    res = cli_runner.invoke(main, ["build", "--help"])
    assert "--max-accuracy-drop PTS" in res.output and "[default: 1.0;" in res.output
    res = cli_runner.invoke(main, ["build", "--max-accuracy-drop", "-1",
                                   "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "--max-accuracy-drop" in res.output
    assert not (tmp_path / "out").exists()
