"""Second streaming pass over the samples with the class means (and W, b) frozen.

Needed for NC4 (``ncc_mismatch``: compare the classifier's prediction with the nearest class mean for
every sample) and, for very wide features (a backbone tap with D in the tens of thousands) whose D x D
scatter would not fit, for an exact ``nc1``: the within-class scatter is only needed on the r ≤ K−1
dimensional span of the centred means, so ``Vᵀ(h_i − μ_{y_i})`` is accumulated into an r x r matrix.
Memory O(K·D + r²).
"""

from __future__ import annotations

import numpy as np
import torch

from nclab.collapse.metrics import _check_wb, between_span, centred_means, class_means
from nclab.collapse.stats import ClassStats
from nclab.utils.errors import NclabError

_F64 = torch.float64


class SecondPass:
    """Accumulate NC4 counts and (optionally) the projected within-class scatter.

    ``stats`` is a finished first-pass :class:`ClassStats` (its means are frozen here). With ``W`` (K x D)
    and optional ``b`` (K,), each sample's classifier decision argmax_k (W h + b)_k is compared with the
    nearest-class-centre decision argmin_k ‖h − μ_k‖ over classes that have samples.
    ``project=True`` also accumulates P = Σ_i V(h_i − μ_{y_i})(h_i − μ_{y_i})ᵀVᵀ and the exact per-class
    traces t_k = Σ_{i: y_i=k} ‖h_i − μ_k‖² around the frozen means (labels required).
    """

    def __init__(self, stats: ClassStats, W=None, b=None, *, project: bool | None = None):
        self.stats = stats
        idx, _, means = class_means(stats)
        self.device = stats.device
        self.present = idx
        self.means = means.clone()
        self.mean_sq = (self.means * self.means).sum(1)
        self.W = self.b = None
        if W is not None:
            self.W, self.b = _check_wb(stats, W, b)
        if project is None:
            project = stats.scatter is None
        self.proj_scatter: torch.Tensor | None = None
        self.traces: torch.Tensor | None = None
        self.span_v = self.span_s = None
        if project:
            self.span_v, self.span_s = between_span(stats.counts[idx], centred_means(stats))
            r = self.span_s.numel()
            self.proj_scatter = torch.zeros(r, r, dtype=_F64, device=self.device)
            self.traces = torch.zeros(stats.num_classes, dtype=_F64, device=self.device)
        # one matrix product gives both the centre distances and the classifier scores
        self._rhs = self.means if self.W is None else torch.cat([self.means, self.W])
        self.n = 0
        self.mismatch = 0
        self.n_labelled = 0
        self.ncc_correct = 0
        self.clf_correct = 0

    def update(self, features, labels=None) -> "SecondPass":
        """Add a batch: ``features`` (B, D), ``labels`` (B,) int (required when projecting)."""
        x = features if isinstance(features, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(features))
        if x.dim() != 2 or x.shape[1] != self.means.shape[1]:
            raise NclabError(f"features must have shape (batch, {self.means.shape[1]}), got {tuple(x.shape)}")
        fresh = x.dtype != _F64 or x.device != self.device
        x = x.to(device=self.device, dtype=_F64)
        y = None
        if labels is not None:
            y = torch.as_tensor(labels if not isinstance(labels, np.ndarray) else torch.from_numpy(labels))
            y = y.to(device=self.device, dtype=torch.int64).reshape(-1)
            if y.shape[0] != x.shape[0]:
                raise NclabError(f"features have {x.shape[0]} rows but labels have {y.shape[0]}")
        if x.shape[0] == 0:
            return self
        prod = x @ self._rhs.T
        if not bool(torch.isfinite(prod).all()):  # a NaN/inf in a row reaches its products
            raise NclabError("features contain NaN or inf; the model has diverged or the input is corrupt")
        kp = self.means.shape[0]
        # nearest class centre: argmin ‖h‖² − 2 h·μ_k + ‖μ_k‖² (the ‖h‖² term is common to all k)
        ncc = self.present[torch.argmin(self.mean_sq.unsqueeze(0) - 2 * prod[:, :kp], dim=1)]
        if self.W is not None:
            scores = prod[:, kp:]
            if self.b is not None:
                scores = scores + self.b
            pred = torch.argmax(scores, dim=1)
            self.mismatch += int((pred != ncc).sum())
        if y is not None:
            self.n_labelled += int(x.shape[0])
            self.ncc_correct += int((ncc == y).sum())
            if self.W is not None:
                self.clf_correct += int((pred == y).sum())
        if self.proj_scatter is not None:
            if y is None:
                raise NclabError("the projected scatter needs labels; pass labels to update()")
            xc = x.sub_(self.stats.means[y]) if fresh else x - self.stats.means[y]
            self.traces.index_add_(0, y, (xc * xc).sum(1))
            z = xc @ self.span_v.T
            self.proj_scatter += z.T @ z
        self.n += int(x.shape[0])
        return self

    def result(self) -> dict[str, float]:
        """``ncc_mismatch`` (fraction of samples where classifier and nearest-centre decisions differ;
        Papyan et al. 2020 NC4) when W was given, plus ``ncc_acc`` / ``classifier_acc`` with labels."""
        out: dict[str, float] = {}
        if self.n == 0:
            return out
        if self.W is not None:
            out["ncc_mismatch"] = self.mismatch / self.n
        if self.n_labelled:
            out["ncc_acc"] = self.ncc_correct / self.n_labelled
            if self.W is not None:
                out["classifier_acc"] = self.clf_correct / self.n_labelled
        return out
