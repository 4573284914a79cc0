"""The common model wrapper: a backbone of named stages followed by an M-layer linear head.

``x -> stage_1 -> ... -> stage_S -> (N, D) -> head[0] -> ... -> head[M-1] = classifier -> logits``.
The M-1 hidden head layers are bias-free linear maps (no activation: a deep *linear* head, paper B);
``features(x)`` is the input of the classifier. Taps: every backbone stage by name plus ``head.i`` =
input of head layer ``i`` (so ``head.0`` is the backbone output and ``head.{M-1}`` == ``features``).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from nclab.utils.errors import NclabError


class NCModel(nn.Module):
    """Backbone (an ordered dict of stages; the last returns (N, D)) + deep-linear head."""

    def __init__(self, stages: "OrderedDict[str, nn.Module]", feature_dim: int, num_classes: int, *,
                 head_depth: int = 1, head_bias: bool = True, head_width: int | None = None):
        super().__init__()
        if not isinstance(head_depth, int) or head_depth < 1:
            raise NclabError(f"model.head_depth must be an integer >= 1 (number of linear layers), got {head_depth!r}")
        if head_width is not None and (not isinstance(head_width, int) or head_width < 1):
            raise NclabError(f"model.head_width must be a positive integer or null, got {head_width!r}")
        if head_width is not None and head_depth == 1:
            raise NclabError("model.head_width sets the hidden layers of a deep-linear head and needs "
                             "head_depth >= 2; set head_depth or drop head_width")
        self.backbone = nn.Sequential(stages)
        self.backbone_dim = int(feature_dim)
        width = int(head_width or feature_dim)
        dims = [feature_dim] + [width] * (head_depth - 1)
        layers = [nn.Linear(dims[i], dims[i + 1], bias=False) for i in range(head_depth - 1)]
        layers.append(nn.Linear(dims[-1], num_classes, bias=bool(head_bias)))
        self.head = nn.ModuleList(layers)
        self.num_classes = int(num_classes)
        self.feature_dim = dims[-1]

    @property
    def classifier(self) -> nn.Linear:
        return self.head[-1]

    @property
    def head_layers(self) -> list[nn.Linear]:
        return list(self.head)

    def backbone_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, D) backbone output (= tap ``head.0``)."""
        return self.backbone(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, feature_dim) input of the classifier (= tap ``head.{M-1}``)."""
        h = self.backbone(x)
        for layer in self.head[:-1]:
            h = layer(h)
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes) = ``classifier(features(x))`` for inputs x (N, *input_shape)."""
        return self.classifier(self.features(x))

    def tap_names(self) -> list[str]:
        """Names ``forward_taps`` accepts: the backbone stages in order, then ``head.j`` = input of head layer j."""
        return list(self.backbone._modules.keys()) + [f"head.{i}" for i in range(len(self.head))]

    def forward_taps(self, x: torch.Tensor, names: list[str] | tuple[str, ...]) -> dict[str, torch.Tensor]:
        """Flattened (N, ·) activations at the requested taps (one forward pass, stops early)."""
        valid = self.tap_names()
        wanted = set(names)
        bad = [n for n in names if n not in valid]
        if bad:
            raise NclabError(f"unknown tap(s) {bad}; this model has taps {valid}")
        out: dict[str, torch.Tensor] = {}
        h = x
        for name, stage in self.backbone._modules.items():
            if not wanted - out.keys():
                break
            h = stage(h)
            if name in wanted:
                out[name] = h.flatten(1)
        for i, layer in enumerate(self.head):
            if not wanted - out.keys():
                break
            key = f"head.{i}"
            if key in wanted:
                out[key] = h.flatten(1)
            h = layer(h)
        return {n: out[n] for n in names}


class Flatten(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


class Scale(nn.Module):
    """Multiply by a constant (airbench's logit scaling, moved before the classifier)."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = float(factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


class FP32Conv2d(nn.Conv2d):
    """A conv that always runs in fp32, even under bf16 autocast.

    Used for stems with 1-3 input channels: oneDNN's bf16 backward for them was 8-70% of a CPU training step,
    while their fp32 cost is negligible.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())


def flip_mean_features(model, x: torch.Tensor) -> torch.Tensor:
    """Flip test-time augmentation: mean of ``model.features`` over images ``x`` (N, C, H, W) and their
    horizontal mirrors, in one batched forward pass. Returns (N, D)."""
    h = model.features(torch.cat([x, x.flip(-1)]))
    return (h[: len(x)] + h[len(x):]) / 2
