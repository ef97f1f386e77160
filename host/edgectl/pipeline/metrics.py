"""Model size metrics: params, nonzero params, sparsity, MACs, size on disk."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_nonzero(model: nn.Module) -> int:
    return sum(int(torch.count_nonzero(p.detach())) for p in model.parameters())


def sparsity(model: nn.Module) -> float:
    """1 − nonzero/total over all parameters."""
    total = count_params(model)
    return 1.0 - count_nonzero(model) / total if total else 0.0


def count_macs(model: nn.Module, img_size: int) -> int:
    """Multiply-accumulates of one forward pass at ``img_size``² (Torch-Pruning's counter)."""
    import torch_pruning as tp

    was_training = model.training
    model.eval()
    example = torch.zeros(1, 3, img_size, img_size)
    macs, _ = tp.utils.count_ops_and_params(model, example)
    model.train(was_training)
    return int(macs)


def file_size(path: str | Path) -> int:
    return Path(path).stat().st_size


def compressed_size(path: str | Path) -> int:
    """gzip -9 size: what zeros from unstructured pruning buy on the wire and on disk."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0) as gz:
        gz.write(Path(path).read_bytes())
    return buf.tell()
