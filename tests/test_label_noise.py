"""Label noise: exact flipped fraction, determinism by seed, kinds, config wiring."""

import numpy as np
import pytest

from nclab.data.noise import corrupt_labels
from nclab.utils.errors import NclabError


@pytest.mark.parametrize("kind", ["symmetric", "asymmetric"])
@pytest.mark.parametrize("n,rate", [(1000, 0.2), (1000, 0.4), (333, 0.25), (10, 0.05)])
def test_exact_fraction_changed(kind, n, rate):
    y = np.arange(n) % 5
    r = corrupt_labels(y, 5, rate, kind, seed=3)
    changed = r.labels != y
    assert changed.sum() == int(round(rate * n))  # every chosen label really changes class
    np.testing.assert_array_equal(changed, r.corrupted)
    np.testing.assert_array_equal(r.clean, y)


def test_deterministic_by_seed_and_seed_matters():
    y = np.arange(500) % 4
    a, b = corrupt_labels(y, 4, 0.3, seed=7), corrupt_labels(y, 4, 0.3, seed=7)
    np.testing.assert_array_equal(a.labels, b.labels)
    c = corrupt_labels(y, 4, 0.3, seed=8)
    assert not np.array_equal(a.corrupted, c.corrupted)


def test_asymmetric_is_next_class_and_symmetric_covers_other_classes():
    y = np.arange(4000) % 4
    a = corrupt_labels(y, 4, 0.5, "asymmetric", seed=0)
    np.testing.assert_array_equal(a.labels[a.corrupted], (y[a.corrupted] + 1) % 4)
    s = corrupt_labels(y, 4, 0.5, "symmetric", seed=0)
    # from class 0 the new labels are 1, 2, 3, each about a third of the time (500 flips per class)
    new = s.labels[s.corrupted & (y == 0)]
    counts = np.bincount(new, minlength=4)
    assert counts[0] == 0 and all(abs(c / len(new) - 1 / 3) < 0.08 for c in counts[1:])


def test_zero_rate_changes_nothing_and_bad_input_is_named():
    y = np.arange(20) % 2
    np.testing.assert_array_equal(corrupt_labels(y, 2, 0.0).labels, y)
    with pytest.raises(NclabError, match="rate"):
        corrupt_labels(y, 2, 1.0)
    with pytest.raises(NclabError, match="kind"):
        corrupt_labels(y, 2, 0.1, "pairwise")
    with pytest.raises(NclabError, match="0..1"):
        corrupt_labels(np.array([0, 2]), 2, 0.5)


def test_config_noise_reaches_train_targets_only(tmp_path):
    from nclab.train import Trainer, load_config

    cfg = load_config("tiny", ["data.labels=coarse", "data.label_noise.rate=0.25", "data.label_noise.seed=1"])
    tr = Trainer(cfg, tmp_path / "r")
    clean = tr.clean_targets("train").numpy()
    noisy = tr.train_targets("train").numpy()
    assert (noisy != clean).sum() == int(round(0.25 * len(clean)))
    np.testing.assert_array_equal(tr.train_targets("test").numpy(), tr.clean_targets("test").numpy())
    np.testing.assert_array_equal(tr.label_noise.corrupted, noisy != clean)
    with pytest.raises(NclabError, match="label_noise.kind"):
        load_config("tiny", ["data.label_noise.kind=pair"])
