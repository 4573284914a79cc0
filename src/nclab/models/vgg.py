"""VGG-11 / VGG-16 with BatchNorm (CIFAR style: conv stack, global pool, 512-d features)."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from nclab.models.base import FP32Conv2d, Flatten

CFGS = {
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
}


def vgg_stages(name: str, in_ch: int) -> tuple["OrderedDict[str, nn.Module]", int]:
    stages: OrderedDict[str, nn.Module] = OrderedDict()
    cin = in_ch
    for i, block in enumerate(CFGS[name]):
        layers: list[nn.Module] = []
        for cout in block:
            layers += [(FP32Conv2d if cin <= 4 else nn.Conv2d)(cin, cout, 3, padding=1, bias=False),
                       nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            cin = cout
        layers.append(nn.MaxPool2d(2, ceil_mode=True))  # ceil: also works for 28x28 inputs
        stages[f"block{i + 1}"] = nn.Sequential(*layers)
    stages["pool"] = nn.Sequential(nn.AdaptiveAvgPool2d(1), Flatten())
    return stages, cin
