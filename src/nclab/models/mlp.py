"""MLP (and the zero-hidden-layer ``linear`` model) for vectors, digits, Fashion-MNIST, synthetic data."""

from __future__ import annotations

import math
from collections import OrderedDict

from torch import nn

from nclab.models.base import Flatten


def mlp_stages(input_shape: tuple, width: int, depth: int,
               batchnorm: bool) -> tuple["OrderedDict[str, nn.Module]", int]:
    """``depth`` hidden Linear(+BN)+ReLU layers of ``width``; stage names ``fc1``..``fc{depth}``."""
    d_in = int(math.prod(input_shape))
    stages: OrderedDict[str, nn.Module] = OrderedDict()
    stages["flatten"] = Flatten()
    for i in range(depth):
        layers: list[nn.Module] = [nn.Linear(d_in, width, bias=not batchnorm)]
        if batchnorm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(nn.ReLU(inplace=True))
        stages[f"fc{i + 1}"] = nn.Sequential(*layers)
        d_in = width
    return stages, d_in
