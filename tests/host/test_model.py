from __future__ import annotations

import pytest
import torch
from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

from edge_common.errors import ModelError
from edgectl.pipeline.model import build_model


@pytest.fixture(scope="module")
def imagenet_state(tmp_path_factory):
    """A torchvision MobileNetV2 ImageNet-shaped state_dict written to a file (random values)."""
    torch.manual_seed(123)
    state = mobilenet_v2(weights=None).state_dict()
    path = tmp_path_factory.mktemp("w") / "mnv2.pth"
    torch.save(state, path)
    return path, state


def test_head_is_swapped():
    m = build_model(6, width_mult=0.25)
    assert m.classifier[-1].out_features == 6
    assert m(torch.zeros(2, 3, 32, 32)).shape == (2, 6)


def test_weights_from_local_file(imagenet_state):
    path, state = imagenet_state
    m = build_model(6, weights=str(path))
    got = m.state_dict()
    assert torch.equal(got["features.0.0.weight"], state["features.0.0.weight"])
    assert torch.equal(got["features.18.1.running_mean"], state["features.18.1.running_mean"])
    assert got["classifier.1.weight"].shape == (6, 1280)  # new head, not ImageNet's 1000


def test_imagenet_weights_absent_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ModelError, match="ImageNet weights not found.*--weights PATH"):
        build_model(6, weights="imagenet")


def test_imagenet_weights_from_the_torch_hub_cache(monkeypatch, tmp_path, imagenet_state):
    path, state = imagenet_state
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = (
        tmp_path / "hub" / "checkpoints" / MobileNet_V2_Weights.IMAGENET1K_V2.url.rsplit("/", 1)[1]
    )
    cached.parent.mkdir(parents=True)
    cached.write_bytes(path.read_bytes())
    m = build_model(3, weights="imagenet")
    assert torch.equal(m.state_dict()["features.0.0.weight"], state["features.0.0.weight"])


def test_bad_weights(tmp_path, imagenet_state):
    with pytest.raises(ModelError, match="not found"):
        build_model(6, weights=str(tmp_path / "nope.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_text("not a tensor file")
    with pytest.raises(ModelError, match="cannot read weights"):
        build_model(6, weights=str(junk))
    other = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(ModelError, match="not a torchvision MobileNetV2"):
        build_model(6, weights=str(other))
    with pytest.raises(ModelError, match="width_mult=1.0"):
        build_model(6, weights=str(imagenet_state[0]), width_mult=0.5)
    with pytest.raises(ModelError):
        build_model(1)
