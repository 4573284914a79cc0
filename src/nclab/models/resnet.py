"""ResNet-18, CIFAR variant (3x3 stem, no max-pool, BasicBlocks [2,2,2,2], 512-d features)."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from nclab.models.base import FP32Conv2d, Flatten


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


def resnet18_stages(in_ch: int, width: int = 64) -> tuple["OrderedDict[str, nn.Module]", int]:
    w = [width, 2 * width, 4 * width, 8 * width]
    stages: OrderedDict[str, nn.Module] = OrderedDict()
    stages["stem"] = nn.Sequential(FP32Conv2d(in_ch, w[0], 3, 1, 1, bias=False), nn.BatchNorm2d(w[0]),
                                   nn.ReLU(inplace=True))
    cin = w[0]
    for i, cout in enumerate(w):
        stride = 1 if i == 0 else 2
        stages[f"layer{i + 1}"] = nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1))
        cin = cout
    stages["pool"] = nn.Sequential(nn.AdaptiveAvgPool2d(1), Flatten())
    return stages, w[-1]
