"""NC statistics and metrics for very many classes (token-level collapse: K = vocabulary size, ~50,000).

Memory: the K x D float64 means (50,257 x 768: 309 MB) and one D x D within-class scatter, never K per-class
covariances and never a K x K matrix.

* :class:`SparseClassStats` — a streaming accumulator whose per-batch work touches only the classes present
  in the batch (a dense :class:`ClassStats` update costs O(K·D) per batch for its class sums).
* :func:`pair_metrics` — every pairwise metric in tiles of ``rows x cols`` class pairs: CDNV, the NC2
  cosine statistics (equiangularity, max-angle) and the hyperspherical energies below.
* :func:`large_k_metrics` — the whole dictionary. NC1 = tr(Σ_W Σ_B†)/K from the D x D scatter and the
  span of the centred means (:func:`nclab.collapse.metrics.nc1`); the ETF and orthogonal-frame errors in
  closed form from D x D Grams (‖M̃M̃ᵀ‖_F = ‖M̃ᵀM̃‖_F, ⟨M̃M̃ᵀ, I − 11ᵀ/K⟩ = ‖M̃‖²_F − ‖M̃ᵀ1‖²/K).
  For K > D + 1 no simplex ETF exists in D dimensions; then ``etf_error_*`` is not reported and the
  generalised NC2 is: ``hyperspherical_log_energy`` = mean over pairs of −log‖u_i − u_j‖ and
  ``hyperspherical_riesz1_energy`` = mean over pairs of 1/‖u_i − u_j‖ (Riesz s = 1), with u_k the
  normalised centred means (lower = more uniform on the sphere; Liu et al. 2023, "generalized neural
  collapse"). Classes that never occur are excluded and counted (``n_classes_absent``).
"""

from __future__ import annotations

import math

import torch

from nclab.collapse.stats import ClassStats
from nclab.utils.errors import NclabError

_F64 = torch.float64
NAN = float("nan")


class SparseClassStats:
    """Streaming counts, means, per-class traces and the D x D within-class scatter for large K.

    ``update(features (B, D), labels (B,))``: the batch is reduced to its U ≤ B distinct classes (sums,
    scatter about the batch class means), then merged into the running statistics of those U classes only
    (the Chan et al. pairwise merge used by :class:`ClassStats`). ``to_class_stats()`` gives a
    :class:`ClassStats` view (same tensors) for the dense helpers (``coarsen``, ``nc1``).
    """

    def __init__(self, num_classes: int, dim: int, *, scatter: bool = True, device: str | torch.device = "cpu"):
        self.num_classes, self.dim, self.device = int(num_classes), int(dim), torch.device(device)
        self.counts = torch.zeros(self.num_classes, dtype=_F64, device=self.device)
        self.means = torch.zeros(self.num_classes, self.dim, dtype=_F64, device=self.device)
        self.traces = torch.zeros(self.num_classes, dtype=_F64, device=self.device)
        self.scatter = torch.zeros(self.dim, self.dim, dtype=_F64, device=self.device) if scatter else None

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor) -> "SparseClassStats":
        x = features.detach().to(self.device, _F64)
        y = labels.detach().to(self.device).reshape(-1).to(torch.int64)
        if x.dim() != 2 or x.shape[1] != self.dim or y.shape[0] != x.shape[0]:
            raise NclabError(f"need features (B, {self.dim}) and labels (B,), "
                             f"got {tuple(x.shape)} and {tuple(y.shape)}")
        if x.shape[0] == 0:
            return self
        if int(y.min()) < 0 or int(y.max()) >= self.num_classes:
            raise NclabError(f"label outside 0..{self.num_classes - 1}; "
                             "the vocabulary/hierarchy must cover every token")
        cls, inv = torch.unique(y, return_inverse=True)
        u = cls.numel()
        nb = torch.bincount(inv, minlength=u).to(_F64)
        sums = torch.zeros(u, self.dim, dtype=_F64, device=self.device).index_add_(0, inv, x)
        if not bool(torch.isfinite(sums).all()):
            raise NclabError("features contain NaN or inf; the model has diverged or the input is corrupt")
        mb = sums / nb.unsqueeze(1)
        r = x - mb[inv]  # residuals about the batch class means
        tb = torch.zeros(u, dtype=_F64, device=self.device).index_add_(0, inv, (r * r).sum(1))
        na = self.counts[cls]
        n = na + nb
        delta = mb - self.means[cls]
        w = na * nb / n
        self.means[cls] += delta * (nb / n).unsqueeze(1)
        self.traces[cls] += tb + w * (delta * delta).sum(1)
        self.counts[cls] = n
        if self.scatter is not None:
            self.scatter.addmm_(r.T, r)
            dw = delta * w.sqrt().unsqueeze(1)
            self.scatter.addmm_(dw.T, dw)
        return self

    @property
    def num_samples(self) -> int:
        return int(self.counts.sum().item())

    def to_class_stats(self) -> ClassStats:
        """A :class:`ClassStats` holding these tensors (one scatter group)."""
        st = ClassStats(self.num_classes, None, scatter=self.scatter is not None, device=self.device)
        st.dim, st.counts, st.means, st.traces = self.dim, self.counts, self.means, self.traces
        st.scatter = None if self.scatter is None else self.scatter.unsqueeze(0)
        return st


