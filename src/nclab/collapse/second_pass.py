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

from nclab.collapse.geometry import _check_wb, between_span, centred_means, class_means
from nclab.collapse.stats import CHUNK_BYTES, ClassStats, Scratch, as_float64, integer_labels
from nclab.utils.errors import NclabError
from nclab.utils.finite import nonfinite_error

_F64 = torch.float64
FUSED_COLUMNS = 32  # see SecondPass.__init__: up to this many columns W joins the float64 product


class SecondPass:
    """Accumulate NC4 counts and (optionally) the projected within-class scatter.

    ``stats`` is a finished first-pass :class:`ClassStats` (its means are frozen here). With ``W`` (K x D)
    and optional ``b`` (K,), each sample's classifier decision argmax_k (W h + b)_k is compared with the
    nearest-class-centre decision argmin_k ‖h − μ_k‖ over classes that have samples.
    ``project=True`` also accumulates the diagonal of P = Σ_i V(h_i − μ_{y_i})(h_i − μ_{y_i})ᵀVᵀ (all nc1
    needs) and the exact per-class traces t_k = Σ_{i: y_i=k} ‖h_i − μ_k‖² around the frozen means (labels
    required).

    With few classes (the span directions plus the rows of W ≤ ``FUSED_COLUMNS``) the classifier scores
    W h + b = W r + (W μ_y + b) come from the same float64 product as the projection, exactly. Otherwise, for
    float32 features, they come from one float32 product, and every row whose top-two
    gap is within twice the rigorous float32 error bound ≈ (D + 6)·2⁻²⁴·(max_k‖w_k‖·‖h_i‖ + max|b|) is scored again
    in float64, so the decisions are those of float64 arithmetic at a fraction of the cost.
    """

    def __init__(self, stats: ClassStats, W=None, b=None, *, project: bool | None = None,
                 rank_rtol: float | None = None, scratch: Scratch | None = None):
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
        self.proj_diag: torch.Tensor | None = None
        self.traces: torch.Tensor | None = None
        self.span_v = self.span_s = None
        if project:
            self.span_v, self.span_s = between_span(stats.counts[idx], centred_means(stats), rank_rtol)
            r = self.span_s.numel()
            self.proj_diag = torch.zeros(r, dtype=_F64, device=self.device)
            self.traces = torch.zeros(stats.num_classes, dtype=_F64, device=self.device)
        # unlabelled batches: one matrix product gives both the centre distances and the classifier scores
        self._rhs = self.means if self.W is None else torch.cat([self.means, self.W])
        # labelled batches work on the residuals r_i = h_i − μ_{y_i} (see _chunk)
        self._all_means = stats.means  # (K, D), indexed by label
        pos = torch.full((stats.num_classes,), -1, dtype=torch.int64, device=self.device)
        pos[idx] = torch.arange(idx.numel(), device=self.device)
        self._pos = pos  # label -> row among the present classes
        # ‖μ_j − μ_k‖² (Kp, Kp) from exact differences (no ‖a‖² − 2ab + ‖b‖² cancellation)
        self._d2 = torch.cdist(self.means, self.means, compute_mode="donot_use_mm_for_euclid_dist").square_()
        if self.span_v is not None:
            # NCC term r·μ_k = r·(μ_k − μ_G) + r·μ_G = z·(V(μ_k − μ_G)) + const (μ_k − μ_G lies in span V)
            self._ncc_t = centred_means(stats) @ self.span_v.T  # (Kp, r)
            rows = [self.span_v]
            # screening radius per present class: half the distance from μ_k to its nearest other mean,
            # shrunk by a relative 1e-9 so float64 rounding of the exact route can never disagree with it
            # (see _nearest_centre)
            # (a lone class gets an infinite radius: it is every row's nearest centre)
            far = self._d2 + torch.diag(torch.full((idx.numel(),), float("inf"), dtype=_F64, device=self.device))
            self._radius2 = far.amin(1).mul_(0.25 * (1 - 1e-9))
        else:
            self._ncc_t = None
            rows = [self.means]
        if self.W is not None:
            self._wmb = stats.means @ self.W.T  # (K, K_W): W μ_y (+ b), added back per label
            if self.b is not None:
                self._wmb = self._wmb + self.b
            self._w32 = self.W.float()
            self._b32 = None if self.b is None else self.b.float()
            # |fl32(W32 h + b32) − (W h + b)|_k ≤ (D + 1)·u·‖w_k‖‖h‖ (rounding W, a length-D dot product)
            # + 2u·(‖w_k‖‖h‖ + |b_k|) (rounding b, the addition); +3 more u·(‖w‖‖h‖ + |b|) covers rounding
            # best − tol in float32 and the tolerance arithmetic. u = 2⁻²⁴.
            u = 2.0 ** -24
            self._w_bound = (self.W.shape[1] + 6) * u * float(self.W.norm(dim=1).max())
            self._b_bound = 0.0 if self.b is None else 5 * u * float(self.b.abs().max())
        # few classes: the classifier rows ride along in the float64 residual product (W r, exact) — for
        # skinny products the extra columns cost less than a separate float32 product and its tie checks
        self._nz = sum(t.shape[0] for t in rows)
        self._fused_w = self.W is not None and self._nz + self.W.shape[0] <= FUSED_COLUMNS
        if self._fused_w:
            rows.append(self.W)
        self._rhs_res = torch.cat(rows)
        self.n = 0
        self.mismatch = 0
        self.n_labelled = 0
        self.ncc_correct = 0
        self.clf_correct = 0
        self.rescored = 0  # rows whose float32 classifier decision was too close to call (scored in float64)
        self.screened = 0  # rows whose nearest centre was settled by the radius test (see _nearest_centre)
        self._scratch = scratch or Scratch()  # work buffers (e.g. thread_scratch(), shared with the first pass)

    @torch.no_grad()  # statistics of features, never part of a training graph
    def update(self, features, labels=None) -> "SecondPass":
        """Add a batch: ``features`` (B, D), ``labels`` (B,) int (required when projecting)."""
        x = features.detach() if isinstance(features, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(features))
        if x.dim() != 2 or x.shape[1] != self.means.shape[1]:
            raise NclabError(f"features must have shape (batch, {self.means.shape[1]}), got {tuple(x.shape)}")
        # the float32 route's error bound assumes true float32 products (no TF32/bf16 matmul shortcuts)
        f32_ok = torch.get_float32_matmul_precision() == "highest"
        x = x.to(self.device)
        x32 = x if x.dtype == torch.float32 and f32_ok else None
        y = None
        if labels is not None:
            y = torch.as_tensor(labels if not isinstance(labels, np.ndarray) else torch.from_numpy(labels))
            y = y.to(device=self.device).reshape(-1)
            lo, hi = 0, 0
            if y.numel():
                y, lo, hi = integer_labels(y)
            if lo < 0 or hi >= self.stats.num_classes:
                bad = lo if lo < 0 else hi
                raise NclabError(f"label {bad} outside 0..{self.stats.num_classes - 1}: labels are the class indices "
                                 "the first pass (ClassStats) was fed")
            if y.shape[0] != x.shape[0]:
                raise NclabError(f"features have {x.shape[0]} rows but labels have {y.shape[0]}")
        if x.shape[0] == 0:
            return self
        if y is not None:
            return self._update_labelled(x, y, x32)
        if self.proj_diag is not None:
            raise NclabError("the projected scatter needs labels; pass labels to update()")
        prod = as_float64(x, self._scratch) @ self._rhs.T
        if not bool(torch.isfinite(prod).all()):  # a NaN/inf in a row reaches its products
            raise nonfinite_error(x, "features", "the model has diverged or the input is corrupt")
        kp = self.means.shape[0]
        # nearest class centre: argmin ‖h‖² − 2 h·μ_k + ‖μ_k‖² (the ‖h‖² term is common to all k)
        ncc = self.present[torch.argmin(self.mean_sq.unsqueeze(0) - 2 * prod[:, :kp], dim=1)]
        if self.W is not None:
            scores = prod[:, kp:]
            if self.b is not None:
                scores = scores + self.b
            pred = torch.argmax(scores, dim=1)
            self.mismatch += int((pred != ncc).sum())
        self.n += int(x.shape[0])
        return self

    def _exact_scores(self, r: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Float64 classifier scores W h + b = W r + (W μ_y + b) from residuals r (B, D) and labels y (B,)."""
        return r @ self.W.T + self._wmb.index_select(0, y)

    def _scores32(self, x32: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """argmax_k (W h + b)_k from one float32 product for the whole batch, and the rows (bool (B,)) whose
        decision is too close to call in float32 (scored again in float64 by the caller, see the class docstring);
        ``None`` when a float32 score overflowed (the caller scores the batch in float64)."""
        buf = self._scratch.get
        b, k = x32.shape[0], self._w32.shape[0]
        s = torch.mm(x32, self._w32.T, out=buf("s32", (b, k), x32.dtype, x32.device))
        if self._b32 is not None:
            s += self._b32
        best, pred = torch.max(s, dim=1)
        if not bool(torch.isfinite(best).all()):  # float32 overflow
            return None
        if k == 1:
            return pred, torch.zeros_like(best, dtype=torch.bool)
        # every float32 score is within `bound` of its float64 value; a rival within twice that of the
        # winner (compared in float32, whose rounding of best - tol the slack in _w_bound covers) is unsure
        tol = torch.linalg.vector_norm(x32, dim=1).mul_(2 * self._w_bound).add_(2 * self._b_bound)
        second = s.scatter_(1, pred.unsqueeze(1), float("-inf")).amax(dim=1)  # s is scratch: reuse it
        return pred, second >= best - tol

    def _update_labelled(self, x: torch.Tensor, y: torch.Tensor, x32: torch.Tensor | None = None) -> "SecondPass":
        """A labelled batch: the classifier's float32 scores for all its rows in one product, then everything
        float64 in cache-sized chunks (``_chunk``): a caller's large batch (the hierarchy views pass 65,536 rows)
        never makes an O(B·D) float64 copy. (Larger batches did not make the float32 product faster on the 2-core
        CPU, so ``metrics_from_arrays`` passes cache-sized ones.)"""
        pos = self._pos.index_select(0, y)
        if bool((pos < 0).any()):
            raise NclabError("labels of the second pass include a class the first pass never saw; "
                             "feed both passes the same samples")
        scored = None
        if self.W is not None and not self._fused_w and x32 is not None:
            scored = self._scores32(x32)
        step = max(256, CHUNK_BYTES // (8 * x.shape[1]))
        # a NaN found in a later chunk must not leave the earlier chunks counted: the batch adds all or nothing
        # (one chunk raises before it counts anything: no snapshot on the usual cache-sized batches)
        saved = self._counters() if x.shape[0] > step else None
        try:
            for j in range(0, x.shape[0], step):
                sl = slice(j, j + step)
                self._chunk(x[sl], y[sl], pos[sl], None if scored is None else (scored[0][sl], scored[1][sl]))
        except NclabError:
            if saved is not None:
                self._restore(saved)
            raise
        self.n_labelled += int(x.shape[0])
        self.n += int(x.shape[0])
        return self

    _COUNTERS = ("mismatch", "clf_correct", "ncc_correct", "rescored", "screened", "traces", "proj_diag")

    def _counters(self) -> dict:
        return {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k in self._COUNTERS
                for v in [getattr(self, k)]}

    def _restore(self, saved: dict) -> None:
        for k, v in saved.items():
            setattr(self, k, v)

    def _chunk(self, x: torch.Tensor, y: torch.Tensor, pos: torch.Tensor,
               scored: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        """Everything from the residuals r = h − μ_y (exact differences, no cancellation) and one product
        r Vᵀ: traces ‖r‖², projected residuals z = V r; classifier scores W h + b (with few classes float64
        W r + (W μ_y + b) from the same product; else ``scored``: the float32 decisions and the rows to score
        again in float64 from r), and the nearest centre argmin_k ‖h − μ_k‖² = argmin_k (‖μ_y − μ_k‖² − 2 r·μ_k)
        (‖r‖² and r·μ_y are the same for every k; rows within the screening radius skip it, see
        ``_nearest_centre``). ``x``: a cache-sized chunk on this pass's device, any real dtype (never changed).
        Work buffers are reused across chunks (see ``Scratch``)."""
        buf = self._scratch.get
        b, dev = x.shape[0], x.device
        mu_y = torch.index_select(self._all_means, 0, y, out=buf("mu_y", tuple(x.shape), _F64, dev))
        # r = h − μ_y in float64 straight from the batch's dtype (exact widening, then one float64 subtraction:
        # the same numbers as a float64 copy minus μ_y, without writing and re-reading that copy)
        r = torch.sub(x, mu_y, out=mu_y) if x.is_floating_point() else mu_y.neg_().add_(x)
        sq = torch.linalg.vector_norm(r, dim=1).square_()
        if not bool(torch.isfinite(sq).all()):  # a NaN/inf anywhere in a row reaches its norm
            raise nonfinite_error(x, "features", "the model has diverged or the input is corrupt")
        # z = V r (projected) or r μ_kᵀ (no projection)
        k = self._rhs_res.shape[0]
        if k <= FUSED_COLUMNS and dev.type == "cpu":
            # skinny products (<= FUSED_COLUMNS columns): MKL is ~30 % faster computing (k, b) than (b, k) on CPU;
            # copied back to (b, k) because the row-wise work below is slower on the strided transposed view
            full = buf("prod", (b, k), _F64, dev).copy_(
                torch.mm(self._rhs_res, r.T, out=buf("prodT", (k, b), _F64, dev)).T)
        else:
            full = torch.mm(r, self._rhs_res.T, out=buf("prod", (b, k), _F64, dev))
        prod = full[:, : self._nz]
        zz = None
        if self._ncc_t is not None:
            zz = torch.mul(prod, prod, out=buf("zz", tuple(prod.shape), _F64, dev))
            ncc = self._nearest_centre(prod, zz.sum(1), y, pos)
        else:
            ncc = self._nearest(prod, pos)
        if self._fused_w:  # W h + b = W r + (W μ_y + b), all float64
            pred = torch.argmax(full[:, self._nz :] + self._wmb.index_select(0, y), dim=1)
        elif self.W is not None and scored is None:  # no float32 route (or it overflowed): float64 throughout
            pred = torch.argmax(self._exact_scores(r, y), dim=1)
        elif self.W is not None:
            pred = scored[0]
            unsure = torch.nonzero(scored[1]).flatten()
            self.rescored += int(unsure.numel())
            if unsure.numel():
                exact = self._exact_scores(r.index_select(0, unsure), y.index_select(0, unsure))
                pred[unsure] = torch.argmax(exact, dim=1)
        if self.W is not None:
            self.mismatch += int((pred != ncc).sum())
            self.clf_correct += int((pred == y).sum())
        self.ncc_correct += int((ncc == y).sum())
        if self.proj_diag is not None:
            self.traces.index_add_(0, y, sq)
            self.proj_diag += zz.sum(0)

    def _nearest(self, t: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """argmin_k ‖μ_y − μ_k‖² − 2 t_k over the present classes (t: (B, Kp) = r·μ_k up to a per-row
        constant), as labels."""
        buf = self._scratch.get
        dist = torch.index_select(self._d2, 0, pos, out=buf("dist", tuple(t.shape), _F64, t.device)).sub_(t, alpha=2)
        return self.present.index_select(0, torch.argmin(dist, dim=1))

    def _nearest_centre(self, z: torch.Tensor, z2: torch.Tensor, y: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Nearest class centre from the projected residuals z = V r (B, r), z2 = ‖z‖² (B,).

        ‖h − μ_k‖² − ‖h − μ_y‖² = ‖μ_y − μ_k‖² − 2 z·V(μ_k − μ_y) ≥ d_yk² − 2‖z‖ d_yk (Cauchy–Schwarz, V has
        orthonormal rows), which is > 0 for every k ≠ y once ‖z‖ < min_k d_yk / 2. Rows inside that radius
        (all of them in well-separated or collapsed data) are their own class's nearest centre without the
        (B, r) x (r, Kp) product; only the others are scored exactly."""
        ncc = y.clone()
        unsure = torch.nonzero(z2 >= self._radius2.index_select(0, pos)).flatten()
        self.screened += int(y.numel() - unsure.numel())
        if unsure.numel():
            zu = z.index_select(0, unsure)
            ncc[unsure] = self._nearest(zu @ self._ncc_t.T, pos.index_select(0, unsure))
        return ncc

    _SUMMED = ("n", "mismatch", "n_labelled", "ncc_correct", "clf_correct", "rescored", "screened")

    def all_reduce(self, group=None) -> "SecondPass":
        """Sum the counters, per-class traces and projected diagonal over all ranks in place (one float64
        ``all_reduce``; counts stay exact below 2⁵³). Every rank must have built this pass from the same merged
        first pass (:meth:`ClassStats.all_reduce`), so the frozen means and projection agree. No-op without a
        process group. Returns self."""
        from nclab.train import distributed as ddp

        if not ddp.active():
            return self
        parts = [torch.tensor([float(getattr(self, k)) for k in self._SUMMED], dtype=_F64, device=self.device)]
        if self.proj_diag is not None:
            parts += [self.traces, self.proj_diag]
        total = ddp.all_reduce_sum(torch.cat(parts), group)
        for i, k in enumerate(self._SUMMED):
            setattr(self, k, int(round(float(total[i]))))
        if self.proj_diag is not None:
            kt = self.traces.numel()
            off = len(self._SUMMED)
            self.traces = total[off : off + kt].clone()
            self.proj_diag = total[off + kt :].clone()
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
