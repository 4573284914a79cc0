"""Tiny seeded data and models shared by the integration tests, and the hand-made reference features."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

K_FINE, K_COARSE, DIM = 6, 3, 12


def toy_data(n: int = 240, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` (n, DIM) float32 Gaussian clusters around 6 class means, fine labels ``y`` (n,) int64."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % K_FINE
    means = torch.randn(K_FINE, DIM, generator=g) * 2.0
    return (means[y] + torch.randn(n, DIM, generator=g)).float(), y.long()


def toy_model(seed: int = 0, out: int = K_FINE) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(DIM, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, out))


def hand_features(model: nn.Module, module: nn.Module, batches, *, use_input: bool = False,
                  label_key: str = "labels") -> tuple[np.ndarray, np.ndarray]:
    """Features (N, D) float32 of ``module``'s output (or first input) over ``batches``, by a plain forward hook,
    with the labels (N,): the independent reference for every equality test."""
    got: list[torch.Tensor] = []

    def hook(m, args, out):
        t = args[0] if use_input else (out[0] if isinstance(out, tuple) else out)
        got.append(t.detach().float().reshape(t.shape[0], -1) if t.dim() != 3 else t.detach().float().flatten(1))

    h = module.register_forward_hook(hook)
    ys = []
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            for item in batches:
                if isinstance(item, dict):
                    model(**{k: v for k, v in item.items() if k != label_key})
                    ys.append(torch.as_tensor(item[label_key]))
                else:
                    model(item[0])
                    ys.append(torch.as_tensor(item[1]))
    finally:
        h.remove()
        model.train(was)
    return torch.cat(got).numpy(), torch.cat(ys).numpy()
