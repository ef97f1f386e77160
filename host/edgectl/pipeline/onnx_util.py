"""A minimal FP32 ONNX export for measurements (the full export with parity is ``export``)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

OPSET = 17


def export_onnx(model: nn.Module, path: str | Path, img_size: int) -> Path:
    """Export ``model`` (batch 1, 3×img_size²) to ``path`` and return it.

    Uses the TorchScript exporter (``dynamo=False``): in torch 2.14 it is deprecated but
    still shipped, exports MobileNetV2 (pruned or not) in well under a second and gives
    the same graph ORT optimizes; the dynamo exporter is the fallback where it is gone.
    """
    p = Path(path)
    was_training = model.training
    model.eval()
    example = torch.zeros(1, 3, img_size, img_size)
    kwargs = {"opset_version": OPSET, "input_names": ["input"], "output_names": ["logits"]}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(model, (example,), str(p), dynamo=False, **kwargs)
    except TypeError:  # a torch without the ``dynamo`` switch exports the legacy way anyway
        torch.onnx.export(model, (example,), str(p), **kwargs)
    finally:
        model.train(was_training)
    return p
