"""PCA whitening of a group of feature rows (fine-label recovery's default normalisation, and the
projection pursuit's coordinates)."""

from __future__ import annotations

import numpy as np


def pca_whitener(x: np.ndarray, keep_var: float = 1.0) -> np.ndarray:
    """Projection (D, d) for rows of ``x`` (n, D) centred by their mean: the top principal axes holding
    ``keep_var`` of the variance (never the numerically null ones), each scaled by 1/sqrt(eigenvalue), so the
    projected rows have identity covariance."""
    xc = x - x.mean(0)
    n, d = xc.shape
    if d <= n:  # covariance route: one float32 GEMM (fast for 10k x 3072 raw pixels), eigh in float64
        var, vecs = np.linalg.eigh((xc.T @ xc).astype(np.float64) / max(1, n - 1))
        var, vecs = var[::-1].clip(min=0), vecs[:, ::-1]
    else:
        _, sv, vt = np.linalg.svd(xc.astype(np.float64), full_matrices=False)
        var, vecs = sv**2 / max(1, n - 1), vt.T
    total = var.sum()
    if total <= 0:
        return np.zeros((d, 1), np.float32)
    keep = int(np.searchsorted(np.cumsum(var) / total, keep_var - 1e-12) + 1)
    keep = max(1, min(keep, int((var > var[0] * 1e-10).sum())))
    return (vecs[:, :keep] / np.sqrt(var[:keep])).astype(np.float32)
