"""Neural-collapse metrics as pure functions of :class:`~nclab.collapse.stats.ClassStats` (and W, b).

Notation (docs/metrics.md): h_i features, y_i labels, K classes present (n_k > 0), N samples, μ_k class
means, μ_G = Σ_k n_k μ_k / N the sample mean, M̃ the K x D matrix of centred means μ_k − μ_G,
M the K x D matrix of raw means, W the K x D classifier weights, b its bias.
Σ_W = (1/N) Σ_i (h_i − μ_{y_i})(h_i − μ_{y_i})ᵀ and Σ_B = (1/K) Σ_k (μ_k − μ_G)(μ_k − μ_G)ᵀ.

Classes with no sample are left out of every means-based metric (``n_classes`` says how many were used).
A value that is mathematically undefined (e.g. all class means equal, or K = 1) is ``nan``, never a
misleading 0 and never negative.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from nclab.collapse.geometry import _F64, _check_wb, _t, between_span, centred_means, class_means
from nclab.collapse.stats import CHUNK_BYTES, ClassStats, thread_scratch
from nclab.utils.errors import NclabError

if TYPE_CHECKING:  # pragma: no cover
    from nclab.collapse.second_pass import SecondPass

NAN = float("nan")


def _f(x: torch.Tensor | float) -> float:
    return float(x.item()) if isinstance(x, torch.Tensor) else float(x)


def nc1_from_projection(proj_sw: torch.Tensor, s: torch.Tensor) -> float:
    """nc1 from V Σ_W Vᵀ — the (r, r) matrix or just its diagonal (r,) — and the singular values s of M̃:
    Σ_j (V Σ_W Vᵀ)_jj / s_j², clamped ≥ 0."""
    if s.numel() == 0:
        return NAN
    diag = proj_sw if proj_sw.dim() == 1 else torch.diagonal(proj_sw)
    val = (diag / (s * s)).sum()
    return max(_f(val), 0.0)


def nc1(stats: ClassStats, rank_rtol: float | None = None) -> float:
    """NC1 (Papyan, Han & Donoho 2020): tr(Σ_W Σ_B†) / K.

    Computed in the span of the centred means: with Σ_B = V diag(s²/K) Vᵀ (see :func:`between_span`),
    nc1 = Σ_j v_jᵀ Σ_W v_j / s_j². Cost O(K²D + rD²) instead of a D x D pseudo-inverse; always ≥ 0.
    ``nan`` when Σ_B = 0 (all class means equal, or a single class). Needs ``scatter=True``.
    ``rank_rtol``: see :func:`between_span` (default: numpy's matrix_rank tolerance).
    """
    _, n, _ = class_means(stats)
    mc = centred_means(stats)
    v, s = between_span(n, mc, rank_rtol)
    if s.numel() == 0:
        return NAN
    sw = stats.within_scatter()
    proj = (v @ sw) * v  # diag(V Σ_W Vᵀ) without the r x r product
    return max(_f((proj.sum(1) / (s * s)).sum()), 0.0)


def trace_within(stats: ClassStats) -> float:
    """tr Σ_W = Σ_k t_k / N (t_k the per-class scatter traces)."""
    stats._require()
    if stats.traces is None:
        raise NclabError("this accumulator was built with traces=False; pass its projecting SecondPass")
    return _f(stats.traces.sum() / stats.counts.sum())


def trace_between(stats: ClassStats) -> float:
    """tr Σ_B = ‖M̃‖²_F / K."""
    mc = centred_means(stats)
    return _f((mc * mc).sum() / mc.shape[0])


def nc1_quotient(stats: ClassStats) -> float:
    """tr Σ_W / tr Σ_B (the trace-ratio form of NC1, e.g. Tirer & Bruna 2022); ``nan`` if tr Σ_B = 0."""
    tb = trace_between(stats)
    return trace_within(stats) / tb if tb > 0 else NAN


def cdnv(stats: ClassStats) -> float:
    """Class-distance normalised variance (Galanti, György & Hutter 2022), averaged over class pairs:

    mean_{i<j} (σ_i² + σ_j²) / (2 ‖μ_i − μ_j‖²), σ_k² = t_k / n_k the mean squared distance to μ_k.
    ``nan`` for K < 2; ``inf`` if two classes share a mean but have spread.
    """
    idx, n, _ = class_means(stats)
    k = n.numel()
    if k < 2:
        return NAN
    if stats.traces is None:
        raise NclabError("this accumulator was built with traces=False; pass its projecting SecondPass")
    var = stats.traces[idx] / n
    mc = centred_means(stats)
    g = mc @ mc.T
    dg = torch.diagonal(g)
    d2 = (dg.unsqueeze(0) + dg.unsqueeze(1) - 2 * g).clamp_min(0)
    iu = torch.triu_indices(k, k, 1, device=g.device)
    num = var[iu[0]] + var[iu[1]]
    den = 2 * d2[iu[0], iu[1]]
    return _f((num / den).mean())


# NC2 / NC3 / bias-free geometry -----------------------------------------------------------------
def _pair_cosines(vectors: torch.Tensor) -> torch.Tensor:
    norms = vectors.norm(dim=1)
    g = vectors @ vectors.T
    k = vectors.shape[0]
    iu = torch.triu_indices(k, k, 1, device=g.device)
    return g[iu[0], iu[1]] / (norms[iu[0]] * norms[iu[1]])


def _rows(vectors, what: str) -> torch.Tensor:
    """``vectors`` as a float64 (K, D) matrix, one vector per row; else one clear error."""
    v = _t(vectors)
    if v.dim() != 2:
        raise NclabError(f"{what} needs a (K, D) matrix, one vector per row (class means or classifier rows), "
                         f"got shape {tuple(v.shape)}")
    return v


def equinorm(vectors: np.ndarray | torch.Tensor) -> float:
    """std/mean of the row norms ‖v_k‖ (population std, ddof=0; Papyan et al. 2020 NC2 equinorm).

    Use rows μ_k − μ_G for ``equinorm_means`` and w_k for ``equinorm_weights``: ``vectors`` (K, D). ``nan`` if all
    norms are 0.
    """
    v = _rows(vectors, "equinorm")
    norms = v.norm(dim=1)
    mean = norms.mean()
    return _f(norms.std(correction=0) / mean) if mean > 0 else NAN


def equiangular(vectors: np.ndarray | torch.Tensor) -> float:
    """std over pairs k < l of cos(v_k, v_l) (population std; Papyan et al. 2020 NC2), ``vectors`` (K, D).
    ``nan`` for K < 2."""
    v = _rows(vectors, "equiangular")
    if v.shape[0] < 2:
        return NAN
    return _f(_pair_cosines(v).std(correction=0))


def maxangle(vectors: np.ndarray | torch.Tensor) -> float:
    """mean over pairs k < l of |cos(v_k, v_l) + 1/(K−1)| (Papyan et al. 2020 NC2), ``vectors`` (K, D).
    ``nan`` for K < 2."""
    v = _rows(vectors, "maxangle")
    k = v.shape[0]
    if k < 2:
        return NAN
    return _f((_pair_cosines(v) + 1.0 / (k - 1)).abs().mean())


def frame_error(gram: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> float:
    """‖G/‖G‖_F − T/‖T‖_F‖_F for a K x K Gram matrix G and any target Gram T (e.g. a closed-form
    prediction of the deep-linear theory). ``nan`` if either is zero."""
    g, t = _t(gram), _t(target)
    if g.shape != t.shape or g.dim() != 2:
        raise NclabError(f"frame_error needs two square matrices of one shape, got {tuple(g.shape)} and {tuple(t.shape)}")
    gn, tn = g.norm(), t.norm()
    if gn == 0 or tn == 0:
        return NAN
    return _f((g / gn - t / tn).norm())


def etf_target(k: int) -> torch.Tensor:
    """The simplex-ETF Gram I − 11ᵀ/K (Frobenius norm √(K−1)), (K, K)."""
    if int(k) < 1:
        raise NclabError(f"etf_target needs K >= 1 classes, got {k}")
    return torch.eye(k, dtype=_F64) - 1.0 / k


def etf_error(gram: np.ndarray | torch.Tensor) -> float:
    """‖G/‖G‖_F − (I − 11ᵀ/K)/√(K−1)‖_F with G = M̃M̃ᵀ (means) or WWᵀ (weights) (Papyan et al. 2020
    NC2 in matrix form). ``nan`` for K < 2 or G = 0."""
    g = _t(gram)
    k = g.shape[0]
    if k < 2:
        return NAN
    return frame_error(g, etf_target(k).to(g.device))


def of_error(gram: np.ndarray | torch.Tensor) -> float:
    """‖G/‖G‖_F − I/√K‖_F: distance to an orthogonal frame, with G the *uncentred* Gram MMᵀ or WWᵀ
    (bias-free collapse geometry, Dang et al. 2023; Tirer & Bruna 2022)."""
    g = _t(gram)
    return frame_error(g, torch.eye(g.shape[0], dtype=_F64, device=g.device))


def self_duality(weights: np.ndarray | torch.Tensor, centred: np.ndarray | torch.Tensor) -> float:
    """NC3 (Papyan et al. 2020): ‖W/‖W‖_F − M̃/‖M̃‖_F‖²_F (squared Frobenius), ``weights`` W and ``centred``
    M̃ both (K, D). ``nan`` if either is 0."""
    w, m = _t(weights), _t(centred)
    if w.shape != m.shape:
        raise NclabError(f"W has shape {tuple(w.shape)} but the centred means have {tuple(m.shape)}; "
                         "pass the classifier of the labels these statistics use")
    wn, mn = w.norm(), m.norm()
    if wn == 0 or mn == 0:
        return NAN
    return _f(((w / wn - m.to(w.device) / mn) ** 2).sum())


# the whole dictionary ---------------------------------------------------------------------------
def compute_metrics(stats: ClassStats, W: np.ndarray | torch.Tensor | None = None, b: np.ndarray | torch.Tensor | None = None, *, second: "SecondPass | None" = None,
                    rank_rtol: float | None = None) -> dict[str, float]:
    """Every NC metric for one set of statistics; returns ``{name: float}`` (``nan`` = undefined).

    Keys: ``n_samples, n_classes, trace_within, trace_between, nc1, nc1_quotient, cdnv, equinorm_means,
    equiangular_means, maxangle_means, etf_error_means, of_error_means`` and, with ``W`` (K x D),
    ``equinorm_weights, equiangular_weights, maxangle_weights, etf_error_weights, of_error_weights,
    self_duality``. ``ncc_mismatch`` (and ``ncc_acc``/``classifier_acc``) come from a finished
    :class:`SecondPass` passed as ``second``; its projected scatter also supplies ``nc1`` when the
    accumulator was built with ``scatter=False``. ``b`` is only used by the second pass. ``rank_rtol``: the
    rank cut of Σ_B for ``nc1`` (:func:`between_span`; a second pass takes it at its construction).
    """
    if stats.traces is None and second is not None and second.traces is not None:
        stats = stats.with_traces(second.traces)
    idx, n, m = class_means(stats)
    mc = centred_means(stats)
    out: dict[str, float] = {"n_samples": float(stats.num_samples), "n_classes": float(n.numel())}
    out["trace_within"] = trace_within(stats)
    out["trace_between"] = trace_between(stats)
    if stats.scatter is not None:
        out["nc1"] = nc1(stats, rank_rtol)
    elif second is not None and second.proj_diag is not None:
        out["nc1"] = nc1_from_projection(second.proj_diag / stats.counts.sum(), second.span_s)
    out["nc1_quotient"] = nc1_quotient(stats)
    out["cdnv"] = cdnv(stats)
    out["equinorm_means"] = equinorm(mc)
    out["equiangular_means"] = equiangular(mc)
    out["maxangle_means"] = maxangle(mc)
    out["etf_error_means"] = etf_error(mc @ mc.T) if n.numel() >= 2 else NAN
    out["of_error_means"] = of_error(m @ m.T)
    if W is not None:
        w, _ = _check_wb(stats, W, b)
        out["equinorm_weights"] = equinorm(w)
        out["equiangular_weights"] = equiangular(w)
        out["maxangle_weights"] = maxangle(w)
        out["etf_error_weights"] = etf_error(w @ w.T)
        out["of_error_weights"] = of_error(w @ w.T)
        out["self_duality"] = self_duality(w[idx], mc)
    if second is not None:
        out.update(second.result())
    return out


@torch.no_grad()
def metrics_from_arrays(H: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, W: np.ndarray | torch.Tensor | None = None, b: np.ndarray | torch.Tensor | None = None, *, num_classes: int | None = None, batch_size: int | None = None,
                        device: str | torch.device = "cpu", scatter: bool | None = None,
                        rank_rtol: float | None = None) -> dict[str, float]:
    """Convenience: stream ``H`` (N, D) and ``y`` (N,) through a :class:`ClassStats` (and, with ``W``,
    a :class:`SecondPass` for ``ncc_mismatch``) and return :func:`compute_metrics`.

    ``scatter=None`` picks the cheaper exact route: with D > 2K the D x D scatter (N·D² flops) is skipped
    and nc1 comes from the scatter projected on the ≤ K−1 dimensional span of the means (N·D·K flops).
    """
    from nclab.collapse.second_pass import SecondPass

    h = H if isinstance(H, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(H))
    yy = y if isinstance(y, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(y))
    if h.dim() != 2 or yy.dim() != 1 or h.shape[0] != yy.shape[0]:
        raise NclabError(f"need features (N, D) and labels (N,), got {tuple(h.shape)} and {tuple(yy.shape)}")
    if h.shape[0] == 0:
        raise NclabError("no samples: the feature array is empty")
    if num_classes is None and W is None and int(yy.max()) + 1 > h.shape[0] + 1000:
        # K x D accumulators for labels like 10**10: say so instead of failing to allocate them
        raise NclabError(f"label {int(yy.max())} implies {int(yy.max()) + 1} classes for {h.shape[0]} samples; "
                         "labels must be 0-based class indices (remap them, e.g. numpy.unique(y, return_inverse=True)) "
                         "or pass num_classes")
    if W is not None and not isinstance(W, (torch.Tensor, np.ndarray)):
        W = np.asarray(W, dtype=np.float64)  # a nested list, as b already may be
    k = int(num_classes) if num_classes is not None else (
        int(W.shape[0]) if W is not None else int(yy.max()) + 1)
    if scatter is None:
        scatter = int(h.shape[1]) <= 2 * k
    if batch_size is not None:
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise NclabError(f"batch_size must be a positive integer (rows per chunk) or None, got {batch_size!r}")
        batch_size = int(batch_size)
    first_batch = batch_size
    if batch_size is None:  # cache-sized chunks on CPU (1024 x 512 float64 = 4 MB), large ones to fill a GPU
        cuda = torch.device(device).type == "cuda"
        batch_size = 65536 if cuda else max(256, CHUNK_BYTES // (8 * max(int(h.shape[1]), 1)))
        # the first pass only sums (ClassStats converts cache-sized pieces itself): larger chunks mean fewer
        # merges. The second pass stays cache-sized: larger batches do not make its float32 classifier
        # product any faster, and its float64 residuals then fall out of cache
        first_batch = batch_size if cuda or scatter else 16 * batch_size
    # CPU: the passes run one after the other on one set of work buffers, kept for the next call
    scratch = thread_scratch() if torch.device(device).type == "cpu" else None
    stats = ClassStats(k, int(h.shape[1]), device=device, scatter=scatter, traces=scatter, scratch=scratch)
    try:
        for i in range(0, h.shape[0], first_batch):
            stats.update(h[i : i + first_batch].to(device), yy[i : i + first_batch])
        second = None
        if W is not None or not scatter:
            second = SecondPass(stats, W, b, project=not scatter, rank_rtol=rank_rtol, scratch=scratch)
            for i in range(0, h.shape[0], batch_size):
                second.update(h[i : i + batch_size].to(device), yy[i : i + batch_size])
    finally:
        if scratch is not None:  # keep cache-sized buffers only: a caller's huge batch_size must not pin them
            scratch.trim(64 << 20)
    return compute_metrics(stats, W, b, second=second, rank_rtol=rank_rtol)


__all__ = [
    "class_means", "centred_means", "between_span", "nc1", "nc1_from_projection", "nc1_quotient", "cdnv",
    "trace_within", "trace_between", "equinorm", "equiangular", "maxangle", "etf_error", "etf_target",
    "of_error", "frame_error", "self_duality", "compute_metrics", "metrics_from_arrays",
]
