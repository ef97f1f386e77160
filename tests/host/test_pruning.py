"""Pruning logic on a tiny MobileNetV2 (width 0.25, 32×32): no data, no training."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models import mobilenet_v2

from edge_common.errors import ConfigError, ModelError
from edgectl.pipeline import pruning, speed
from edgectl.pipeline.metrics import count_params
from edgectl.pipeline.schedules import linear_schedule, polynomial_schedule, schedule

IMG = 32


@pytest.fixture(scope="module")
def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return mobilenet_v2(width_mult=0.25, num_classes=6).eval()


@pytest.fixture
def model(tiny_model: nn.Module) -> nn.Module:
    return copy.deepcopy(tiny_model)


# ------------------------------------------------------------------------------ schedules


def test_linear_schedule_lands_on_target_not_past_it() -> None:
    assert linear_schedule(0.5, 0.2) == [0.2, 0.4, 0.5]
    assert linear_schedule(0.7, 0.1) == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    assert linear_schedule(0.5, 0.1, start=0.25) == pytest.approx([0.3, 0.4, 0.5])


def test_polynomial_schedule_is_front_loaded_and_ends_on_target() -> None:
    s = polynomial_schedule(0.6, 4)
    assert s[-1] == 0.6
    assert all(a < b for a, b in zip(s, s[1:], strict=False))
    gaps = np.diff([0.0, *s])
    assert all(a > b for a, b in zip(gaps, gaps[1:], strict=False))  # big steps first


@pytest.mark.parametrize("regime", ["oneshot", "iterative", "gradual"])
def test_schedule_rejects_bad_targets(regime: str) -> None:
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError):
            schedule(regime, bad)


# ---------------------------------------------------------------- every method × regime


@pytest.mark.parametrize("target", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("regime", ["oneshot", "iterative", "gradual"])
@pytest.mark.parametrize("method", ["unstructured", "structured"])
def test_lands_on_target_sparsity(
    model: nn.Module, method: str, regime: str, target: float
) -> None:
    p0 = count_params(model)
    pruned, rep = pruning.prune_model(
        model, method, regime, target, step=0.2, img_size=IMG, round_to=None
    )
    measured = (
        pruning.weight_sparsity(pruned)
        if method == "unstructured"
        else 1.0 - count_params(pruned) / p0
    )
    assert measured == pytest.approx(target, abs=0.01)
    assert rep["actual"] == pytest.approx(measured)
    assert rep["steps"][-1]["target"] == target
    for st in rep["steps"]:  # each step lands on its own target, computed on the original
        assert st["actual"] == pytest.approx(st["target"], abs=0.01)
    assert len(rep["steps"]) == (1 if regime == "oneshot" else len(linear_schedule(target, 0.2)))
    assert pruned(torch.randn(2, 3, IMG, IMG)).shape == (2, 6)


# --------------------------------------------------------------------------- unstructured


def test_unstructured_is_permanent_and_global(model: nn.Module) -> None:
    pruned, rep = pruning.prune_model(model, "unstructured", "oneshot", 0.5, img_size=IMG)
    for m in pruned.modules():
        assert not hasattr(m, "weight_orig") and not hasattr(m, "weight_mask")
        assert not m._forward_pre_hooks
    # one global threshold: per-layer sparsities differ, classifier untouched by default
    per_layer = [float((m.weight == 0).float().mean()) for m in pruning.prunable_layers(pruned)]
    assert max(per_layer) - min(per_layer) > 0.2
    assert int((pruning.classifier_of(pruned).weight == 0).sum()) == 0
    assert rep["params_after"] == rep["params_before"]  # shapes unchanged


def test_unstructured_can_include_classifier(model: nn.Module) -> None:
    pruned, _ = pruning.prune_model(
        model, "unstructured", "oneshot", 0.5, img_size=IMG, exclude_classifier=False
    )
    assert pruning.weight_sparsity(pruned, exclude_classifier=False) == pytest.approx(0.5, abs=1e-3)


def test_zeros_stay_zero_through_fine_tuning(model: nn.Module) -> None:
    calls = []

    def fake_fine_tune(m: nn.Module, after_step) -> float:  # type: ignore[no-untyped-def]
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        for _ in range(3):
            opt.zero_grad()
            m.train()
            m(torch.randn(4, 3, IMG, IMG)).sum().backward()
            opt.step()  # moves pruned weights off zero ...
            after_step()  # ... and the hook puts them back
        calls.append(pruning.weight_sparsity(m))
        return 0.5

    pruned, rep = pruning.prune_model(
        model, "unstructured", "iterative", 0.5, step=0.25, img_size=IMG, fine_tune=fake_fine_tune
    )
    assert calls == pytest.approx([0.25, 0.5], abs=1e-3)
    assert [s["accuracy"] for s in rep["steps"]] == [0.5, 0.5]
    assert pruning.weight_sparsity(pruned) == pytest.approx(0.5, abs=1e-3)


def test_refuses_to_prune_below_current_sparsity(model: nn.Module) -> None:
    pruned, _ = pruning.prune_model(model, "unstructured", "oneshot", 0.5, img_size=IMG)
    with pytest.raises(ConfigError, match="already at 0.500"):
        pruning.prune_model(pruned, "unstructured", "oneshot", 0.3, img_size=IMG)


@pytest.mark.parametrize(
    ("method", "regime", "target", "step"),
    [("magic", "oneshot", 0.5, 0.1), ("structured", "sometimes", 0.5, 0.1),
     ("structured", "oneshot", 1.0, 0.1), ("unstructured", "oneshot", 0.0, 0.1),
     ("unstructured", "iterative", 0.5, 0.0)],
)
def test_bad_requests_are_config_errors(
    model: nn.Module, method: str, regime: str, target: float, step: float
) -> None:
    with pytest.raises(ConfigError):
        pruning.prune_model(model, method, regime, target, step=step, img_size=IMG)


# ----------------------------------------------------------------------------- structured


def test_structured_removes_channels_physically(model: nn.Module) -> None:
    ref = copy.deepcopy(model)
    pruned, rep = pruning.prune_model(model, "structured", "oneshot", 0.5, img_size=IMG, round_to=8)
    convs = [m for m in pruned.modules() if isinstance(m, nn.Conv2d)]
    ref_convs = [m for m in ref.modules() if isinstance(m, nn.Conv2d)]
    assert sum(c.out_channels for c in convs) < sum(c.out_channels for c in ref_convs)
    assert all(c.out_channels % 8 == 0 for c in convs)  # round_to
    for c in convs:  # depthwise convs stay depthwise
        if c.groups > 1:
            assert c.groups == c.in_channels == c.out_channels
    for m in pruned.modules():  # batch norms follow their convs
        if isinstance(m, nn.Sequential) and len(m) >= 2 and isinstance(m[1], nn.BatchNorm2d):
            assert m[1].num_features == m[0].out_channels
    head = pruning.classifier_of(pruned)
    assert head.out_features == 6
    assert rep["macs_reduction"] > 0.2 and 0.0 < rep["channel_ratio"] < 1.0
    assert pruned(torch.randn(1, 3, IMG, IMG)).shape == (1, 6)  # residual adds still line up


def test_structured_chain_counts_against_the_original(model: nn.Module) -> None:
    p0 = count_params(model)
    half, rep = pruning.prune_model(
        model, "structured", "oneshot", 0.3, img_size=IMG, round_to=None
    )
    meta = {"pruning": rep}
    orig_params, orig_channels = pruning.lineage(meta, half)
    assert orig_params == p0
    more, rep2 = pruning.prune_model(
        half, "structured", "oneshot", 0.5, img_size=IMG, round_to=None,
        original_params=orig_params, original_channels=orig_channels,
    )
    assert 1 - count_params(more) / p0 == pytest.approx(0.5, abs=0.01)
    assert rep2["start"] == pytest.approx(rep["actual"])
    with pytest.raises(ConfigError, match="already"):
        pruning.prune_model(more, "structured", "oneshot", 0.4, img_size=IMG,
                            original_params=orig_params)


def test_structured_impossible_target_is_a_model_error(model: nn.Module) -> None:
    with pytest.raises(ModelError, match="cannot remove"):
        pruning.structured_step(model, 0.999, count_params(model), IMG, round_to=None)


# ------------------------------------------------------------------ save, load, export, speed


def test_pruned_model_saves_loads_and_exports_identically(model: nn.Module, tmp_path) -> None:
    from edge_common.runtime import open_session
    from edgectl.pipeline.checkpoint import load_checkpoint, save_checkpoint
    from edgectl.pipeline.export import export_onnx

    pruned, rep = pruning.prune_model(model, "structured", "oneshot", 0.5, img_size=IMG)
    pruned, _ = pruning.prune_model(
        pruned, "unstructured", "oneshot", 0.3, img_size=IMG,
        original_params=rep["original_params"],
    )
    x = torch.randn(3, 3, IMG, IMG)
    with torch.no_grad():
        before = pruned.eval()(x)
    save_checkpoint(pruned, {"pruning": rep}, tmp_path / "ckpt")
    loaded, meta = load_checkpoint(tmp_path / "ckpt")
    assert meta["pruning"]["method"] == "structured"
    with torch.no_grad():
        after = loaded(x)
    assert torch.equal(before, after)
    onnx_path = export_onnx(loaded, tmp_path / "m.onnx", IMG)
    sess = open_session(onnx_path, threads=1)
    got = np.concatenate([sess.run(x[i : i + 1].numpy()) for i in range(len(x))])
    np.testing.assert_allclose(got, after.numpy(), atol=1e-4)


def test_speed_report_shape_and_unstructured_note(model: nn.Module) -> None:
    dense = copy.deepcopy(model)
    pruned, _ = pruning.prune_model(model, "unstructured", "oneshot", 0.7, img_size=IMG)
    sp = speed.measure_speed(dense, pruned, IMG, "unstructured", runs=3, min_time_s=0.0,
                               rounds=1)
    for runtime in ("onnxruntime_fp32", "pytorch_eager"):
        assert sp[runtime]["dense_ms"] > 0 and sp[runtime]["pruned_ms"] > 0
        assert sp[runtime]["ratio"] == pytest.approx(
            sp[runtime]["pruned_ms"] / sp[runtime]["dense_ms"])
    # The note follows the measured ratio (3 runs on a shared machine can land either side).
    if sp["onnxruntime_fp32"]["ratio"] >= speed.NO_SPEED_RATIO:
        assert "zeros do not make dense kernels faster" in sp["note"]
        assert "--prune structured" in sp["note"]
    else:
        assert f"{sp['onnxruntime_fp32']['ratio']:.2f}x the dense latency" in sp["note"]
    size = sp["size"]
    assert size["pruned"]["onnx_bytes"] == pytest.approx(size["dense"]["onnx_bytes"], rel=0.01)
    assert size["pruned"]["onnx_gzip_bytes"] < 0.8 * size["dense"]["onnx_gzip_bytes"]
