"""Checkpoints load with ``weights_only=True``: a crafted pickle never runs, old pickled
checkpoints are refused with a clear line, pruned models come back exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.models import mobilenet_v2

from edge_common.errors import ModelError
from edgectl.pipeline import checkpoint as C


class _Touch:
    """What an attacker puts in a checkpoint: unpickling it creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_crafted_pickle_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "model.pt"
    torch.save({"format": C.FORMAT, "version": C.VERSION, "model": _Touch(marker),
                "meta": {}}, evil)
    assert not marker.exists()
    with pytest.raises(ModelError, match="refusing to unpickle it, as that can run code"):
        C.load_checkpoint(evil)
    assert not marker.exists()                       # the __reduce__ never ran


def test_old_pickled_checkpoint_is_refused_with_a_clear_line(tmp_path):
    """A version-1 checkpoint (the whole nn.Module pickled) is not loaded, and says why."""
    old = tmp_path / "model.pt"
    torch.save({"format": C.FORMAT, "version": 1,
                "model": mobilenet_v2(width_mult=0.25, num_classes=3), "meta": {}}, old)
    with pytest.raises(ModelError) as err:
        C.load_checkpoint(old)
    msg = str(err.value)
    assert "re-create it with this edgectl" in msg and "\n" not in msg


def test_checkpoint_holds_only_tensors_and_plain_data(tmp_path):
    model = mobilenet_v2(width_mult=0.25, num_classes=3).eval()
    path = C.save_checkpoint(model, {"labels": ["a", "b", "c"], "num_classes": 3}, tmp_path)
    payload = torch.load(path, weights_only=True)     # would raise on any pickled object
    assert set(payload) == {"format", "version", "arch", "num_classes", "width_mult", "plan",
                            "state_dict", "meta"}
    loaded, meta = C.load_checkpoint(path)
    assert meta["labels"] == ["a", "b", "c"]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_weights_that_do_not_fit_the_plan_are_a_model_error(tmp_path):
    model = mobilenet_v2(width_mult=0.25, num_classes=3).eval()
    path = C.save_checkpoint(model, {"num_classes": 3}, tmp_path)
    payload = torch.load(path, weights_only=True)
    payload["plan"]["classifier.1"] = ["Linear", 1280, 7]
    torch.save(payload, path)
    with pytest.raises(ModelError, match="weights do not fit the saved channel plan"):
        C.load_checkpoint(path)
