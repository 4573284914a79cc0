"""Seeding every RNG a run touches."""

from __future__ import annotations

import random

import numpy as np

from nclab.utils.errors import NclabError


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def check_seed(seed: int, what: str) -> int:
    """A seed as numpy's generators take it (>= 0), else one error naming ``what`` (e.g. ``--seed``)."""
    if int(seed) < 0:
        raise NclabError(f"{what} must be >= 0, got {seed}")
    return int(seed)
