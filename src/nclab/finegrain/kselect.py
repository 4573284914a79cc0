"""How many fine classes a superclass holds, estimated without labels (``recovery.fine_per_coarse: auto``).

For each candidate ``k`` the rows ``z`` (n, d) of one group (in the recovery's normalised space) are clustered by
k-means (:func:`nclab.finegrain.kmeans.kmeans`), on at most ``max_rows`` of them (a seeded random subset), and
the partition is scored by one criterion:

- ``silhouette``: mean silhouette (scikit-learn ``silhouette_score``, Euclidean) of the k-means partition;
  the largest wins; candidates ``2..k_max`` (undefined for one cluster).
- ``bic``: Bayesian information criterion of a diagonal-covariance Gaussian mixture started from the k-means
  centres (scikit-learn ``GaussianMixture.bic``: ``-2 log L + p log n``, p = free parameters); the smallest
  wins; candidates ``1..k_max``.
- ``gap``: the gap statistic (Tibshirani, Walther & Hastie 2001): ``gap(k) = mean_b log W*_kb - log W_k`` with
  ``W_k`` the k-means within-cluster sum of squares and ``W*_kb`` that of ``n_ref`` reference sets drawn
  uniformly in the data's principal-axes bounding box; the smallest ``k`` with
  ``gap(k) >= gap(k+1) - s_{k+1}`` (``s = sd * sqrt(1 + 1/n_ref)``) wins; candidates ``1..k_max``.

:func:`estimate_k` returns ``(k, scores)``; ``scores`` maps each candidate ``k`` to its criterion value.
"""

from __future__ import annotations

import numpy as np

from nclab.finegrain.kmeans import kmeans
from nclab.utils.errors import NclabError

CRITERIA = ("silhouette", "bic", "gap")

__all__ = ["CRITERIA", "estimate_k"]


def _km(z: np.ndarray, k: int, seed: int, n_init: int):
    return kmeans(z, k, n_init=n_init, seed=seed)


def _within(z: np.ndarray, labels: np.ndarray) -> float:
    z = z.astype(np.float64)
    return float(sum(((z[labels == j] - z[labels == j].mean(0)) ** 2).sum() for j in np.unique(labels)))


def estimate_k(z: np.ndarray, k_max: int, criterion: str = "silhouette", *, seed: int = 0, n_init: int = 3,
               max_rows: int = 3000, n_ref: int = 5) -> tuple[int, dict[int, float]]:
    """Estimated number of clusters in ``z`` (n, d) in ``1..k_max`` (silhouette: ``2..k_max``) and the score of
    every candidate (module docstring). Deterministic in ``seed``."""
    if criterion not in CRITERIA:
        raise NclabError(f"unknown k criterion {criterion!r}; use one of {', '.join(CRITERIA)}")
    z = np.asarray(z, dtype=np.float32)
    if z.ndim != 2 or len(z) < 2:
        raise NclabError(f"estimating k needs at least two rows (n, d), got shape {z.shape}")
    rng = np.random.default_rng(seed)
    if len(z) > max_rows:
        z = z[np.sort(rng.choice(len(z), max_rows, replace=False))]
    top = int(min(k_max, len(z) - 1 if criterion == "silhouette" else len(z)))
    lo = 2 if criterion == "silhouette" else 1
    if top < lo:
        return lo, {}
    ks = list(range(lo, top + 1))
    scores: dict[int, float] = {}
    if criterion == "silhouette":
        from sklearn.metrics import silhouette_score

        for k in ks:
            lab = _km(z, k, seed + k, n_init).labels
            scores[k] = float(silhouette_score(z, lab)) if len(np.unique(lab)) > 1 else -1.0
        return max(ks, key=lambda k: (scores[k], -k)), scores
    if criterion == "bic":
        from sklearn.mixture import GaussianMixture

        for k in ks:
            km = _km(z, k, seed + k, n_init)
            gm = GaussianMixture(k, covariance_type="diag", means_init=km.centers, reg_covar=1e-4,
                                 random_state=seed, max_iter=200).fit(z)
            scores[k] = float(gm.bic(z))
        return min(ks, key=lambda k: (scores[k], k)), scores
    # gap statistic: references uniform in the box of the principal axes (the paper's reference "b")
    zc = z.astype(np.float64) - z.mean(0, dtype=np.float64)
    _, _, vt = np.linalg.svd(zc, full_matrices=False)
    p = zc @ vt.T
    lo_b, hi_b = p.min(0), p.max(0)
    refs = [(rng.uniform(lo_b, hi_b, size=p.shape) @ vt).astype(np.float32) for _ in range(n_ref)]
    gap, sk = {}, {}
    for k in ks + [top + 1] if top + 1 <= len(z) else ks:
        logw = np.log(max(_within(z, _km(z, k, seed + k, n_init).labels), 1e-300))
        ref = np.array([np.log(max(_within(r, _km(r, k, seed + 7919 * (b + 1) + k, 1).labels), 1e-300))
                        for b, r in enumerate(refs)])
        gap[k] = float(ref.mean() - logw)
        sk[k] = float(ref.std() * np.sqrt(1.0 + 1.0 / n_ref))
    scores = {k: gap[k] for k in ks}
    for k in ks:
        if k + 1 not in gap or gap[k] >= gap[k + 1] - sk[k + 1]:
            return k, scores
    return ks[-1], scores
