"""``fastnet``: a small conv net built for speed, after Keller Jordan's airbench (CIFAR-10 speed records).

Stem: 2x2 conv (padding 0) producing ``2 * 4 * C`` channels. With ``whiten=True`` its weights are set
from the data (``data_init``): the eigenvectors ``v_i`` of the 2x2-patch covariance scaled by
``1/sqrt(lambda_i + eps)``, and their negatives; they stay frozen, only the bias trains.
Then three groups ``conv3x3 -> maxpool2 -> BN -> act`` followed by ``group_depth - 1`` times
``conv3x3 -> BN -> act`` (default 2 convs per group, airbench94's net; 3 is airbench96's deeper one), of widths
``widths`` (default 64/256/256), a global max-pool and a constant scale (default 1/9) -> features
of dimension ``widths[-1]``. Convs start as a partial identity (dirac) map; BN weights are frozen at 1.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from nclab.models.base import Flatten, Scale
from nclab.utils.errors import NclabError


class FrozenWeightBN(nn.BatchNorm2d):
    """BatchNorm with a fixed scale of 1 (only the shift trains), airbench's momentum/eps."""

    def __init__(self, num_features: int, momentum: float = 0.4, eps: float = 1e-12):
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.weight.requires_grad_(False)


def _dirac_conv(cin: int, cout: int) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
    with torch.no_grad():
        w = conv.weight
        k = min(cin, cout)
        torch.nn.init.dirac_(w[:k])
    return conv


class ConvGroup(nn.Module):
    def __init__(self, cin: int, cout: int, act: str, bn_momentum: float, depth: int = 2):
        super().__init__()
        self.conv1 = _dirac_conv(cin, cout)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = FrozenWeightBN(cout, bn_momentum)
        self.conv2 = _dirac_conv(cout, cout)
        self.norm2 = FrozenWeightBN(cout, bn_momentum)
        for i in range(3, depth + 1):  # deeper groups (airbench96): conv3, norm3, ...
            self.add_module(f"conv{i}", _dirac_conv(cout, cout))
            self.add_module(f"norm{i}", FrozenWeightBN(cout, bn_momentum))
        self.depth = depth
        self.act = nn.GELU() if act == "gelu" else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        for i in range(2, self.depth + 1):
            x = self.act(getattr(self, f"norm{i}")(getattr(self, f"conv{i}")(x)))
        return x


class WhiteningStem(nn.Module):
    def __init__(self, in_ch: int, act: str, whiten: bool):
        super().__init__()
        # bias kept apart: with a frozen weight autograd then skips the conv's backward entirely
        # (oneDNN's backward for this 3-channel 2x2 conv was 70% of a training step on CPU)
        self.conv = nn.Conv2d(in_ch, 2 * 4 * in_ch, 2, padding=0, bias=False)
        self.bias = nn.Parameter(torch.zeros(2 * 4 * in_ch))
        self.whiten = whiten
        if whiten:
            self.conv.weight.requires_grad_(False)
        self.act = nn.GELU() if act == "gelu" else nn.ReLU()

    @torch.no_grad()
    def init_whitening(self, x: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the stem to the patch-whitening transform of normalised images ``x`` (N, C, H, W)."""
        c = x.shape[1]
        patches = x.float().unfold(2, 2, 1).unfold(3, 2, 1)  # (N, C, H-1, W-1, 2, 2)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * 4).double()
        patches = patches - patches.mean(0)
        cov = patches.T @ patches / patches.shape[0]
        evals, evecs = torch.linalg.eigh(cov)
        w = (evecs.T / torch.sqrt(evals.clamp_min(0) + eps)[:, None]).reshape(c * 4, c, 2, 2)
        self.conv.weight.copy_(torch.cat([w, -w]).to(self.conv.weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # fp32 even under autocast: 3 input channels make bf16 kernels slow and the cost is tiny
        with torch.autocast(x.device.type, enabled=False):
            h = self.conv(x.float())
        return self.act(h + self.bias.view(1, -1, 1, 1))


def fastnet_stages(in_ch: int, widths=(64, 256, 256), act: str = "gelu", whiten: bool = True,
                   bn_momentum: float = 0.4, scale: float = 1 / 9,
                   group_depth: int = 2) -> tuple["OrderedDict[str, nn.Module]", int]:
    widths = list(widths)
    if isinstance(group_depth, bool) or not isinstance(group_depth, int) or group_depth < 2:
        raise NclabError(f"model.group_depth for fastnet must be an integer >= 2 (convs per group), "
                         f"got {group_depth!r}")
    if len(widths) != 3 or not all(isinstance(w, int) and w > 0 for w in widths):
        raise NclabError(f"model.widths for fastnet must be 3 positive integers, got {widths!r}")
    if act not in ("gelu", "relu"):
        raise NclabError(f"model.act must be gelu or relu, got {act!r}")
    stages: OrderedDict[str, nn.Module] = OrderedDict()
    stages["stem"] = WhiteningStem(in_ch, act, whiten)
    cin = 2 * 4 * in_ch
    for i, w in enumerate(widths):
        stages[f"group{i + 1}"] = ConvGroup(cin, w, act, bn_momentum, group_depth)
        cin = w
    stages["pool"] = nn.Sequential(nn.AdaptiveMaxPool2d(1), Flatten(), Scale(scale))
    return stages, cin


def fastnet_data_init(model: nn.Module, x: torch.Tensor) -> None:
    """Data-dependent init (whitening stem) from a batch of *normalised* training images."""
    stem = model.backbone.stem
    if isinstance(stem, WhiteningStem) and stem.whiten:
        stem.init_whitening(x)
