"""Adaptive batch norm (``training.recalibrate_bn``): a BN layer's running statistics are
re-estimated from the data, the momentum restored, the model left in eval mode."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import TensorDataset

from edgectl.pipeline.training import recalibrate_bn


def test_running_statistics_become_the_datas_and_nothing_else_changes():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4))
    bn = model[1]
    bn.running_mean.fill_(100.0)        # statistics of another network (before a cut)
    bn.running_var.fill_(1e-3)
    weights = model[0].weight.clone()
    x = torch.randn(256, 3, 4, 4) * 2.0 + 3.0
    data = TensorDataset(x, torch.zeros(256, dtype=torch.long))
    seen = recalibrate_bn(model, data, batches=4, batch_size=64)
    assert seen == 256 and not model.training and bn.momentum == 0.1
    with torch.no_grad():
        act = model[0](x)
    assert torch.allclose(bn.running_mean, act.mean(dim=(0, 2, 3)), atol=1e-4)
    assert torch.allclose(bn.running_var, act.var(dim=(0, 2, 3)), rtol=0.05)
    assert torch.equal(model[0].weight, weights)      # no gradient step


def test_a_model_without_batch_norm_is_left_alone():
    model = nn.Sequential(nn.Conv2d(3, 4, 1))
    data = TensorDataset(torch.randn(8, 3, 4, 4), torch.zeros(8, dtype=torch.long))
    assert recalibrate_bn(model, data) == 0
