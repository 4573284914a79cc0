"""Telling NaN/inf in an input apart from finite values too large for the computation (an overflow)."""

from __future__ import annotations

from typing import Any

import numpy as np

from nclab.utils.errors import NclabError


def _max_abs(x: Any) -> float:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            return float(x.detach().abs().max().double()) if x.numel() else 0.0
    except ImportError:  # pragma: no cover
        pass
    a = np.asarray(x)
    return float(np.abs(a).max()) if a.size else 0.0


def _all_finite(x: Any) -> bool:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            return bool(torch.isfinite(x).all()) if x.is_floating_point() else True
    except ImportError:  # pragma: no cover
        pass
    a = np.asarray(x)
    return bool(np.isfinite(a).all()) if np.issubdtype(a.dtype, np.floating) else True


def nonfinite_error(x: Any, what: str, nan_fix: str, computed: str = "computing with them") -> NclabError:
    """The error for a non-finite result of ``x``: "contain NaN or inf" when ``x`` itself does, else an
    overflow naming ``x``'s largest magnitude (finite values too large for ``computed``)."""
    if not _all_finite(x):
        return NclabError(f"{what} contain NaN or inf; {nan_fix}")
    return NclabError(f"{what} are finite but too large: {computed} overflows (largest |value| "
                      f"{_max_abs(x):.3g}); rescale them (e.g. divide by their largest norm)")
