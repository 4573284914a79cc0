"""Streaming per-class statistics for neural-collapse metrics (float64, CPU or GPU, mergeable).

:class:`ClassStats` holds, for K classes and D-dimensional features,

* ``counts``  (K,)      n_k, samples seen per class
* ``means``   (K, D)    μ_k, class means
* ``traces``  (K,)      t_k = Σ_{i: y_i=k} ‖h_i − μ_k‖²  (per-class scatter traces)
* ``scatter`` (G, D, D) S_g = Σ_{k in group g} Σ_{i: y_i=k} (h_i − μ_k)(h_i − μ_k)ᵀ  (optional)

so Σ_W = (1/N) Σ_g S_g. Groups (``groups=fine_to_coarse``) keep one scatter per superclass, which
``fine_within_coarse`` needs; without groups G = 1. Memory is O(K·D + G·D²), never O(N·D).

Updates use the per-class Chan et al. (1979) pairwise merge: each batch is reduced to its own class
counts, means and scatter about the *batch* class means, then merged with
``S ← S_a + S_b + Σ_k (n_a n_b / n) δ_k δ_kᵀ`` (δ_k = batch mean − running mean). No raw second
moments are ever accumulated, so there is no catastrophic cancellation when the within-class spread is
tiny compared with the class means (exactly the collapsed regime). Two accumulators merge the same way.
"""

from __future__ import annotations

import copy
import threading
from typing import Sequence

import numpy as np
import torch

from nclab.utils.errors import NclabError
from nclab.utils.finite import nonfinite_error

_F64 = torch.float64
CHUNK_BYTES = 2**22  # float64 work per piece of a batch on CPU: cache-sized (1,024 x 512 float64 = 4 MB)


def _as_tensor(x, device, dtype=None) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)
    x = x.detach()  # statistics never track gradients (a grad-tracking input broke the out= buffers)
    return x.to(device=device, dtype=dtype) if dtype is not None else x.to(device=device)


class Scratch:
    """Reusable work buffers for the per-batch maths. Allocating fresh multi-MB tensors for every batch makes
    glibc map and unmap memory each time, and the page faults can cost more than the arithmetic of a pass.
    Buffers grow to the largest request and are reused."""

    def __init__(self):
        self._t: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        n = 1
        for d in shape:
            n *= int(d)
        t = self._t.get(name)
        if t is None or t.numel() < n or t.dtype != dtype or t.device != torch.device(device):
            t = torch.empty(max(n, 1), dtype=dtype, device=device)
            self._t[name] = t
        return t[:n].view(shape)

    def trim(self, max_bytes: int) -> None:
        """Drop buffers larger than ``max_bytes`` (a long-lived scratch keeps only cache-sized ones)."""
        self._t = {k: t for k, t in self._t.items() if t.numel() * t.element_size() <= max_bytes}


_THREAD_SCRATCH = threading.local()


def thread_scratch() -> Scratch:
    """This thread's long-lived :class:`Scratch`, for one-shot helpers such as ``metrics_from_arrays`` that build
    fresh accumulators on every call: their multi-MB buffers then stay mapped between calls instead of being
    faulted in again on every call. Per thread, so concurrent callers never share a buffer."""
    s = getattr(_THREAD_SCRATCH, "scratch", None)
    if s is None:
        s = _THREAD_SCRATCH.scratch = Scratch()
    return s


