"""Coarse/fine views for coarse-label training (Yang, Steinhardt & Hu 2023) and flat key naming.

From *one* fine-label accumulator built with ``groups=hierarchy.fine_to_coarse`` we get, exactly:

* ``fine``   — every metric w.r.t. the fine labels;
* ``coarse`` — every metric w.r.t. the coarse labels (via :meth:`ClassStats.coarsen`);
* ``fine_within_coarse`` — for each superclass c, ``nc1`` of its samples w.r.t. its fine classes
  (Σ_W and Σ_B taken inside c, K = number of fine classes of c): how much fine structure survives
  inside each collapsed class. Keys ``"<c>"`` per superclass and ``"mean"`` (over superclasses with
  ≥ 2 fine classes present; single-fine superclasses give ``nan``).

The classifier W (K_out x D) belongs to the labels the network was trained on: it is used for the view
whose class count equals K_out (both views if they have the same count).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from nclab.collapse.metrics import compute_metrics, nc1
from nclab.collapse.second_pass import SecondPass
from nclab.collapse.stats import ClassStats
from nclab.data.hierarchy import Hierarchy
from nclab.utils.errors import NclabError


def fine_within_coarse(fine_stats: ClassStats, hierarchy: Hierarchy) -> dict[str, float]:
    """``{"<c>": nc1 inside superclass c w.r.t. its fine classes, ..., "mean": average}``."""
    if fine_stats.groups is None or not np.array_equal(fine_stats.groups, hierarchy.fine_to_coarse):
        raise NclabError("fine_within_coarse needs a fine accumulator built with groups=hierarchy.fine_to_coarse")
    out: dict[str, float] = {}
    vals = []
    for c in range(hierarchy.num_coarse):
        fc = hierarchy.fine_classes(c)
        sub = fine_stats.subset(fc, group=c)
        v = nc1(sub) if sub.num_samples > 0 and int(sub.present.sum()) >= 2 else float("nan")
        out[str(c)] = v
        if not math.isnan(v):
            vals.append(v)
    out["mean"] = float(np.mean(vals)) if vals else float("nan")
    return out


def _check_w_rows(W, hierarchy: Hierarchy) -> None:
    """W is the classifier of the fine or of the coarse view (else it would silently join neither)."""
    if W is not None and int(W.shape[0]) not in (hierarchy.num_fine, hierarchy.num_coarse):
        raise NclabError(f"W has {int(W.shape[0])} rows but the hierarchy has {hierarchy.num_fine} fine and "
                         f"{hierarchy.num_coarse} coarse classes; pass the classifier of one of the two views")


def _w_for(k: int, W, b):
    if W is None or int(W.shape[0]) != k:
        return None, None
    return W, b


def hierarchy_metrics(fine_stats: ClassStats, hierarchy: Hierarchy, W: np.ndarray | torch.Tensor | None = None,
                      b: np.ndarray | torch.Tensor | None = None, *,
                      second_fine: SecondPass | None = None,
                      second_coarse: SecondPass | None = None) -> dict[str, dict[str, float]]:
    """``{"fine": {...}, "coarse": {...}, "fine_within_coarse": {...}}`` (see module docstring)."""
    if fine_stats.num_classes != hierarchy.num_fine:
        raise NclabError(f"the accumulator has {fine_stats.num_classes} classes but the hierarchy has "
                         f"{hierarchy.num_fine} fine classes; build it with num_classes=hierarchy.num_fine")
    _check_w_rows(W, hierarchy)
    coarse_stats = fine_stats.coarsen(hierarchy.fine_to_coarse)
    out = {
        "fine": compute_metrics(fine_stats, *_w_for(hierarchy.num_fine, W, b), second=second_fine),
        "coarse": compute_metrics(coarse_stats, *_w_for(hierarchy.num_coarse, W, b), second=second_coarse),
    }
    if fine_stats.scatter is not None and fine_stats.groups is not None:
        out["fine_within_coarse"] = fine_within_coarse(fine_stats, hierarchy)
    return out


def hierarchy_metrics_from_arrays(H: np.ndarray | torch.Tensor, y_fine: np.ndarray | torch.Tensor, hierarchy: Hierarchy,
                                  W: np.ndarray | torch.Tensor | None = None,
                                  b: np.ndarray | torch.Tensor | None = None, *,
                                  batch_size: int = 65536) -> dict[str, dict[str, float]]:
    """Convenience: both views and ``fine_within_coarse`` for in-memory features ``H`` (N, D) and fine labels
    ``y_fine`` (N,); ``W`` (K_fine, D) / ``b`` (K_fine,) the fine classifier, or (K_coarse, ...) the coarse one."""
    if not isinstance(hierarchy, Hierarchy):
        raise NclabError(f"hierarchy must be a nclab Hierarchy, got {type(hierarchy).__name__}; build one with "
                         "nclab.data.build_hierarchy(spec, class_names) or "
                         "Hierarchy.from_mapping(fine_to_coarse, names)")
    h = H if isinstance(H, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(H))
    y = y_fine if isinstance(y_fine, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(y_fine))
    if h.dim() != 2 or y.dim() != 1 or h.shape[0] != y.shape[0]:
        raise NclabError(f"need features (N, D) and fine labels (N,), got {tuple(h.shape)} and {tuple(y.shape)}")
    _check_w_rows(W, hierarchy)
    stats = ClassStats(hierarchy.num_fine, int(h.shape[1]), groups=hierarchy.fine_to_coarse)
    for i in range(0, h.shape[0], batch_size):
        stats.update(h[i : i + batch_size], y[i : i + batch_size])
    seconds: dict[str, SecondPass | None] = {"fine": None, "coarse": None}
    if W is not None:
        for view, k in (("fine", hierarchy.num_fine), ("coarse", hierarchy.num_coarse)):
            if int(W.shape[0]) == k:
                st = stats if view == "fine" else stats.coarsen(hierarchy.fine_to_coarse)
                sp = SecondPass(st, W, b, project=False)
                for i in range(0, h.shape[0], batch_size):
                    yy = y[i : i + batch_size]
                    sp.update(h[i : i + batch_size], yy if view == "fine" else hierarchy.coarse_of(yy))
                seconds[view] = sp
    return hierarchy_metrics(stats, hierarchy, W, b, second_fine=seconds["fine"], second_coarse=seconds["coarse"])


def flatten(metrics: dict[str, Any], prefix: str = "") -> dict[str, float | None]:
    """Nested dict -> ``{"prefix.a.b": value}``; non-finite floats become ``None`` (valid JSON)."""
    out: dict[str, float | None] = {}
    for k, v in metrics.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flatten(v, key))
        else:
            f = float(v)
            out[key] = f if math.isfinite(f) else None
    return out
