"""Projection-pursuit splits: kurtosis arithmetic, the minimum-kurtosis direction, and a case built so that
k-means prefers the wrong split (a small far-off group) while the bimodality criterion finds the fine classes."""

from __future__ import annotations

import numpy as np
import pytest

from nclab.finegrain.evaluate import evaluate_recovery
from nclab.finegrain.pursuit import bimodal_split, excess_kurtosis, fisher_kurtosis, min_kurtosis_directions
from nclab.finegrain.recovery import FineLabelRecovery


def test_excess_kurtosis_closed_forms():
    assert excess_kurtosis(np.array([-1.0, 1.0] * 50)) == pytest.approx(-2.0, abs=1e-12)  # two equal point masses
    # two point masses with weights p, 1-p: (1 - 6p(1-p)) / (p(1-p)); p = 0.2 -> 0.25
    assert excess_kurtosis(np.array([0.0] * 80 + [1.0] * 20)) == pytest.approx(0.25, abs=1e-12)
    assert excess_kurtosis(np.linspace(-1, 1, 200001)) == pytest.approx(-1.2, abs=1e-4)  # uniform
    assert excess_kurtosis(np.random.default_rng(0).standard_normal(400_000)) == pytest.approx(0.0, abs=0.03)
    assert excess_kurtosis(np.ones(5)) == 0.0  # constant: defined, not NaN


def _decoy(n=2000, a=2.0, far=9.0, p_far=0.15, dim=6, seed=0):
    """Two balanced fine classes at ±a on axis 0; on axis 1 a fraction p_far of both classes sits `far` away
    (k-means gains more by cutting that group off); Gaussian noise elsewhere. Returns (x, fine)."""
    rng = np.random.default_rng(seed)
    fine = np.repeat([0, 1], n // 2)
    x = rng.standard_normal((n, dim))
    x[:, 0] += np.where(fine == 0, -a, a)
    x[:, 1] += far * (rng.random(n) < p_far)
    perm = rng.permutation(n)
    return (x[perm] * rng.uniform(0.5, 3, dim)).astype(np.float32), fine[perm]


def test_min_kurtosis_direction_is_the_bimodal_axis():
    x, _ = _decoy()
    w = (x - x.mean(0)) / x.std(0)  # axes are uncorrelated: standardising whitens
    v = min_kurtosis_directions(w, n_starts=4, seed=1)
    k = [excess_kurtosis(w @ v[:, j]) for j in range(v.shape[1])]
    best = v[:, int(np.argmin(k))]
    assert abs(best[0]) > 0.98  # axis 0 (kurtosis -2a^4/(a^2+1)^2 = -1.28), not the decoy axis 1 (positive)
    assert min(k) == pytest.approx(-2 * 2.0**4 / (2.0**2 + 1) ** 2, abs=0.08)


def test_pursuit_finds_the_fine_split_where_kmeans_cuts_off_the_far_group():
    x, fine = _decoy()
    x = (x - x.mean(0)) / x.std(0)  # whitened, as the recovery default hands it over (nearest centre = Fisher rule)
    labels, centres, info = bimodal_split(x, seed=0)
    acc = max(np.mean(labels == fine), np.mean(labels != fine))
    assert acc > 0.95 and info["chosen"] == "pursuit"
    assert info["pursuit_kurtosis"] < info["kmeans_kurtosis"]
    # the k-means candidate really is the decoy: its clusters follow axis 1, not the fine classes
    km = FineLabelRecovery(method="kmeans", normalize="none").fit(x, np.zeros(len(x), np.int64), fine)
    assert np.mean(km.fit_pred_ == fine) < 0.75
    # labels are the nearest of the returned centres (the rule predict() applies later)
    d = ((x[:, None, :] - centres[None]) ** 2).sum(2)
    assert np.array_equal(labels, d.argmin(1))
    assert fisher_kurtosis(x, labels) < -1.0


def test_pursuit_in_the_recovery_protocol_and_its_fallback():
    # two superclasses of the decoy kind: the protocol with method="pursuit" recovers them, k-means does not
    xa, fa = _decoy(seed=1)
    xb, fb = _decoy(seed=2)
    xb = xb + 50.0
    x = np.concatenate([xa, xb])
    fine = np.concatenate([fa, fb + 2])
    f2c = np.array([0, 0, 1, 1])
    rng = np.random.default_rng(0)
    tr = rng.random(len(x)) < 0.5
    args = (x[tr], f2c[fine[tr]], fine[tr], x[~tr], f2c[fine[~tr]], fine[~tr], f2c)
    pursuit = evaluate_recovery(*args, method="pursuit", normalize="whiten", whiten_var=1.0)
    kmeans = evaluate_recovery(*args, method="kmeans", normalize="whiten", whiten_var=1.0)
    assert pursuit["test_acc"] > 0.95 and kmeans["test_acc"] < 0.8
    # more than two fine classes per superclass: pursuit is plain k-means (same labels)
    f2c3 = np.array([0, 0, 0])
    x3 = np.concatenate([rng.normal(m, 1, (100, 4)) for m in (-8, 0, 8)]).astype(np.float32)
    y3 = np.repeat([0, 1, 2], 100)
    a = FineLabelRecovery(f2c3, method="pursuit").fit(x3, f2c3[y3], y3)
    b = FineLabelRecovery(f2c3, method="kmeans").fit(x3, f2c3[y3], y3)
    assert np.array_equal(a.fit_pred_, b.fit_pred_) and np.mean(a.fit_pred_ == y3) == 1.0


def test_cli_offers_every_recovery_method():
    from nclab.commands import recover
    from nclab.finegrain import recovery

    assert recover.METHODS == recovery.METHODS
