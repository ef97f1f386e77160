"""MobileNetV2 from torchvision with its ImageNet head swapped for N classes."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

from edge_common.errors import ModelError

log = logging.getLogger(__name__)

ARCH = "mobilenet_v2"


def build_model(
    num_classes: int,
    weights: str = "none",
    width_mult: float = 1.0,
    dropout: float = 0.2,
) -> nn.Module:
    """Return MobileNetV2 with an ``num_classes`` head.

    ``weights``: ``none`` (random init), ``imagenet`` (torchvision's IMAGENET1K_V2 from the
    local torch hub cache; never downloads when offline), or a path to a state_dict of the
    ImageNet model. Pretrained weights need ``width_mult=1.0``.
    """
    if num_classes < 2:
        raise ModelError(f"need at least 2 classes, got {num_classes}")
    model = mobilenet_v2(weights=None, width_mult=width_mult, dropout=dropout)
    if weights not in ("none", "", None):
        if width_mult != 1.0:
            raise ModelError("pretrained weights exist only for width_mult=1.0")
        model.load_state_dict(_load_imagenet_state(weights))
    in_features = model.classifier[-1].in_features
    model.classifier[-1] = nn.Linear(in_features, num_classes)
    return model


def _load_imagenet_state(weights: str) -> dict[str, torch.Tensor]:
    if weights == "imagenet":
        w = MobileNet_V2_Weights.IMAGENET1K_V2
        hub_dir = Path(torch.hub.get_dir()) / "checkpoints"
        fname = Path(w.url).name
        local = hub_dir / fname
        if not local.exists():
            raise ModelError(
                f"ImageNet weights not found at {local}; on a machine with network run "
                "`python -c \"import torchvision; "
                "torchvision.models.mobilenet_v2(weights='IMAGENET1K_V2')\"` "
                f"or download {w.url} and pass --weights PATH"
            )
        path = local
    else:
        path = Path(weights)
        if not path.is_file():
            raise ModelError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not a state_dict"
        raise ModelError(f"cannot read weights {path}: {err}") from err
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or "features.0.0.weight" not in state:
        raise ModelError(f"{path} is not a torchvision MobileNetV2 ImageNet state_dict")
    return state
