"""Synthetic hierarchical Gaussian mixture and scikit-learn digits."""

import numpy as np
import pytest
import torch

from nclab.data import load_dataset, make_hierarchical_gaussian
from nclab.data.synthetic import hierarchical_gaussian_means
from nclab.utils.errors import NclabError


def test_gaussian_shapes_labels_and_hierarchy():
    x, y, h = make_hierarchical_gaussian(coarse=3, fine_per_coarse=4, dim=10, n_per_class=7, seed=1)
    assert x.dtype == np.float32 and x.shape == (3 * 4 * 7, 10)
    assert y.dtype == np.int64 and np.array_equal(np.bincount(y), np.full(12, 7))
    assert h.num_coarse == 3 and h.num_fine == 12
    assert np.array_equal(h.fine_to_coarse, np.arange(12) // 4)  # fine f = k*m + j


def test_gaussian_geometry_matches_generative_model():
    k, m, dim = 3, 2, 16
    mu_c, mu_f = hierarchical_gaussian_means(k, m, dim, coarse_sep=5.0, fine_sep=1.5, seed=3)
    # K <= dim: coarse directions are orthonormal, so centres have norm coarse_sep and pairwise dist sqrt(2)*sep
    assert np.allclose(np.linalg.norm(mu_c, axis=1), 5.0)
    assert np.allclose(mu_c @ mu_c.T, 25.0 * np.eye(k), atol=1e-9)
    off = mu_f - np.repeat(mu_c, m, axis=0)
    assert np.allclose(np.linalg.norm(off, axis=1), 1.5)
    # empirical class means approach the fine centres: error ~ noise / sqrt(n) per coordinate
    x, y, _, (mc2, mf2) = make_hierarchical_gaussian(k, m, dim, 5.0, 1.5, noise=0.5, n_per_class=2000, seed=3,
                                                     return_means=True)
    assert np.array_equal(mf2, mu_f)
    emp = np.stack([x[y == f].mean(0) for f in range(k * m)])
    assert np.abs(emp - mu_f).max() < 6 * 0.5 / np.sqrt(2000)
    # within-class spread equals the noise level
    resid = x - mu_f[y]
    assert abs(resid.std() - 0.5) < 0.01


def test_gaussian_deterministic_and_seed_sensitive():
    a = make_hierarchical_gaussian(n_per_class=5, seed=4)
    b = make_hierarchical_gaussian(n_per_class=5, seed=4)
    c = make_hierarchical_gaussian(n_per_class=5, seed=5)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.allclose(a[0], c[0])


def test_synthetic_spec_train_independent_of_n_test():
    d1 = load_dataset("synthetic:coarse=2,fine_per_coarse=3,dim=8,n_train=20,n_test=5,seed=7")
    d2 = load_dataset("synthetic:coarse=2,fine_per_coarse=3,dim=8,n_train=20,n_test=50,seed=7")
    assert torch.equal(d1.train.x, d2.train.x) and torch.equal(d1.train.y, d2.train.y)
    assert len(d1.test) == 2 * 3 * 5 and len(d2.test) == 2 * 3 * 50
    assert d1.train.x.dtype == torch.float32 and d1.train.y.dtype == torch.int64
    assert not d1.is_image and d1.input_shape == (8,) and d1.num_classes == 6
    assert d1.hierarchy.coarse_names == ["c0", "c1"] and d1.class_names == d1.hierarchy.fine_names
    # test samples are fresh draws, not copies of training samples
    assert not any(torch.equal(d1.test.x[0], r) for r in d1.train.x)
    assert d1.checksum != d2.checksum


@pytest.mark.parametrize("spec, msg", [
    ("synthetic:bogus=1", "unknown synthetic key 'bogus'"),
    ("synthetic:dim=abc", "needs a number"),
    ("synthetic:dim", "not key=value"),
    ("synthetic:coarse=0", "coarse must be >= 1"),
    ("synthetic:noise=-1", "noise must be a finite number >= 0"),
])
def test_synthetic_spec_errors(spec, msg):
    with pytest.raises(NclabError, match=msg):
        load_dataset(spec)


def test_unknown_source_error():
    with pytest.raises(NclabError, match="unknown data source 'nope'"):
        load_dataset("nope:/x")


def test_digits_matches_sklearn_and_split_is_stratified_and_fixed():
    from sklearn.datasets import load_digits

    ref = load_digits()
    d = load_dataset("digits")
    assert d.train.x.dtype == torch.uint8 and d.train.x.shape[1:] == (1, 8, 8) and d.is_image
    assert len(d.train) + len(d.test) == len(ref.target) == 1797
    # every sample appears exactly once across the splits, with the value map v -> round(v * 255 / 16)
    want = sorted((tuple(np.rint(img * 255 / 16).astype(int).ravel()), int(t))
                  for img, t in zip(ref.images, ref.target))
    got = sorted((tuple(x.reshape(-1).tolist()), int(yy)) for s in (d.train, d.test) for x, yy in zip(s.x, s.y))
    assert got == want
    assert int(d.train.x.max()) == 255 and int(d.train.x.min()) == 0
    # stratified 25% test split
    per_class = np.bincount(ref.target)
    assert np.array_equal(np.bincount(d.test.y.numpy()), np.rint(0.25 * per_class).astype(int))
    again = load_dataset("digits")
    assert torch.equal(again.test.x, d.test.x) and torch.equal(again.train.y, d.train.y)
    with pytest.raises(NclabError, match="takes no argument"):
        load_dataset("digits:foo")


def test_synthetic_test_split_is_fresh_data():
    from nclab.data import load_dataset
    ds = load_dataset("synthetic:n_train=60,n_test=60")
    train = {tuple(r) for r in ds.train.x.numpy().round(6)}
    assert not any(tuple(r) in train for r in ds.test.x.numpy().round(6))
