"""Two-way splits by projection pursuit: pick the most bimodal split (Peña & Prieto, JASA 2001).

A superclass holding two fine classes is a two-component mixture. Along the direction that separates two
balanced components the projected data are bimodal, and bimodality shows as a low (negative) excess kurtosis:
a balanced mixture of two Gaussians at ±a with unit variance has kurtosis −2a⁴/(a² + 1)², down to −2 for a
clean split, while a Gaussian has 0 and an unbalanced split (a small far-off group) has a positive value.
k-means maximises the between-cluster variance instead and can prefer the second kind (seen on the CIFAR-10
bird+horse superclass, docs/recovery.md).

:func:`bimodal_split` therefore proposes candidates — the k-means solution and one split along each of
``n_starts`` directions of minimum kurtosis (projected gradient descent on the unit sphere after whitening;
kurtosis is affine invariant) — and keeps the candidate whose clusters are most bimodal along their Fisher
direction (the difference of the two cluster means in whitened coordinates). Shapes: ``z`` (n, d).
"""

from __future__ import annotations

import numpy as np

from nclab.finegrain.kmeans import kmeans
from nclab.finegrain.whiten import pca_whitener


def excess_kurtosis(u: np.ndarray) -> float:
    """E[(u − ū)⁴] / Var(u)² − 3 of a 1-D sample (0 for a Gaussian, −2 for two equal point masses)."""
    u = np.asarray(u, dtype=np.float64)
    c = u - u.mean()
    v = float(np.mean(c * c))
    return float(np.mean(c**4) / (v * v) - 3.0) if v > 0 else 0.0


def min_kurtosis_directions(w: np.ndarray, n_starts: int = 8, iters: int = 400, step: float = 0.05,
                            seed: int = 0) -> np.ndarray:
    """Unit directions (d, n_starts) of locally minimal kurtosis of whitened data ``w`` (n, d).

    All starts descend together: with U = w V (n, S) the gradient of E[u⁴] on the sphere is 4(E[w u³] − E[u⁴] v);
    each step moves v against it (``step`` absorbs the 4) and renormalises.
    """
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((w.shape[1], n_starts)).astype(np.float32)
    v /= np.linalg.norm(v, axis=0)
    n = len(w)
    for _ in range(iters):
        u = w @ v
        g = w.T @ (u * u * u) / n  # (d, S): E[w u³]
        g -= v * (g * v).sum(0)  # tangent part
        v_new = v - step * g
        v_new /= np.linalg.norm(v_new, axis=0)
        done = float(np.abs(v_new - v).max()) < 1e-6
        v = v_new
        if done:
            break
    return v


def _threshold_split(u: np.ndarray) -> np.ndarray:
    """1-D 2-means on u: labels 0/1 by the threshold midway between the two side means (Lloyd from the median)."""
    t = float(np.median(u))
    for _ in range(100):
        lo, hi = u[u <= t], u[u > t]
        if not len(lo) or not len(hi):
            break
        t_new = 0.5 * (float(lo.mean()) + float(hi.mean()))
        if abs(t_new - t) <= 1e-12 * max(1.0, abs(t)):
            break
        t = t_new
    return (u > t).astype(np.int64)


def fisher_kurtosis(w: np.ndarray, labels: np.ndarray) -> float:
    """Kurtosis of whitened data ``w`` projected on the difference of the two cluster means (+inf if a
    cluster is empty): the lower, the more bimodal the split."""
    a, b = labels == 0, labels == 1
    if not a.any() or not b.any():
        return float("inf")
    return excess_kurtosis(w @ (w[b].mean(0) - w[a].mean(0)))


N_STARTS = 16  # 8 starts missed the bimodal direction in 4 of 24 (CIFAR run, seed) pairs, 16 in none (docs/recovery.md)


def bimodal_split(z: np.ndarray, *, n_init: int = 10, n_starts: int = N_STARTS, seed: int = 0, max_iter: int = 300,
                  device: str = "cpu") -> tuple[np.ndarray, np.ndarray, dict]:
    """Split ``z`` (n, d) in two -> (labels (n,) in {0, 1}, centres (2, d) float32, info); ``labels`` are the
    nearest of ``centres``.

    Candidates: k-means (``n_init`` restarts) and the 1-D 2-means split along each minimum-kurtosis
    direction; the one with the lowest :func:`fisher_kurtosis` wins. Labels are then the nearest of the two
    winning cluster means, so fit labels follow the same rule as later predictions. That rule is the Fisher
    boundary when ``z`` is whitened (the recovery default, ``normalize="whiten"``); in raw coordinates with
    unequal scales it is a worse boundary. ``info``: the kurtosis of the k-means candidate, the lowest of the
    pursuit candidates, and which kind won.
    """
    z = np.asarray(z, dtype=np.float32)
    w = (z - z.mean(0)) @ pca_whitener(z)  # all non-degenerate directions
    km = kmeans(z, 2, n_init=n_init, max_iter=max_iter, seed=seed, device=device)
    cands = [("kmeans", km.labels)]
    if len(z) > 2:
        # all rows: directions searched on a 4,096-row subsample lost the gain on 3 of 4 CIFAR runs
        dirs = min_kurtosis_directions(w, n_starts=n_starts, seed=seed)
        cands += [("pursuit", _threshold_split(w @ dirs[:, j])) for j in range(dirs.shape[1])]
    scores = [fisher_kurtosis(w, lab) for _, lab in cands]
    best = int(np.argmin(scores))
    lab = cands[best][1]
    # (a constant group can leave one side empty: keep k-means's centre there)
    centres = np.stack([z[lab == j].mean(0) if (lab == j).any() else km.centers[j] for j in (0, 1)]).astype(np.float32)
    c64 = centres.astype(np.float64)
    labels = np.argmin((c64 * c64).sum(1)[None, :] - 2.0 * (z.astype(np.float64) @ c64.T), axis=1).astype(np.int64)
    # (the centres stay the candidate's cluster means: one assignment step, no Lloyd iterations, which would
    # drift back towards the k-means objective)
    pursuit = [s for (name, _), s in zip(cands, scores) if name == "pursuit"]
    info = {"kmeans_kurtosis": scores[0], "pursuit_kurtosis": min(pursuit) if pursuit else None,
            "chosen": cands[best][0]}
    return labels, centres, info
