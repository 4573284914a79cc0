"""Training losses.

- ``ce``: ``mean_i CE(z_i, y_i)`` with optional label smoothing ``eps`` (targets ``(1-eps) e_y + eps/K``).
- ``mse``: ``(1 / 2N) * sum_i ||z_i - e_{y_i}||^2`` (paper B's unconstrained-features loss on one-hot targets).
- penalties: ``lambda_w / 2 * sum_l ||W_l||_F^2`` over the head's linear layers (weights only) and
  ``lambda_h / 2 * (1/N) sum_i ||h_i||^2`` on the head's input ``h = head.0`` (backbone output).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def data_loss(name: str, logits: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    logits = logits.float()
    if name == "ce":
        return F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    if name == "mse":
        onehot = F.one_hot(y, logits.shape[1]).to(logits.dtype)
        return 0.5 * (logits - onehot).pow(2).sum(1).mean()
    raise ValueError(f"unknown loss {name}")


def weight_penalty(head_layers, lambda_w: float) -> torch.Tensor:
    return 0.5 * lambda_w * sum(layer.weight.float().pow(2).sum() for layer in head_layers)


def feature_penalty(h: torch.Tensor, lambda_h: float) -> torch.Tensor:
    return 0.5 * lambda_h * h.float().pow(2).sum(1).mean()
