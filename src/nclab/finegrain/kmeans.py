"""Fast k-means in torch: greedy k-means++ init, several restarts run together, float32 matmul distances.

Objective (``inertia``): ``sum_i min_j ||x_i - c_j||^2`` over the ``N`` rows of ``X`` (N, D). The best of
``n_init`` restarts is kept, as in scikit-learn's ``KMeans(n_init=...)``. All restarts share one distance
matmul per Lloyd step: ``X (N, D) @ C^T (D, R*k)``; restarts that have converged drop out of the batch.
The data are centred first (k-means is translation invariant) so the ``||x||^2 - 2 x.c + ||c||^2``
expansion keeps float32 precision. Randomness comes only from a private ``torch.Generator``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from nclab.utils.errors import NclabError
from nclab.utils.finite import nonfinite_error

_CHUNK = 1 << 24  # max elements of one (rows, R*k) distance block, bounds memory for large k


@dataclass
class KMeansResult:
    """``centers`` (k, D) float32 in the input space, ``labels`` (N,) int64, ``inertia`` (sum of squared
    distances to the assigned centre), ``n_iter`` of the kept restart, ``inertias`` (n_init,) of all restarts."""

    centers: np.ndarray
    labels: np.ndarray
    inertia: float
    n_iter: int
    inertias: np.ndarray


def _sqdist(x: torch.Tensor, x2: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Squared distances (n, m) between rows of x (n, D) (with norms x2 (n,)) and c (m, D), clamped at 0."""
    d = x2[:, None] - 2.0 * (x @ c.T) + (c * c).sum(1)[None, :]
    return d.clamp_min_(0.0)


