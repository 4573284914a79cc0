"""Deterministic per-class subsampling of the train split (class imbalance)."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import torch

from nclab.data.types import Dataset, Split
from nclab.utils.errors import NclabError
from nclab.utils.seed import check_seed


def geometric_counts(n_max: int, num_classes: int, ratio: float) -> list[int]:
    """``n_c = round(n_max * ratio ** (-c / (K - 1)))``: class 0 keeps n_max, the last keeps n_max / ratio."""
    if not ratio >= 1:
        raise NclabError(f"imbalance ratio must be >= 1 (largest / smallest class), got {ratio}")
    if num_classes == 1:
        return [int(n_max)]
    return [max(1, int(round(n_max * ratio ** (-c / (num_classes - 1))))) for c in range(num_classes)]


def _parse_counts(counts, k: int) -> list[int]:
    if isinstance(counts, str):
        try:
            counts = [int(s) for s in counts.replace(" ", "").split(",") if s]
        except ValueError:
            raise NclabError(f"subsample counts must be comma-separated integers, got '{counts}'") from None
    if isinstance(counts, (int, float, np.integer, np.floating)):
        counts = [counts] * k
    try:  # "a", nan, inf or 5.5 (one value for all) raised ValueError/TypeError/OverflowError here before
        counts = list(counts)
        whole = all(float(c) == int(c) for c in counts)
    except (TypeError, ValueError, OverflowError):
        whole = False
    if not whole:
        raise NclabError(f"subsample counts must be whole numbers, got {counts!r}")
    counts = [int(c) for c in counts]
    if len(counts) != k:
        raise NclabError(f"subsample needs one count per class ({k}), got {len(counts)}")
    for c, n in enumerate(counts):
        # 0 would drop the class from training while it stays in num_classes, the test split and the metrics:
        # class removal, not imbalance (geometric_counts keeps >= 1 per class for the same reason)
        if n < 1:
            raise NclabError(f"subsample count for class {c} is {n}; every class needs >= 1 train sample "
                             "(subsample makes imbalanced subsets; use 1 for the rarest class)")
    return counts


def subsample(ds: Dataset, counts: Sequence[int] | int | str | None = None, ratio: float | None = None,
              seed: int = 0) -> Dataset:
    """A copy of ``ds`` whose train split keeps ``counts[c]`` samples of class c (test split unchanged).

    Either ``counts`` (one per class, an int for all, or ``"100,100,200,..."``) or ``ratio`` (geometric profile
    from :func:`geometric_counts`, n_max = the smallest available class size). Class c's samples are chosen by
    ``np.random.default_rng([seed, c])``; kept samples stay in their original order.
    """
    if (counts is None) == (ratio is None):
        raise NclabError("subsample needs exactly one of counts=... or ratio=...")
    check_seed(seed, "subsample seed")
    y = ds.train.y.cpu().numpy()
    k = ds.num_classes
    avail = np.bincount(y, minlength=k)
    want = _parse_counts(counts, k) if counts is not None else geometric_counts(int(avail.min()), k, float(ratio))
    keep = []
    for c in range(k):
        if want[c] > avail[c]:
            raise NclabError(f"subsample asks for {want[c]} samples of class {c} ({ds.class_names[c]}) "
                             f"but the train split has {avail[c]}")
        idx = np.flatnonzero(y == c)
        keep.append(idx[np.random.default_rng([int(seed), c]).permutation(idx.size)[: want[c]]])
    sel = torch.from_numpy(np.sort(np.concatenate(keep)))
    meta = dict(ds.meta)
    meta["subsample"] = {"counts": want, "seed": int(seed), **({"ratio": float(ratio)} if ratio is not None else {})}
    return dataclasses.replace(ds, train=Split(ds.train.x[sel], ds.train.y[sel]), meta=meta)