def _tiles(k: int, size: int):
    return [(i, min(i + size, k)) for i in range(0, k, size)]


@torch.no_grad()
def pair_metrics(vectors: torch.Tensor, var: torch.Tensor | None = None, *, rows: int = 1024, cols: int = 4096,
                 energies: bool = True) -> dict[str, float]:
    """Pairwise statistics over all pairs i < j of the rows of ``vectors`` (K, D), in tiles.

    Returns ``cos_mean``, ``equiangular`` (population std of cos(v_i, v_j)), ``maxangle``
    (mean |cos + 1/(K−1)|), with ``var`` (K,) per-class variances σ_k² ``cdnv`` = mean (σ_i² + σ_j²) /
    (2‖v_i − v_j‖²) (``vectors`` the means: differences are translation invariant), and with ``energies``
    the hyperspherical log and Riesz-1 energies of u = v/‖v‖ (module docstring). Work memory O(rows·cols).
    """
    v = vectors.to(_F64)
    k = v.shape[0]
    if k < 2:
        out = {"cos_mean": NAN, "equiangular": NAN, "maxangle": NAN}
        if var is not None:
            out["cdnv"] = NAN
        if energies:
            out.update(hyperspherical_log_energy=NAN, hyperspherical_riesz1_energy=NAN)
        return out
    sq = (v * v).sum(1)
    norms = sq.sqrt()
    acc = dict(cos=0.0, cos2=0.0, maxangle=0.0, cdnv=0.0, log=0.0, riesz=0.0)
    shift = 1.0 / (k - 1)
    for i0, i1 in _tiles(k, rows):
        for j0, j1 in _tiles(k, cols):
            if j1 <= i0 + 1:
                continue  # no pair i < j in this block
            g = v[i0:i1] @ v[j0:j1].T
            sel = None  # off-diagonal blocks (every j > every i) need no mask: most of the work, no copies
            if j0 <= i1 - 1:
                ii = torch.arange(i0, i1, device=v.device).unsqueeze(1)
                jj = torch.arange(j0, j1, device=v.device).unsqueeze(0)
                sel = jj > ii

            def pick(t):
                return t if sel is None else t[sel]

            if var is not None:
                d2 = (sq[i0:i1].unsqueeze(1) + sq[j0:j1].unsqueeze(0)).sub_(g, alpha=2).clamp_min_(0)
                num = var[i0:i1].unsqueeze(1) + var[j0:j1].unsqueeze(0)
                acc["cdnv"] += float(pick(num.div_(d2.mul_(2))).sum())
            cos = pick(g.div_(norms[i0:i1].unsqueeze(1)).div_(norms[j0:j1].unsqueeze(0)))  # = u_i·u_j
            acc["cos"] += float(cos.sum())
            acc["cos2"] += float(torch.dot(cos.reshape(-1), cos.reshape(-1)))
            acc["maxangle"] += float((cos + shift).abs_().sum())
            if energies:
                dist2 = cos.mul(-2).add_(2).clamp_min_(0)  # ‖u_i − u_j‖² from the same product
                acc["riesz"] += float(dist2.rsqrt().sum())
                acc["log"] += float(dist2.log_().sum()) * -0.5
    pairs = k * (k - 1) / 2
    mean = acc["cos"] / pairs
    out = {"cos_mean": mean, "equiangular": math.sqrt(max(acc["cos2"] / pairs - mean * mean, 0.0)),
           "maxangle": acc["maxangle"] / pairs}
    if var is not None:
        out["cdnv"] = acc["cdnv"] / pairs
    if energies:
        out["hyperspherical_log_energy"] = acc["log"] / pairs
        out["hyperspherical_riesz1_energy"] = acc["riesz"] / pairs
    return out


