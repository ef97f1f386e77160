"""One pipeline: one calibration path (build, quantize and study hand ORT-INT8 the same
inputs) and one export-check-commit step (nothing unchecked is left behind)."""

from __future__ import annotations

import numpy as np
import pytest

from edge_common.errors import ModelError
from edge_common.preprocess import preprocess_batch


class _Stop(Exception):
    pass


def test_calibration_inputs_are_preprocessed_training_frames(tiny_data_config):
    from edgectl.pipeline.calibration import calibration_inputs
    from edgectl.pipeline.data import load_datasets

    ds = load_datasets(tiny_data_config, augment=False)
    x = calibration_inputs(ds, n=10, seed=3)
    assert x.shape == (10, 3, 32, 32) and x.dtype == np.float32
    assert len({x[i].tobytes() for i in range(10)}) == 10  # distinct frames, no repeats
    idx = sorted(np.random.default_rng(3).permutation(len(ds.train))[:10])
    expected = preprocess_batch([ds.train.frame(int(i))[0] for i in idx], ds.input_spec)
    np.testing.assert_array_equal(x, expected)  # the board's numpy preprocessing, bit for bit
    assert calibration_inputs(ds, n=500).shape[0] == len(ds.train)
    with pytest.raises(ModelError):
        calibration_inputs(ds, n=0)


def test_build_quantize_and_study_calibrate_on_identical_inputs(
    tiny_data_config, tiny_checkpoint, tmp_path, monkeypatch
):
    """Each entry point runs until ORT quantization, where the inputs are recorded."""
    from edgectl.pipeline import quantization
    from edgectl.pipeline.build import BuildConfig, run_build
    from edgectl.pipeline.checkpoint import load_checkpoint
    from edgectl.pipeline.data import load_datasets
    from edgectl.study import StudyConfig, _export_pair

    seen: dict[str, np.ndarray] = {}
    where = {"now": ""}

    def record(fp32, out, calib, **kw):
        seen[where["now"]] = np.array(calib)
        raise _Stop

    monkeypatch.setattr(quantization, "quantize_onnx", record)
    n, seed = 300, tiny_data_config.seed

    where["now"] = "build"
    cfg = BuildConfig(data=tiny_data_config, out=tmp_path / "b", prune="none",
                      formats=("onnx",), finetune_epochs=0, calib_size=n,
                      from_model=tiny_checkpoint, latency_runs=1, cache=False,
                      progress=False, min_accuracy=0.0)
    with pytest.raises(_Stop):
        run_build(cfg, echo=lambda _m: None)

    where["now"] = "quantize"
    model, _meta = load_checkpoint(tiny_checkpoint)
    with pytest.raises(_Stop):
        quantization.quantize_all(model, ["onnx"], tmp_path / "q", tiny_data_config,
                                  calib_size=n, runs=0)

    where["now"] = "study"
    study_cfg = StudyConfig(out=tmp_path / "s", data=tiny_data_config)
    assert study_cfg.seed0 == seed
    (tmp_path / "s").mkdir()
    with pytest.raises(_Stop):
        _export_pair(model, tmp_path / "s", load_datasets(tiny_data_config), study_cfg)

    assert set(seen) == {"build", "quantize", "study"}
    np.testing.assert_array_equal(seen["build"], seen["quantize"])
    np.testing.assert_array_equal(seen["build"], seen["study"])


def test_build_leaves_no_artifact_when_parity_fails(
    tiny_data_config, tiny_checkpoint, tmp_path, monkeypatch
):
    """The one export-check-commit step: an INT8 file failing parity is not left behind."""
    from edge_common.errors import ParityError
    from edgectl.pipeline import export as ex
    from edgectl.pipeline.build import BuildConfig, run_build

    real = ex.check_parity

    def int8_fails(model, path, fmt, x, y=None, precision="fp32", **kw):
        if precision == "int8":
            raise ParityError(f"{kw.get('name', path)}: forced failure")
        return real(model, path, fmt, x, y, precision=precision, **kw)

    monkeypatch.setattr(ex, "check_parity", int8_fails)
    cfg = BuildConfig(data=tiny_data_config, out=tmp_path / "b", prune="none",
                      formats=("onnx",), finetune_epochs=0, calib_size=8,
                      from_model=tiny_checkpoint, latency_runs=1, cache=False,
                      progress=False, min_accuracy=0.0)
    with pytest.raises(ParityError, match="forced failure"):
        run_build(cfg, echo=lambda _m: None)
    left = sorted(p.name for p in (tmp_path / "b" / "artifacts").iterdir())
    assert left == ["model.fp32.onnx"]  # checked FP32 kept; no INT8, no hidden temporary
    assert not (tmp_path / "b" / "bundle").exists()


def test_pruning_options_are_declared_once_for_build_prune_and_study(cli_runner):
    """Same names, defaults and help in build and prune; the study's grid says the same."""
    from edgectl.cli import main

    cmds = {name: main.get_command(None, name) for name in ("build", "prune", "study")}
    opts = {name: {p.name: p for p in cmd.params} for name, cmd in cmds.items()}
    for key in ("method", "sparsity", "regime", "step", "round_to", "finetune_epochs"):
        b, p = opts["build"][key], opts["prune"][key]
        assert (b.default, b.help) == (p.default, p.help), key
    assert opts["build"]["method"].opts == ["--prune", "--method"]
    assert opts["study"]["step"].help == opts["build"]["step"].help
    assert opts["build"]["sparsity"].help.split("sparsity ")[1] in opts["study"]["sparsities"].help


def test_a_bad_pruning_request_reads_the_same_in_build_prune_and_study(cli_runner, tmp_path):
    from edgectl.cli import main

    runs = {
        "build": ["build", "--prune", "structured", "--sparsity", "1.5", "--out", str(tmp_path)],
        "prune": ["prune", str(tmp_path / "m.pt"), "--method", "structured", "--sparsity", "1.5",
                  "--out", str(tmp_path / "p")],
        "study": ["study", "--sparsities", "1.5", "--out", str(tmp_path / "s")],
    }
    for name, args in runs.items():
        res = cli_runner.invoke(main, args)
        assert res.exit_code != 0, name
        assert "--sparsity must be in (0, 1), got 1.5" in res.output, (name, res.output)