def integer_labels(y: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """``y`` as int64 class indices (whole-number floats accepted) and its (min, max), from one reduction."""
    if y.is_floating_point() and not torch.equal(y, y.round()):
        raise NclabError("labels must be integers; pass class indices 0..K-1")
    y = y.to(torch.int64)
    lo, hi = torch.aminmax(y)
    return y, int(lo), int(hi)


def as_float64(x: torch.Tensor, scratch: Scratch, name: str = "x") -> torch.Tensor:
    """``x`` as float64 in a reusable buffer (always a copy, so callers may change it in place)."""
    out = scratch.get(name, tuple(x.shape), _F64, x.device)
    return out.copy_(x.detach())


class ClassStats:
    """Streaming class statistics. Feed ``update(features (B, D), labels (B,))`` batch by batch.

    Parameters
    ----------
    num_classes: K, labels must lie in ``0..K-1``.
    dim: D, the feature dimension (inferred from the first batch when ``None``).
    scatter: keep the D x D within-class scatter (needed by ``nc1``; otherwise ``nc1`` needs a
        :class:`~nclab.collapse.second_pass.SecondPass` over the samples).
    traces: keep the per-class scatter traces (``False``: counts and means only, the cheapest first pass;
        a projecting ``SecondPass`` then supplies exact traces around the frozen means).
    groups: optional (K,) int array mapping each class to a group (e.g. ``hierarchy.fine_to_coarse``);
        one scatter matrix is kept per group.
    device: where the float64 statistics live (the device of the features is used for the batch maths).
    scratch: work buffers to reuse (e.g. :func:`thread_scratch`); default a private set.
    """

    def __init__(self, num_classes: int, dim: int | None = None, *, scatter: bool = True,
                 groups: Sequence[int] | np.ndarray | None = None, device: str | torch.device = "cpu",
                 traces: bool = True, scratch: Scratch | None = None):
        if int(num_classes) < 1:
            raise NclabError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.device = torch.device(device)
        self.keep_scatter = bool(scatter)
        self.keep_traces = bool(traces)
        if groups is not None:
            g = np.asarray(groups, dtype=np.int64)
            if g.shape != (self.num_classes,) or g.min() < 0:
                raise NclabError(f"groups must be a length-{self.num_classes} array of non-negative ints; "
                                 "pass hierarchy.fine_to_coarse")
            self.groups = g
            self.num_groups = int(g.max()) + 1
        else:
            self.groups = None
            self.num_groups = 1
        self.dim: int | None = None
        self.counts = torch.zeros(self.num_classes, dtype=_F64, device=self.device)
        self.traces = torch.zeros(self.num_classes, dtype=_F64, device=self.device) if traces else None
        self.means: torch.Tensor | None = None
        self.scatter: torch.Tensor | None = None
        self._scratch = scratch or Scratch()  # per-batch work buffers (not part of the statistics)
        if dim is not None:
            self._alloc(int(dim))

    # ---------------------------------------------------------------------------------------------
    def _alloc(self, dim: int) -> None:
        if dim < 1:
            raise NclabError(f"feature dimension must be >= 1, got {dim}")
        self.dim = dim
        self.means = torch.zeros(self.num_classes, dim, dtype=_F64, device=self.device)
        if self.keep_scatter:
            self.scatter = torch.zeros(self.num_groups, dim, dim, dtype=_F64, device=self.device)

    @property
    def num_samples(self) -> int:
        return int(self.counts.sum().item())

    @property
    def present(self) -> torch.Tensor:
        """Bool (K,): classes with at least one sample."""
        return self.counts > 0

    def _group_index(self, device) -> torch.Tensor:
        if self.groups is None:
            return torch.zeros(self.num_classes, dtype=torch.int64, device=device)
        return torch.as_tensor(self.groups, device=device)

    # ---------------------------------------------------------------------------------------------
    @torch.no_grad()  # statistics of features, never part of a training graph
    def update(self, features, labels) -> "ClassStats":
        """Add a batch: ``features`` (B, D) float (numpy or torch, any device), ``labels`` (B,) int."""
        x = features.detach() if isinstance(features, torch.Tensor) else _as_tensor(features, "cpu")
        if x.dim() != 2:
            raise NclabError(f"features must be 2-D (batch, dim), got shape {tuple(x.shape)}; flatten them first")
        y = _as_tensor(labels, x.device).reshape(-1)
        if y.shape[0] != x.shape[0]:
            raise NclabError(f"features have {x.shape[0]} rows but labels have {y.shape[0]}; pass matching arrays")
        if x.shape[0] == 0:
            return self
        y, lo, hi = integer_labels(y)
        if lo < 0 or hi >= self.num_classes:
            if lo < 0:
                raise NclabError(f"label {lo} is negative; labels must be 0-based class indices 0..K-1 "
                                 "(remap them, e.g. numpy.unique(y, return_inverse=True))")
            raise NclabError(f"label {hi} outside 0..{self.num_classes - 1}: this accumulator has "
                             f"{self.num_classes} classes (num_classes, or the rows of W / the hierarchy that set it); "
                             "make them agree with the labels")
        if self.dim is None:
            self._alloc(int(x.shape[1]))
        if x.shape[1] != self.dim:
            raise NclabError(f"features have dim {x.shape[1]} but this accumulator holds dim {self.dim}")
        k = self.num_classes
        nb = torch.bincount(y, minlength=k).to(_F64)
        sums = torch.zeros(k, self.dim, dtype=_F64, device=x.device)
        # float64 work in cache-sized pieces on CPU: a float64 copy of a large batch would spill out of cache
        # and cost O(B·D) memory (a 65,536 x 2,048 batch would need 1 GiB); pieces go through the scratch
        # buffers, and the batch is merged once
        step = max(1, CHUNK_BYTES // (8 * self.dim)) if x.device.type == "cpu" else x.shape[0]
        pieces = [(x[j : j + step], y[j : j + step]) for j in range(0, x.shape[0], step)]
        for xj, yj in pieces:
            x64 = as_float64(xj, self._scratch)
            sums.index_add_(0, yj, x64)
        if not bool(torch.isfinite(sums).all()):  # a NaN/inf anywhere reaches its class sum
            raise nonfinite_error(x, "features", "the model has diverged or the input is corrupt — check the run "
                                  "(lower the learning rate) or clean the array", "summing them")
        mb = sums / nb.clamp_min(1).unsqueeze(1)
        tb = torch.zeros(k, dtype=_F64, device=x.device) if self.keep_traces else None
        sb = torch.zeros(self.num_groups, self.dim, self.dim, dtype=_F64, device=x.device) if self.keep_scatter else None
        gidx = self._group_index(x.device) if self.groups is not None else None
        if self.keep_traces or self.keep_scatter:
            for xj, yj in pieces:  # scatter about the batch means, piece by piece (Chan et al.: merged below)
                xc = x64 if len(pieces) == 1 else as_float64(xj, self._scratch)  # one piece: converted above
                xc.sub_(torch.index_select(mb, 0, yj, out=self._scratch.get("g", tuple(xc.shape), _F64, xc.device)))
                if tb is not None:
                    tb.index_add_(0, yj, (xc * xc).sum(1))
                if sb is None:
                    continue
                if gidx is None:
                    sb[0].addmm_(xc.T, xc)
                else:
                    gi = gidx[yj]
                    for g in torch.unique(gi).tolist():
                        xg = xc[gi == g]
                        sb[g].addmm_(xg.T, xg)
        self._merge(nb.to(self.device), mb.to(self.device), None if tb is None else tb.to(self.device),
                    None if sb is None else sb.to(self.device))
        return self

    def _merge(self, nb: torch.Tensor, mb: torch.Tensor, tb: torch.Tensor | None, sb: torch.Tensor | None) -> None:
        """Chan et al. pairwise merge of (counts, means, traces, scatter) into self."""
        idx = torch.nonzero(nb > 0).flatten()  # only classes present in the other side change
        if idx.numel() == 0:
            return
        na, nbi = self.counts[idx], nb[idx]
        n = na + nbi
        delta = mb[idx] - self.means[idx]
        w = na * nbi / n  # 0 for classes new to self: their mean is simply taken over
        self.means[idx] += delta * (nbi / n).unsqueeze(1)
        if self.traces is not None:
            self.traces[idx] += tb[idx] + w * (delta * delta).sum(1)
        self.counts[idx] = n
        if self.keep_scatter:
            self.scatter += sb
            dw = delta * w.sqrt().unsqueeze(1)
            if self.groups is None:
                self.scatter[0] += dw.T @ dw
            else:
                gi = self._group_index(self.device)[idx]
                for g in torch.unique(gi).tolist():
                    d = dw[gi == g]
                    self.scatter[g] += d.T @ d

    def merge(self, other: "ClassStats") -> "ClassStats":
        """Fold another accumulator (same K, D, groups, scatter setting) into this one; returns self."""
        if (other.num_classes, other.keep_scatter, other.keep_traces) != (
                self.num_classes, self.keep_scatter, self.keep_traces):
            raise NclabError("can only merge accumulators with the same num_classes, scatter and traces settings")
        if (self.groups is None) != (other.groups is None) or (
                self.groups is not None and not np.array_equal(self.groups, other.groups)):
            raise NclabError("can only merge accumulators with the same groups")
        if other.dim is None:
            return self
        if self.dim is None:
            self._alloc(other.dim)
        if other.dim != self.dim:
            raise NclabError(f"cannot merge accumulators of dims {self.dim} and {other.dim}")
        self._merge(other.counts.to(self.device), other.means.to(self.device),
                    None if other.traces is None else other.traces.to(self.device),
                    None if other.scatter is None else other.scatter.to(self.device))
        return self

    def all_reduce(self, group=None) -> "ClassStats":
        """Merge the accumulators of all ranks in place (torch.distributed; no-op without a process group).

        Each rank holds the statistics of its own shard of the samples; afterwards every rank holds those of
        all samples. Two float64 ``all_reduce`` sums of sufficient statistics: first the counts n_k and sums
        n_k μ_k (giving the global means μ_k), then each rank's traces and scatter re-centred on the global
        means, t_k + n_k‖μ_k^r − μ_k‖² and S_g + Σ_{k in g} n_k (μ_k^r − μ_k)(μ_k^r − μ_k)ᵀ (the law of total
        scatter; no raw second moments, so no cancellation). A rank that saw no samples takes part with
        zeros. All ranks must call it, in the same order as their other collectives. Returns self."""
        from nclab.train import distributed as ddp

        if not ddp.active():
            return self
        dim = int(ddp.all_reduce_max(torch.tensor([self.dim or 0], dtype=torch.int64), group)[0])
        if dim == 0:
            return self  # no rank saw a sample
        if self.dim is None:
            self._alloc(dim)
        if self.dim != dim:
            raise NclabError(f"ranks hold features of different dims ({self.dim} here, {dim} elsewhere); "
                             "every rank must measure the same model and tap")
        k, d = self.num_classes, self.dim
        first = ddp.all_reduce_sum(torch.cat([self.counts, (self.counts.unsqueeze(1) * self.means).flatten()]), group)
        n = first[:k]
        mu = first[k:].view(k, d) / n.clamp_min(1).unsqueeze(1)
        delta = self.means - mu
        delta[self.counts == 0] = 0  # an unseen class has no local mean to re-centre
        parts = []
        if self.traces is not None:
            parts.append(self.traces + self.counts * (delta * delta).sum(1))
        if self.scatter is not None:
            dw = delta * self.counts.sqrt().unsqueeze(1)
            s = self.scatter.clone()
            gi = self._group_index(self.device)
            for g in range(self.num_groups):
                dg = dw[gi == g]
                s[g] += dg.T @ dg
            parts.append(s.flatten())
        if parts:
            second = ddp.all_reduce_sum(torch.cat(parts), group)
            if self.traces is not None:
                self.traces, second = second[:k].clone(), second[k:]
            if self.scatter is not None:
                self.scatter = second.view(self.num_groups, d, d).clone()
        self.counts, self.means = n.clone(), mu
        return self

    # derived statistics --------------------------------------------------------------------------
    def _require(self) -> None:
        if self.dim is None or self.num_samples == 0:
            raise NclabError("no samples accumulated; call update(features, labels) before computing metrics")

    def global_mean(self) -> torch.Tensor:
        """μ_G = Σ_k n_k μ_k / N (the sample mean), (D,)."""
        self._require()
        return (self.counts.unsqueeze(1) * self.means).sum(0) / self.counts.sum()

    def within_scatter(self) -> torch.Tensor:
        """Σ_W = (1/N) Σ_i (h_i − μ_{y_i})(h_i − μ_{y_i})ᵀ, (D, D), symmetrised."""
        self._require()
        if self.scatter is None:
            raise NclabError("this accumulator was built with scatter=False; use a SecondPass for nc1")
        s = self.scatter.sum(0)
        return (s + s.T) / (2 * self.counts.sum())

    def coarsen(self, mapping: Sequence[int] | np.ndarray) -> "ClassStats":
        """Exact statistics w.r.t. coarse labels ``mapping[y]`` (e.g. ``hierarchy.fine_to_coarse``).

        Coarse scatter = Σ fine scatters + Σ_f n_f (μ_f − μ_c)(μ_f − μ_c)ᵀ (law of total scatter), so no
        second look at the samples is needed. If ``mapping`` equals this accumulator's groups, the coarse
        accumulator keeps one scatter per coarse class as groups.
        """
        self._require()
        m = np.asarray(mapping, dtype=np.int64)
        if m.shape != (self.num_classes,) or m.min() < 0:
            raise NclabError(f"mapping must give a coarse class for each of the {self.num_classes} classes")
        kc = int(m.max()) + 1
        per_group = self.groups is not None and np.array_equal(self.groups, m)
        out = ClassStats(kc, self.dim, scatter=self.keep_scatter, traces=self.keep_traces,
                         groups=np.arange(kc) if per_group else None, device=self.device)
        mt = torch.as_tensor(m, device=self.device)
        out.counts = torch.zeros(kc, dtype=_F64, device=self.device).index_add_(0, mt, self.counts)
        sums = torch.zeros(kc, self.dim, dtype=_F64, device=self.device).index_add_(
            0, mt, self.counts.unsqueeze(1) * self.means)
        out.means = sums / out.counts.clamp_min(1).unsqueeze(1)
        d = self.means - out.means[mt]
        d[~self.present] = 0
        if self.traces is not None:
            out.traces = torch.zeros(kc, dtype=_F64, device=self.device).index_add_(
                0, mt, self.traces + self.counts * (d * d).sum(1))
        if self.keep_scatter:
            dw = d * self.counts.sqrt().unsqueeze(1)
            if per_group:
                out.scatter = self.scatter.clone()
                for c in range(kc):
                    dc = dw[mt == c]
                    out.scatter[c] += dc.T @ dc
            else:
                out.scatter = (self.scatter.sum(0) + dw.T @ dw).unsqueeze(0)
        return out

    def subset(self, classes: Sequence[int], group: int | None = None) -> "ClassStats":
        """Statistics restricted to ``classes`` (relabelled 0..len-1). ``group``: take that group's scatter
        (the classes must be exactly the group's classes); without groups the scatter is dropped."""
        self._require()
        idx = torch.as_tensor(list(classes), dtype=torch.int64, device=self.device)
        keep = self.keep_scatter and group is not None
        out = ClassStats(len(classes), self.dim, scatter=keep, traces=self.keep_traces, device=self.device)
        out.counts = self.counts[idx].clone()
        out.means = self.means[idx].clone()
        out.traces = None if self.traces is None else self.traces[idx].clone()
        if keep:
            out.scatter = self.scatter[group : group + 1].clone()
        return out

    def with_traces(self, traces: torch.Tensor) -> "ClassStats":
        """A shallow copy whose per-class traces are ``traces`` (e.g. exact ones from a second pass)."""
        out = copy.copy(self)
        out.traces = traces.to(device=self.device, dtype=_F64)
        out.keep_traces = True
        return out

    def to(self, device: str | torch.device) -> "ClassStats":
        """Move the statistics to ``device`` (returns self)."""
        self.device = torch.device(device)
        for name in ("counts", "traces", "means", "scatter"):
            v = getattr(self, name)
            if v is not None:
                setattr(self, name, v.to(self.device))
        return self

    def state_dict(self) -> dict:
        """Tensors only (safe for ``torch.save`` / ``weights_only`` loading)."""
        d = {"counts": self.counts.cpu()}
        if self.traces is not None:
            d["traces"] = self.traces.cpu()
        if self.means is not None:
            d["means"] = self.means.cpu()
        if self.scatter is not None:
            d["scatter"] = self.scatter.cpu()
        if self.groups is not None:
            d["groups"] = torch.as_tensor(self.groups)
        return d

    @classmethod
    def from_state_dict(cls, d: dict, device: str | torch.device = "cpu") -> "ClassStats":
        groups = d.get("groups")
        k = int(d["counts"].shape[0])
        dim = int(d["means"].shape[1]) if "means" in d else None
        out = cls(k, dim, scatter="scatter" in d, groups=None if groups is None else groups.numpy(), device=device,
                  traces="traces" in d)
        for name in ("counts", "traces", "means", "scatter"):
            if name in d:
                setattr(out, name, d[name].to(device=out.device, dtype=_F64))
        return out

    def __repr__(self) -> str:
        return (f"ClassStats(num_classes={self.num_classes}, dim={self.dim}, n={self.num_samples}, "
                f"scatter={self.keep_scatter}, groups={self.num_groups if self.groups is not None else None})")