def frame_errors(m: torch.Tensor, centred: bool) -> float:
    """‖G/‖G‖_F − T/‖T‖_F‖_F for G = m mᵀ without forming the K x K Gram: T = I − 11ᵀ/K (``centred``,
    the simplex ETF) or I (the orthogonal frame). ``nan`` for K < 2 or G = 0."""
    k = m.shape[0]
    if k < 2:
        return NAN
    gn = torch.linalg.matrix_norm(m.T @ m)  # ‖m mᵀ‖_F = ‖mᵀ m‖_F (D x D)
    if gn == 0:
        return NAN
    tr = (m * m).sum()
    inner = tr - (m.sum(0) ** 2).sum() / k if centred else tr
    tn = math.sqrt(k - 1) if centred else math.sqrt(k)
    return math.sqrt(max(2.0 - 2.0 * float(inner) / (float(gn) * tn), 0.0))


def large_k_metrics(stats: SparseClassStats | ClassStats, W: torch.Tensor | None = None, *, rows: int = 1024,
                    cols: int = 4096) -> dict[str, float]:
    """The NC dictionary for many classes (module docstring); keys as :func:`compute_metrics` where defined,
    plus ``n_classes_absent`` and, for K > D + 1, the ``hyperspherical_*`` energies instead of
    ``etf_error_*``. ``W`` (K_all, D): the classifier; its rows of absent classes are dropped for
    ``self_duality`` only."""
    from nclab.collapse.metrics import equinorm, nc1

    st = stats.to_class_stats() if isinstance(stats, SparseClassStats) else stats
    present = torch.nonzero(st.counts > 0).flatten()
    if present.numel() == 0:
        raise NclabError("no samples accumulated; the text gave no token positions")
    n = st.counts[present]
    m = st.means[present]
    mc = m - (n.unsqueeze(1) * m).sum(0) / n.sum()
    k, d = mc.shape
    out: dict[str, float] = {"n_samples": float(n.sum()), "n_classes": float(k),
                             "n_classes_absent": float(st.num_classes - k)}
    out["trace_within"] = float(st.traces[present].sum() / n.sum())
    out["trace_between"] = float((mc * mc).sum() / k)
    if st.scatter is not None:
        sub = ClassStats(k, d, scatter=True, device=st.device)
        sub.counts, sub.means, sub.traces, sub.scatter = n, m, st.traces[present], st.scatter
        out["nc1"] = nc1(sub)
    out["nc1_quotient"] = out["trace_within"] / out["trace_between"] if out["trace_between"] > 0 else NAN
    pm = pair_metrics(mc, st.traces[present] / n, rows=rows, cols=cols, energies=k > d + 1)
    out["cdnv"] = pm["cdnv"]
    out["equinorm_means"] = equinorm(mc)
    out["equiangular_means"] = pm["equiangular"]
    out["maxangle_means"] = pm["maxangle"]
    if k > d + 1:
        out["hyperspherical_log_energy_means"] = pm["hyperspherical_log_energy"]
        out["hyperspherical_riesz1_energy_means"] = pm["hyperspherical_riesz1_energy"]
    else:
        out["etf_error_means"] = frame_errors(mc, centred=True)
    out["of_error_means"] = frame_errors(m, centred=False)
    if W is not None:
        w = W.to(device=st.device, dtype=_F64)
        if w.shape != (st.num_classes, d):
            raise NclabError(f"the classifier has shape {tuple(w.shape)}, expected ({st.num_classes}, {d})")
        pw = pair_metrics(w, rows=rows, cols=cols, energies=w.shape[0] > d + 1)
        out["equinorm_weights"] = equinorm(w)
        out["equiangular_weights"] = pw["equiangular"]
        out["maxangle_weights"] = pw["maxangle"]
        if w.shape[0] > d + 1:
            out["hyperspherical_log_energy_weights"] = pw["hyperspherical_log_energy"]
            out["hyperspherical_riesz1_energy_weights"] = pw["hyperspherical_riesz1_energy"]
        else:
            out["etf_error_weights"] = frame_errors(w, centred=True)
        out["of_error_weights"] = frame_errors(w, centred=False)
        wp = w[present]
        wn, mn = wp.norm(), mc.norm()
        out["self_duality"] = float(((wp / wn - mc / mn) ** 2).sum()) if wn > 0 and mn > 0 else NAN
    return out


__all__ = ["SparseClassStats", "pair_metrics", "frame_errors", "large_k_metrics"]
