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
    else:  # Gram route (n < d, e.g. 2,000 rows of 3,072 raw pixels): eigh of the n x n Gram matrix in float64,
        # then the axes as x^T u / sqrt(lambda); an order of magnitude faster than an SVD of the (n, d) rows
        x64 = xc.astype(np.float64)
        lam, u = np.linalg.eigh(x64 @ x64.T)
        lam, u = lam[::-1].clip(min=0), u[:, ::-1]
        good = lam > lam[0] * 1e-12 if lam[0] > 0 else np.zeros_like(lam, bool)
        vecs = np.zeros((d, n))
        vecs[:, good] = (x64.T @ u[:, good]) / np.sqrt(lam[good])
        var = lam / max(1, n - 1)
    total = var.sum()
    if total <= 0:
        return np.zeros((d, 1), np.float32)
    keep = int(np.searchsorted(np.cumsum(var) / total, keep_var - 1e-12) + 1)
    keep = max(1, min(keep, int((var > var[0] * 1e-10).sum())))
    return (vecs[:, :keep] / np.sqrt(var[:keep])).astype(np.float32)


def pca_axes(x: np.ndarray, m: int) -> np.ndarray:
    """The top ``m`` principal axes (D, min(m, rank)) of rows ``x`` (n, D) centred by their mean, unscaled
    (orthonormal columns): projecting onto them keeps the directions of largest variance at their own scale."""
    xc = (x - x.mean(0)).astype(np.float64)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    keep = max(1, min(int(m), int((s > (s[0] if s.size else 0) * 1e-10).sum())))
    return vt[:keep].T.astype(np.float32)