def _assign(x: torch.Tensor, x2: torch.Tensor, centers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For centres (R, k, D): nearest centre index (R, N) and its squared distance (R, N), chunked over N."""
    r, k, d = centers.shape
    n = x.shape[0]
    flat = centers.reshape(r * k, d)
    rows = max(1, _CHUNK // max(1, r * k))
    labels = torch.empty((r, n), dtype=torch.int64, device=x.device)
    mind = torch.empty((r, n), dtype=x.dtype, device=x.device)
    for s in range(0, n, rows):
        dist = _sqdist(x[s : s + rows], x2[s : s + rows], flat).view(-1, r, k)
        m, a = dist.min(dim=2)
        labels[:, s : s + rows] = a.T
        mind[:, s : s + rows] = m.T
    return labels, mind


def _cluster_sums(x: torch.Tensor, lab: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-cluster sums (m, k, D) and counts (m, k) for labels (m, N). One matmul one-hot (m*k, N) @ X
    when the one-hot is small (faster than scatter-add on CPU), else a scatter-add per restart."""
    m, n = lab.shape
    if m * k * n <= _CHUNK * 4:
        onehot = torch.zeros((m, k, n), dtype=x.dtype, device=x.device)
        onehot.scatter_(1, lab[:, None, :], 1.0)
        return (onehot.view(m * k, n) @ x).view(m, k, -1), onehot.sum(2)
    sums = torch.zeros((m, k, x.shape[1]), dtype=x.dtype, device=x.device)
    cnt = torch.zeros((m, k), dtype=x.dtype, device=x.device)
    for a in range(m):
        sums[a].index_add_(0, lab[a], x)
        cnt[a] = torch.bincount(lab[a], minlength=k).to(x.dtype)
    return sums, cnt


def _kmeanspp(x: torch.Tensor, x2: torch.Tensor, k: int, r: int, gen: torch.Generator) -> torch.Tensor:
    """Greedy k-means++ (Arthur & Vassilvitskii; ``2 + log k`` trials per step, like scikit-learn) for
    ``r`` independent restarts at once. Returns centres (r, k, D)."""
    n, d = x.shape
    trials = 2 + int(math.log(k))
    first = torch.randint(n, (r,), generator=gen, device="cpu").to(x.device)
    centers = torch.empty((r, k, d), dtype=x.dtype, device=x.device)
    centers[:, 0] = x[first]
    closest = _sqdist(x, x2, centers[:, 0]).T.contiguous()  # (r, n)
    for j in range(1, k):
        pot = closest.sum(1, keepdim=True)
        # all points identical to chosen centres -> uniform sampling avoids a zero-weight multinomial
        w = torch.where(pot > 0, closest, torch.ones_like(closest)).cpu().double()
        cand = torch.multinomial(w, trials, replacement=True, generator=gen).to(x.device)  # (r, t)
        dc = _sqdist(x, x2, x[cand.reshape(-1)]).T.reshape(r, trials, n)  # (r, t, n)
        newpot = torch.minimum(dc, closest[:, None, :])  # (r, t, n)
        best = newpot.sum(2).argmin(1)  # (r,)
        idx = torch.arange(r, device=x.device)
        centers[:, j] = x[cand[idx, best]]
        closest = newpot[idx, best]
    return centers


def kmeans(
    x: np.ndarray | torch.Tensor,
    k: int,
    *,
    n_init: int = 10,
    max_iter: int = 300,
    tol: float = 1e-4,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> KMeansResult:
    """Cluster rows of ``x`` (N, D) into ``k`` clusters; best of ``n_init`` restarts by inertia.

    Stops a restart when no label changes or the squared centre shift falls below
    ``tol * mean per-feature variance`` (scikit-learn's criterion). Empty clusters are re-seeded with the
    point farthest from its centre. Deterministic for a given ``seed``; never touches the global RNG.

    Threads: small problems (N·D·k·n_init < 2e7, e.g. the demo's and the tests') run on one
    intra-op thread: per-op work of a few MFLOP gains nothing from threads, and on a busy shared CPU spinning
    OpenMP workers can slow them by orders of magnitude. Larger ones use torch's threads: one CIFAR superclass
    (10,000 x 256, k = 2, 10 restarts) is above the cut and runs faster on two threads than on one.
    """
    xt = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if xt.dim() != 2 or xt.shape[0] == 0:
        raise NclabError(f"k-means needs a non-empty 2-D array (N, D), got shape {tuple(xt.shape)}")
    n = xt.shape[0]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise NclabError(f"k-means needs an integer number of clusters k, got {k!r}")
    if isinstance(n_init, bool) or not isinstance(n_init, (int, np.integer)) or not isinstance(max_iter, (int, np.integer)):
        raise NclabError(f"k-means needs integer n_init and max_iter, got {n_init!r} and {max_iter!r}")
    if not 1 <= k <= n:
        raise NclabError(f"k-means asked for k={k} clusters on {n} points; k must be between 1 and N")
    if n_init < 1 or max_iter < 1:
        raise NclabError("k-means needs n_init >= 1 and max_iter >= 1")
    old = torch.get_num_threads()
    if xt.numel() * int(k) * int(n_init) < 20_000_000 and old > 1:
        torch.set_num_threads(1)
    x32 = xt.to(device=device, dtype=torch.float32)
    if not bool(torch.isfinite(x32).all()):  # NaN/inf given, or finite values beyond float32's range
        torch.set_num_threads(old)
        raise nonfinite_error(xt, "k-means input features", "check the features", "converting them to float32")
    try:
        return _fit(x32, int(k), int(n_init), int(max_iter), tol, int(seed))
    finally:
        torch.set_num_threads(old)


def _fit(xt: torch.Tensor, k: int, n_init: int, max_iter: int, tol: float, seed: int) -> KMeansResult:
    """:func:`kmeans` on validated float32 data ``xt`` (N, D), with the thread count already chosen."""
    n = xt.shape[0]
    if not torch.isfinite(xt).all():
        raise NclabError("k-means input contains NaN or inf; check the features")
    mean = xt.mean(0, keepdim=True)
    xc = xt - mean
    x2 = (xc * xc).sum(1)
    thresh = tol * float(xc.var(0, unbiased=False).mean())
    gen = torch.Generator(device="cpu").manual_seed(seed)

    centers = _kmeanspp(xc, x2, k, n_init, gen)  # (R, k, D)
    active = torch.ones(n_init, dtype=torch.bool, device=xc.device)
    n_iter = torch.zeros(n_init, dtype=torch.int64)
    prev = torch.full((n_init, n), -1, dtype=torch.int64, device=xc.device)
    for it in range(max_iter):
        ids = torch.nonzero(active).flatten()
        m = ids.numel()
        if m == 0:
            break
        cur = centers[ids]
        lab, mind = _assign(xc, x2, cur)
        newc, cnt = _cluster_sums(xc, lab, k)
        empty = cnt == 0
        if bool(empty.any()):  # re-seed empty clusters at the worst-fit points of that restart
            for a in torch.nonzero(empty.any(1)).flatten().tolist():
                e = torch.nonzero(empty[a]).flatten()
                far = torch.topk(mind[a], e.numel()).indices
                newc[a, e] = xc[far]
            cnt = cnt.clamp_min(1.0)
        newc /= cnt[:, :, None]
        shift = ((newc - cur) ** 2).sum((1, 2))
        same = (lab == prev[ids]).all(1)
        centers[ids] = newc
        prev[ids] = lab
        n_iter[ids.cpu()] = it + 1
        active[ids[same | (shift <= thresh)]] = False

    labels, mind = _assign(xc, x2, centers)
    # exact objective of every restart: float32 differences of centred data, float64 sums (no expansion error)
    inertias = torch.zeros(n_init, dtype=torch.float64)
    for a in range(n_init):
        for s in range(0, n, 16384):
            diff = xc[s : s + 16384] - centers[a][labels[a, s : s + 16384]]
            inertias[a] += (diff * diff).sum(1, dtype=torch.float64).sum().cpu()
    best = int(torch.argmin(inertias))
    exact = float(inertias[best])
    return KMeansResult(
        centers=(centers[best] + mean).cpu().numpy().astype(np.float32),
        labels=labels[best].cpu().numpy().astype(np.int64),
        inertia=exact,
        n_iter=int(n_iter[best]),
        inertias=inertias.numpy(),
    )
