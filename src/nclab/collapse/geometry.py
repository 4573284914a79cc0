"""Geometry of the class means shared by the metric functions and the second pass: the present classes' means,
the centred means M̃ and the exact basis of the span of Σ_B, and the classifier check (shapes and finiteness).

Both :mod:`nclab.collapse.metrics` and :mod:`nclab.collapse.second_pass` import from here, so neither needs the
other at import time.
"""

from __future__ import annotations

import numpy as np
import torch

from nclab.collapse.stats import ClassStats
from nclab.utils.errors import NclabError

_F64 = torch.float64


def _t(x, device=None) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    x = torch.as_tensor(x).detach()
    return x.to(device=device, dtype=_F64)



# geometry of the class means --------------------------------------------------------------------
def class_means(stats: ClassStats) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(present_idx (K,), counts (K,), means (K, D))`` for the classes that have samples."""
    stats._require()
    idx = torch.nonzero(stats.present).flatten()
    return idx, stats.counts[idx], stats.means[idx]


def centred_means(stats: ClassStats) -> torch.Tensor:
    """M̃ = μ_k − μ_G for present classes, (K, D), with μ_G the (count-weighted) sample mean."""
    _, n, m = class_means(stats)
    return m - (n.unsqueeze(1) * m).sum(0) / n.sum()


def between_span(counts: torch.Tensor, mc: torch.Tensor, rank_rtol: float | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal basis V (r, D) of the range of Σ_B and the singular values s (r,) of M̃ on it.

    Σ_k n_k (μ_k − μ_G) = 0 exactly, so ``counts`` is a known left null vector of M̃. A Householder
    reflection maps it to e_1 and the remaining K−1 rows span the same space with that structural zero
    removed *exactly* (not left to a rounding-sensitive cutoff — the usual cause of huge or negative nc1).
    The rank is then decided on the singular values of those rows with numpy's matrix_rank tolerance
    s > s_max · max(K−1, D) · eps, or s > s_max · ``rank_rtol`` when given (for means known only to some
    precision, e.g. an optimiser's solution: directions below it are residue, not between-class spread).
    Then Σ_B = V diag(s²/K) Vᵀ and Σ_B† = V diag(K/s²) Vᵀ.
    """
    k, d = mc.shape
    if k < 2:
        return mc.new_zeros(0, d), mc.new_zeros(0)
    u = counts / counts.norm()
    v = u.clone()
    v[0] += 1.0  # u > 0 (counts positive), so v = u + e_1 never cancels
    hm = mc - torch.outer(v, v @ mc) * (2.0 / (v @ v))
    rest = hm[1:]
    if not bool(torch.any(rest != 0)):
        return mc.new_zeros(0, d), mc.new_zeros(0)
    _, s, vt = torch.linalg.svd(rest, full_matrices=False)
    tol = s[0] * (max(rest.shape) * torch.finfo(_F64).eps if rank_rtol is None else float(rank_rtol))
    r = int((s > tol).sum())
    return vt[:r], s[:r]


def _check_wb(stats: ClassStats, W, b) -> tuple[torch.Tensor, torch.Tensor | None]:
    w = _t(W, stats.device)
    if w.dim() != 2 or w.shape[0] != stats.num_classes or (stats.dim is not None and w.shape[1] != stats.dim):
        raise NclabError(f"W must have shape (K={stats.num_classes}, D={stats.dim}), got {tuple(w.shape)}")
    if not bool(torch.isfinite(w).all()):
        raise NclabError("W contains NaN or inf; the classifier has diverged")
    bb = None
    if b is not None:
        bb = _t(b, stats.device).reshape(-1)
        if bb.shape[0] != stats.num_classes:
            raise NclabError(f"b must have K={stats.num_classes} entries, got {bb.shape[0]}")
        if not bool(torch.isfinite(bb).all()):
            raise NclabError("b contains NaN or inf; the classifier has diverged")
    return w, bb


__all__ = ["class_means", "centred_means", "between_span"]
