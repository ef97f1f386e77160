"""Per-unit structured pruning (``search_units.stage_prune``; two units per stage, its
hidden and its output width): the search's candidate maker."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models import mobilenet_v2

from edge_common.errors import ConfigError, ModelError
from edgectl.pipeline import search_units

IMG = 32
KEEP = [1.0, 1.0, 0.5, 0.75, 0.75, 0.5, 0.5, 0.5, 0.25, 0.5, 0.5, 0.5, 1.0, 1.0, 1.0]


@pytest.fixture(scope="module")
def dense() -> nn.Module:
    torch.manual_seed(0)
    return mobilenet_v2(width_mult=0.5, num_classes=6).eval()


def _outs(model: nn.Module, names: list[str]) -> list[int]:
    mods = dict(model.named_modules())
    return [mods[n].out_channels for n in names]


def test_every_stage_keeps_its_share_rounded_to_the_multiple(dense):
    pruned = search_units.stage_prune(dense, KEEP, IMG, round_to=8)
    for k, names in enumerate(search_units.unit_convs(dense)):
        for want, got in zip(_outs(dense, names), _outs(pruned, names), strict=True):
            assert got == min(want, search_units.round_channels(KEEP[k] * want, 8))
            assert got % 8 == 0
    # the units left at 1.0 (the head among them) and the classifier are untouched
    for u in (0, 1, 12, 13, 14):
        names = search_units.unit_convs(dense)[u]
        assert _outs(pruned, names) == _outs(dense, names)
    assert pruned.features[18][0].out_channels == dense.features[18][0].out_channels
    assert pruned.classifier[-1].out_features == 6
    keep = search_units.stage_keep(pruned, dense)
    assert keep[0] == 1.0 and keep[-1] == 1.0 and keep[8] < 0.5
    assert pruned(torch.randn(2, 3, IMG, IMG)).shape == (2, 6)


def test_the_original_is_untouched_and_pruning_continues_from_a_pruned_model(dense):
    before = [p.clone() for p in dense.parameters()]
    once = search_units.stage_prune(dense, KEEP, IMG)
    assert all(torch.equal(a, b) for a, b in zip(before, dense.parameters(), strict=True))
    deeper = [0.5] * 8 + [0.25, 0.5, 0.5, 0.5, 0.5, 0.5, 1.0]
    twice = search_units.stage_prune(once, deeper, IMG, original=dense)
    direct = search_units.stage_prune(dense, deeper, IMG)
    names = [n for s in search_units.unit_convs(dense) for n in s]
    assert _outs(twice, names) == _outs(direct, names)  # ratios are of the dense model
    with pytest.raises(ModelError, match="only shrink"):
        search_units.stage_prune(twice, [1.0] * 15, IMG, original=dense)


def test_channels_are_removed_not_reinitialised(dense):
    """The kept filters are the dense model's own rows (Torch-Pruning ranks each coupled
    group by the L2 norm over all its layers, so which rows is its choice)."""
    pruned = search_units.stage_prune(dense, [1.0] * 12 + [0.5, 1.0, 1.0], IMG, round_to=None)
    w = dense.features[17].conv[0][0].weight.detach().flatten(1)  # stage 6's expansion
    kept = pruned.features[17].conv[0][0].weight.detach().flatten(1)
    assert kept.shape[0] == w.shape[0] // 2
    assert all(any(torch.equal(row, d) for d in w) for row in kept)


@pytest.mark.parametrize("keep", [[1.0] * 14, [1.0] * 14 + [0.0], [1.2] + [1.0] * 14])
def test_bad_keep_vectors_are_one_clear_error(dense, keep):
    with pytest.raises(ConfigError, match="15 per-unit keep ratios"):
        search_units.stage_prune(dense, keep, IMG)


def test_a_model_that_is_not_mobilenet_v2_is_refused():
    with pytest.raises(ModelError, match="MobileNetV2"):
        search_units.stage_prune(nn.Sequential(nn.Conv2d(3, 8, 3)), [1.0] * 15, IMG)


def test_round_channels():
    assert search_units.round_channels(12, 8) == 16 and search_units.round_channels(11.9, 8) == 8
    assert search_units.round_channels(3, 8) == 8 and search_units.round_channels(5.4, None) == 5


def test_the_pruned_model_exports_to_onnx_and_checkpoints(dense, tmp_path):
    from edgectl.pipeline.checkpoint import load_checkpoint, save_checkpoint
    from edgectl.pipeline.export import check_parity, export_onnx

    pruned = search_units.stage_prune(dense, KEEP, IMG)
    path = export_onnx(pruned, tmp_path / "m.onnx", IMG)
    x = np.random.default_rng(0).standard_normal((4, 3, IMG, IMG)).astype(np.float32)
    assert check_parity(pruned, path, "onnx", x)["top1_agreement"] == 1.0
    ckpt = save_checkpoint(pruned, {"arch": "mobilenet_v2", "num_classes": 6, "width_mult": 0.5},
                           tmp_path / "model.pt")
    back, _ = load_checkpoint(ckpt)
    t = torch.from_numpy(x)
    with torch.no_grad():
        assert torch.allclose(back.eval()(t), pruned(t), atol=1e-5)


def test_a_stage_has_two_units_its_hidden_width_and_its_residual_width(dense):
    units = search_units.unit_convs(dense)
    assert len(units) == search_units.UNITS == 15
    assert units[0][0] == "features.0.0" and units[1] == ["features.1.conv.1"]
    assert units[3] == ["features.2.conv.2", "features.3.conv.2"]    # stage 1's projections
    assert "features.2.conv.0.0" in units[2] and "features.2.conv.1.0" in units[2]
    assert units[-1] == ["features.18.0"]                            # the head
    assert sorted(n for u in units for n in u) == sorted(
        n for n, c in dense.named_modules() if isinstance(c, nn.Conv2d))
    # cut stage 2's expansions only: its residual stream (and the stem) keep their width
    keep = [1.0] * 4 + [0.25] + [1.0] * 10
    pruned = search_units.stage_prune(dense, keep, IMG)
    assert _outs(pruned, units[5]) == _outs(dense, units[5])
    assert all(g < d for g, d in zip(_outs(pruned, units[4]), _outs(dense, units[4]),
                                     strict=True))
    assert search_units.stage_keep(pruned, dense)[4] < 0.3
    assert pruned(torch.randn(1, 3, IMG, IMG)).shape == (1, 6)


def test_the_head_unit_cuts_features_18_and_the_classifier_follows(dense):
    keep = [1.0] * 14 + [0.25]
    pruned = search_units.stage_prune(dense, keep, IMG)
    head = dense.features[18][0].out_channels
    assert pruned.features[18][0].out_channels == search_units.round_channels(head / 4, 8)
    assert pruned.classifier[-1].in_features == pruned.features[18][0].out_channels
    assert pruned.classifier[-1].out_features == 6
    for names in search_units.unit_convs(dense)[:14]:
        assert _outs(pruned, names) == _outs(dense, names)
    assert search_units.stage_keep(pruned, dense)[14] == pytest.approx(0.25, abs=8 / head)
    assert pruned(torch.randn(1, 3, IMG, IMG)).shape == (1, 6)
