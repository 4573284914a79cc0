"""scikit-learn's bundled 8x8 digits as a tiny image dataset (no download)."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from nclab.data.types import Dataset, Split

DIGITS_TEST_FRACTION = 0.25
DIGITS_SPLIT_SEED = 0


def load_digits_dataset() -> Dataset:
    """1797 images, uint8 (N, 1, 8, 8) scaled 0..255 (round(v * 255 / 16)); stratified split, 25% test, seed 0.

    The split is a per-class seeded permutation, so it is fixed across scikit-learn versions.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.rint(d.images.astype(np.float64) * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(DIGITS_SPLIT_SEED)
    test_idx = []
    for c in range(10):
        idx = np.flatnonzero(y == c)
        test_idx.append(rng.permutation(idx)[: int(round(DIGITS_TEST_FRACTION * idx.size))])
    is_test = np.zeros(y.size, dtype=bool)
    is_test[np.concatenate(test_idx)] = True
    checksum = hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()
    return Dataset(
        name="digits",
        train=Split(torch.from_numpy(x[~is_test].copy()), torch.from_numpy(y[~is_test].copy())),
        test=Split(torch.from_numpy(x[is_test].copy()), torch.from_numpy(y[is_test].copy())),
        class_names=[str(i) for i in range(10)],
        source="digits",
        checksum=checksum,
        hierarchy=None,
        meta={"test_fraction": DIGITS_TEST_FRACTION, "split_seed": DIGITS_SPLIT_SEED},
    )
