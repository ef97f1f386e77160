"""`edgectl export` / `edgectl quantize` end to end on the tiny checkpoint (ONNX only: fast)."""

from __future__ import annotations

import json

from edgectl.cli import main


def test_export_cli_json(cli_runner, tiny_checkpoint, tmp_path):
    res = cli_runner.invoke(main, ["export", str(tiny_checkpoint), "--format", "onnx",
                                   "--out", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    (row,) = out["artifacts"]
    assert out["test_images"] == 24  # the checkpoint's own data config, not the CLI defaults
    assert row["format"] == "onnx" and row["precision"] == "fp32"
    assert row["top1_agreement"] == 1.0 and row["accuracy"] == row["reference_accuracy"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.fp32.onnx"]


def test_quantize_cli_reuses_fp32_and_reports_int8_beside_it(cli_runner, tiny_checkpoint, tmp_path):
    args = ["quantize", str(tiny_checkpoint), "--format", "onnx", "--out", str(tmp_path),
            "--calib-size", "16", "--runs", "3"]
    res = cli_runner.invoke(main, [*args, "--json"])
    assert res.exit_code == 0, res.output
    fp32, int8 = json.loads(res.output)["artifacts"]
    assert (fp32["precision"], int8["precision"]) == ("fp32", "int8")
    assert int8["bytes"] < fp32["bytes"] and int8["latency_ms"]["p50"] > 0
    assert abs(int8["accuracy_drop"] - (fp32["accuracy"] - int8["accuracy"])) < 1e-9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.fp32.onnx", "model.int8.onnx"]
    # second run: the FP32 file still passes parity, so it is reused; table output for people
    res = cli_runner.invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "model.int8.onnx" in res.output and "Δ vs fp32" in res.output


def test_export_cli_bad_input_is_one_line(cli_runner, tiny_checkpoint, tmp_path):
    res = cli_runner.invoke(main, ["export", str(tiny_checkpoint), "--format", "coreml",
                                   "--out", str(tmp_path)])
    assert res.exit_code == 1 and "unknown export format 'coreml'" in res.output
    res = cli_runner.invoke(main, ["quantize", str(tmp_path / "nope.pt"), "--out", str(tmp_path)])
    assert res.exit_code == 1 and "checkpoint not found" in res.output
    assert list(tmp_path.iterdir()) == []


def test_export_cli_fails_on_parity(cli_runner, tiny_checkpoint, tmp_path, monkeypatch):
    from edgectl.pipeline import export as ex

    monkeypatch.setitem(ex.TOLERANCE, "fp32", {**ex.TOLERANCE["fp32"], "max_abs_rel": -1.0})
    res = cli_runner.invoke(main, ["export", str(tiny_checkpoint), "--format", "onnx",
                                   "--out", str(tmp_path)])
    assert res.exit_code == 1
    assert res.output.strip().splitlines()[-1].startswith("error: model.fp32.onnx: max abs diff")
    assert list(tmp_path.iterdir()) == []  # the unchecked file is not left behind
