"""Small NC metric helpers used by the theory lab (float64 torch, features as (N, D)).

Kept local and minimal; ``nclab.collapse`` is the general implementation for trained networks.

- ``nc1 = tr(Σ_W Σ_B⁺)/K``: Σ_W = 1/N Σ_i (h_i − μ_{y_i})(h_i − μ_{y_i})ᵀ, Σ_B = 1/K Σ_k (μ_k − μ̄)(μ_k − μ̄)ᵀ
  with μ̄ the unweighted mean of the class means (so imbalance does not tilt it); Σ_B⁺ is the pseudo-inverse
  on eigenvalues above 1e-12·max (rank ≤ K − 1).
- ``frame_error(G, T) = ‖G/‖G‖_F − T/‖T‖_F‖_F`` (scale-free; 0 = same shape of Gram, max 2).
"""

from __future__ import annotations

import torch


def class_means(F: torch.Tensor, y: torch.Tensor, K: int) -> torch.Tensor:
    """(K, D) class means of features F (N, D)."""
    sums = torch.zeros(K, F.shape[1], dtype=F.dtype, device=F.device).index_add_(0, y, F)
    cnt = torch.bincount(y, minlength=K).to(F.dtype).clamp_min(1)
    return sums / cnt[:, None]


def nc1(F: torch.Tensor, y: torch.Tensor, K: int) -> float:
    """tr(Σ_W Σ_B⁺)/K for features F (N, D), labels y (N,)."""
    mu = class_means(F, y, K)
    Fc = F - mu[y]
    Sw = Fc.T @ Fc / F.shape[0]
    Mc = mu - mu.mean(0, keepdim=True)
    Sb = Mc.T @ Mc / K
    ev, V = torch.linalg.eigh(Sb)
    keep = ev > 1e-12 * ev.max().clamp_min(1e-300)
    if not bool(keep.any()):
        return float("inf")
    Sb_pinv = (V[:, keep] / ev[keep]) @ V[:, keep].T
    return float(torch.trace(Sw @ Sb_pinv) / K)


def frame_error(G: torch.Tensor, T: torch.Tensor) -> float:
    """‖G/‖G‖_F − T/‖T‖_F‖_F for two K x K Grams (returns 2.0 for an all-zero G: nothing to compare)."""
    g = torch.linalg.norm(G)
    if float(g) == 0.0:
        return 2.0
    return float(torch.linalg.norm(G / g - T / torch.linalg.norm(T)))


def etf_target(K: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """Simplex-ETF Gram I − 11ᵀ/K."""
    return torch.eye(K, dtype=dtype, device=device) - torch.full((K, K), 1.0 / K, dtype=dtype, device=device)
