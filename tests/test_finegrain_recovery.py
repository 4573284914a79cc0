"""Fine-label recovery on data whose answer is known (hierarchical Gaussian mixtures)."""

from __future__ import annotations

import itertools
import importlib

import numpy as np
import pytest
import torch

from nclab.data.hierarchy import Hierarchy
from nclab.finegrain.evaluate import confusion, evaluate_recovery, flatten_pixels
from nclab.finegrain.kmeans import kmeans
from nclab.finegrain.recovery import FineLabelRecovery, hungarian_names
from nclab.utils.errors import NclabError


def hier_mixture(n_per_fine=60, coarse=3, fine_per=(2, 3, 2), dim=16, coarse_sep=20.0, fine_sep=6.0, noise=1.0, seed=0):
    """Fine class f has mean coarse_mu[c(f)] + fine offset; returns (x, fine, f2c)."""
    rng = np.random.default_rng(seed)
    f2c = np.concatenate([[c] * k for c, k in zip(range(coarse), fine_per)]).astype(np.int64)
    cmu = rng.normal(size=(coarse, dim)) * coarse_sep
    fmu = cmu[f2c] + rng.normal(size=(len(f2c), dim)) * fine_sep
    fine = np.repeat(np.arange(len(f2c)), n_per_fine)
    x = fmu[fine] + rng.normal(size=(len(fine), dim)) * noise
    perm = rng.permutation(len(fine))
    return x[perm].astype(np.float32), fine[perm], f2c


def split(seed=0, **kw):
    x, y, f2c = hier_mixture(seed=seed, **kw)
    n = len(y) // 2
    return x[:n], y[:n], x[n:], y[n:], f2c


@pytest.mark.parametrize("normalize", ["none", "center", "l2", "center+l2", "whiten"])
def test_well_separated_recovery_is_near_perfect(normalize):
    xtr, ytr, xte, yte, f2c = split()
    out = evaluate_recovery(xtr, f2c[ytr], ytr, xte, f2c[yte], yte, f2c, normalize=normalize)
    assert out["test_acc"] >= 0.99 and out["train_acc"] >= 0.99 and out["oracle_test_acc"] >= 0.99
    assert out["ari"] > 0.97 and out["coarse_test_acc"] == 1.0


@pytest.mark.parametrize("method", ["gmm", "spectral", "agglomerative"])
def test_other_clusterers_recover_well_separated_classes(method):
    xtr, ytr, xte, yte, f2c = split(n_per_fine=40)
    out = evaluate_recovery(xtr, f2c[ytr], ytr, xte, f2c[yte], yte, f2c, method=method, normalize="none")
    assert out["test_acc"] >= 0.99, out["test_acc"]


def test_global_clustering_and_fit_on_test():
    xtr, ytr, xte, yte, f2c = split(coarse_sep=10.0, fine_sep=8.0)
    g = evaluate_recovery(xtr, f2c[ytr], ytr, xte, f2c[yte], yte, f2c, clustering="global", normalize="none")
    t = evaluate_recovery(xtr, f2c[ytr], ytr, xte, f2c[yte], yte, f2c, fit_on="test", normalize="none")
    assert g["test_acc"] >= 0.99 and t["test_acc"] >= 0.99 and t["options"]["fit_on"] == "test"


def test_hungarian_hand_case_is_one_to_one():
    # cluster 0 holds 5 of class 7 and 4 of class 9; cluster 1 holds 6 of class 7.
    # Majority vote names both clusters 7; the best one-to-one naming is 0->9, 1->7 (10 correct vs 5).
    clusters = np.array([0] * 9 + [1] * 6)
    fine = np.array([7] * 5 + [9] * 4 + [7] * 6)
    assert hungarian_names(clusters, fine, 2, [7, 9]).tolist() == [9, 7]
    # brute force over all one-to-one namings agrees on a random table
    rng = np.random.default_rng(1)
    cl, fl = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    names = hungarian_names(cl, fl, 4, [0, 1, 2, 3])
    best = max(itertools.permutations(range(4)), key=lambda p: np.sum(np.array(p)[cl] == fl))
    assert np.sum(names[cl] == fl) == np.sum(np.array(best)[cl] == fl)


def test_naming_follows_a_permutation_of_fine_labels():
    xtr, ytr, xte, yte, f2c = split(noise=2.5)  # noisy enough that a few samples are wrong
    base = FineLabelRecovery(f2c).fit(xtr, f2c[ytr], ytr)
    p0 = base.predict(xte, f2c[yte])
    perm = np.random.default_rng(3).permutation(len(f2c))  # new id of old fine class f is perm[f]
    f2c_p = np.empty_like(f2c)
    f2c_p[perm] = f2c
    rec = FineLabelRecovery(f2c_p).fit(xtr, f2c[ytr], perm[ytr])
    p1 = rec.predict(xte, f2c[yte])
    assert np.array_equal(p1, perm[p0])
    assert np.mean(p1 == perm[yte]) == np.mean(p0 == yte)


def test_wrong_coarse_prediction_is_an_error_and_oracle_dominates():
    xtr, ytr, xte, yte, f2c = split()
    true_c = f2c[yte]
    pred_c = true_c.copy()
    wrong = np.arange(0, len(yte), 7)
    pred_c[wrong] = (true_c[wrong] + 1) % 3
    out, rec = evaluate_recovery(xtr, f2c[ytr], ytr, xte, pred_c, yte, f2c, return_model=True)
    p = rec.predict(xte, pred_c)
    assert np.all(p[wrong] != yte[wrong])
    assert np.all(f2c[p] == pred_c)  # routing decides the superclass of the answer
    assert out["oracle_test_acc"] == 1.0
    assert out["test_acc"] == pytest.approx(1 - len(wrong) / len(yte))
    assert out["coarse_test_acc"] == pytest.approx(1 - len(wrong) / len(yte))
    # on noisy data the set of correct predicted-routing samples is inside the oracle's correct set
    xtr, ytr, xte, yte, f2c = split(noise=4.0, fine_sep=3.0)
    rng = np.random.default_rng(0)
    pc = np.where(rng.random(len(yte)) < 0.2, rng.integers(0, 3, len(yte)), f2c[yte])
    rec = FineLabelRecovery(f2c).fit(xtr, f2c[ytr], ytr)
    ok_pred, ok_orc = rec.predict(xte, pc) == yte, rec.predict(xte, f2c[yte]) == yte
    assert np.all(ok_orc[ok_pred]) and ok_orc.mean() >= ok_pred.mean()


def test_report_matches_independent_computation():
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    xtr, ytr, xte, yte, f2c = split(noise=3.0, fine_sep=4.0, n_per_fine=80)
    out = evaluate_recovery(xtr, f2c[ytr], ytr, xte, f2c[yte], yte, f2c, normalize="none")
    # independent: sklearn k-means per superclass, brute-force best permutation naming, accuracy
    correct = 0
    for c in range(3):
        idx = np.flatnonzero(f2c[ytr] == c)
        cls = np.flatnonzero(f2c == c)
        lab = KMeans(len(cls), n_init=10, random_state=0).fit_predict(xtr[idx])
        correct += max(np.sum(cls[list(p)][lab] == ytr[idx]) for p in itertools.permutations(range(len(cls))))
    assert out["train_acc"] == pytest.approx(correct / len(ytr), abs=0.01)
    assert 0.6 < out["train_acc"] < 1.0  # not a trivial case
    # per-superclass train accuracies average (weighted) to the overall one
    per = out["per_superclass"]
    assert sum(p["train_acc"] * p["n_train"] for p in per) / len(ytr) == pytest.approx(out["train_acc"])
    # ARI/NMI/confusion against sklearn and a naive loop on the same predictions
    rec = FineLabelRecovery(f2c, normalize="none").fit(xtr, f2c[ytr], ytr)
    p = rec.predict(xte, f2c[yte])
    assert out["ari"] == pytest.approx(adjusted_rand_score(yte, p))
    assert out["nmi"] == pytest.approx(normalized_mutual_info_score(yte, p))
    m = np.zeros((len(f2c), len(f2c)), int)
    for a, b in zip(yte, p):
        m[a, b] += 1
    assert np.array_equal(np.array(out["confusion"]), m) and np.trace(m) / len(yte) == pytest.approx(out["test_acc"])


def test_normalisations_do_what_they_say():
    xtr, ytr, xte, yte, f2c = split()
    rec = FineLabelRecovery(f2c, normalize="center+l2").fit(xtr, f2c[ytr], ytr)
    g = rec.groups_[0]
    z = rec._transform(xtr[f2c[ytr] == 0], g)
    assert np.allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)
    rec = FineLabelRecovery(f2c, normalize="whiten", whiten_var=1.0).fit(xtr, f2c[ytr], ytr)
    z = rec._transform(xtr[f2c[ytr] == 1], rec.groups_[1])
    cov = np.cov(z.T)
    assert np.allclose(cov, np.eye(len(cov)), atol=1e-3)
    # raw-space centroids are the means of the fit samples of each cluster
    cents = rec.centroids()
    idx = np.flatnonzero(f2c[ytr] == 1)
    lab = rec.labels_[idx] - rec.labels_[idx].min()
    assert np.allclose(cents["c1"][0], xtr[idx][lab == 0].mean(0), atol=1e-4)
    assert sorted(cents["c1_fine"].tolist()) == np.flatnonzero(f2c == 1).tolist()


def test_raw_pixel_features_and_hierarchy_object():
    imgs = np.random.default_rng(0).integers(0, 256, (5, 3, 4, 4)).astype(np.uint8)
    f = flatten_pixels(torch.from_numpy(imgs))
    assert f.shape == (5, 48) and f.dtype == np.float32 and np.allclose(f[2, :16], imgs[2, 0].ravel() / 255.0)
    xtr, ytr, xte, yte, f2c = split()
    h = Hierarchy.from_mapping(f2c, [f"f{i}" for i in range(len(f2c))])
    out = evaluate_recovery(xtr, f2c[ytr], ytr, xte, None, yte, h)
    assert out["options"]["routing"] == "oracle" and out["test_acc"] == out["oracle_test_acc"]
    assert out["per_superclass"][1]["fine"] == [2, 3, 4] and out["fine_names"][0] == "f0"


def test_inferred_hierarchy_and_bad_input():
    xtr, ytr, xte, yte, f2c = split()
    out = evaluate_recovery(xtr, f2c[ytr], ytr, xte, f2c[yte], yte, None)
    assert out["test_acc"] >= 0.99
    with pytest.raises(NclabError, match="rows"):
        FineLabelRecovery(f2c).fit(xtr, f2c[ytr][:-1], ytr)
    bad = xtr.copy()
    bad[0, 0] = np.nan
    with pytest.raises(NclabError, match="NaN"):
        FineLabelRecovery(f2c).fit(bad, f2c[ytr], ytr)
    with pytest.raises(NclabError, match="appears under"):
        FineLabelRecovery().fit(xtr, np.zeros_like(ytr) + (np.arange(len(ytr)) % 2), ytr)
    unfitted = FineLabelRecovery(f2c, method="dbscan")  # __init__ only stores; fit checks
    with pytest.raises(NclabError, match="unknown"):
        unfitted.fit(xtr, f2c[ytr], ytr)
    rec = FineLabelRecovery(f2c).fit(xtr, f2c[ytr], ytr)
    with pytest.raises(NclabError, match="columns"):
        rec.predict(xte[:, :5], f2c[yte])
    with pytest.raises(NclabError, match="routing"):
        rec.predict(xte, f2c[yte] + 5)


def test_estimator_validation_names_each_problem():
    xtr, ytr, xte, yte, f2c = split()
    ctr = f2c[ytr]
    for kw, match in [({"normalize": "zscore"}, "unknown normalisation"),
                      ({"clustering": "tree"}, "unknown clustering"),
                      ({"whiten_var": 0.0}, r"whiten_var must be a number in \(0, 1\]"),
                      ({"whiten_var": 1.5}, r"whiten_var must be a number in \(0, 1\]")]:
        rec = FineLabelRecovery(f2c, **kw)  # __init__ only stores; fit checks
        with pytest.raises(NclabError, match=match):
            rec.fit(xtr, ctr, ytr)
    with pytest.raises(NclabError, match="needs a hierarchy or fine labels"):
        FineLabelRecovery().fit(xtr, ctr)
    with pytest.raises(NclabError, match=r"1 of 0\.\.6 are missing \(1\)"):
        FineLabelRecovery().fit(xtr[ytr != 1], ctr[ytr != 1], ytr[ytr != 1])  # fine class 1 missing, no hierarchy
    with pytest.raises(NclabError, match="non-empty 2-D"):
        FineLabelRecovery(f2c).fit(xtr[:, :, None], ctr, ytr)
    with pytest.raises(NclabError, match="numeric"):
        FineLabelRecovery(f2c).fit(np.full((len(ytr), 2), "a"), ctr, ytr)
    with pytest.raises(NclabError, match="fine labels must be integers"):
        FineLabelRecovery(f2c).fit(xtr, ctr, ytr + 0.5)
    with pytest.raises(NclabError, match="coarse labels contain negative"):
        FineLabelRecovery(f2c).fit(xtr, ctr - 1, ytr)
    with pytest.raises(NclabError, match="fine label 9 outside"):
        FineLabelRecovery(f2c).fit(xtr, ctr, np.where(ytr == 0, 9, ytr))
    with pytest.raises(NclabError, match="coarse label 5 outside"):
        FineLabelRecovery(f2c, clustering="global").fit(xtr, np.where(ctr == 0, 5, ctr), ytr)
    with pytest.raises(NclabError, match="superclass 1 has 2 fit samples but 3 fine classes"):
        keep = (ctr != 1) | (np.arange(len(ctr)) < np.flatnonzero(ctr == 1)[2])
        FineLabelRecovery(f2c).fit(xtr[keep], ctr[keep], ytr[keep])
    with pytest.raises(NclabError, match="predict called before fit"):
        FineLabelRecovery(f2c).predict(xte, f2c[yte])
    rec = FineLabelRecovery(f2c).fit(xtr, ctr.astype(np.float64), ytr)  # integral floats are accepted
    with pytest.raises(NclabError, match="needs routing coarse labels in predict"):
        rec.predict(xte)
    assert rec.score(xte, f2c[yte], yte) == pytest.approx(np.mean(rec.predict(xte, f2c[yte]) == yte))


def test_fit_without_coarse_or_without_fine_labels():
    """per_coarse fit with only fine labels derives the superclasses from the hierarchy (same result); a fit
    without fine labels keeps the cluster structure (labels_) under one-to-one placeholder names."""
    xtr, ytr, xte, yte, f2c = split(seed=3)
    with_coarse = FineLabelRecovery(f2c).fit(xtr, f2c[ytr], ytr)
    from_fine = FineLabelRecovery(f2c).fit(xtr, None, ytr)
    assert np.array_equal(with_coarse.fit_pred_, from_fine.fit_pred_)
    assert np.array_equal(with_coarse.predict(xte, f2c[yte]), from_fine.predict(xte, f2c[yte]))
    unnamed = FineLabelRecovery(f2c).fit(xtr, f2c[ytr])
    assert np.array_equal(unnamed.labels_, with_coarse.labels_)  # same clusters, naming aside
    # placeholder names are one-to-one within each superclass: the partition equals the named one
    for c in range(f2c.max() + 1):
        m = f2c[ytr] == c
        pairs = set(zip(unnamed.fit_pred_[m].tolist(), with_coarse.fit_pred_[m].tolist()))
        assert len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})
    with pytest.raises(NclabError, match="needs coarse labels in fit"):
        FineLabelRecovery(f2c).fit(xtr)


def test_superclass_with_a_single_fine_class_predicts_it():
    xtr, ytr, xte, yte, f2c = split(seed=4, fine_per=(2, 1, 3))
    rec = FineLabelRecovery(f2c).fit(xtr, f2c[ytr], ytr)
    only = int(np.flatnonzero(f2c == 1)[0])
    assert np.all(rec.predict(xte, np.ones(len(yte), np.int64)) == only)  # everything routed to it gets it
    assert np.mean(rec.predict(xte, f2c[yte]) == yte) >= 0.99


def test_deterministic_and_leaves_global_rng_alone():
    xtr, ytr, xte, yte, f2c = split(noise=4.0, fine_sep=3.0)
    t0, n0 = torch.get_rng_state(), np.random.get_state()[1].copy()
    a = FineLabelRecovery(f2c, seed=5).fit(xtr, f2c[ytr], ytr).predict(xte, f2c[yte])
    b = FineLabelRecovery(f2c, seed=5).fit(xtr, f2c[ytr], ytr).predict(xte, f2c[yte])
    assert np.array_equal(a, b)
    assert torch.equal(t0, torch.get_rng_state()) and np.array_equal(n0, np.random.get_state()[1])


def test_confusion_helper():
    assert confusion(np.array([0, 1, 1]), np.array([0, 0, 1]), 2).tolist() == [[1, 0], [1, 1]]


# ------------------------------------------------------------------------------------------- k-means
def _blobs(n=1500, d=32, k=6, std=4.0, seed=0):
    from sklearn.datasets import make_blobs

    x, y = make_blobs(n_samples=n, n_features=d, centers=k, cluster_std=std, random_state=seed, center_box=(-10, 10))
    return x.astype(np.float32), y


@pytest.mark.parametrize("seed", [0, 1])
def test_kmeans_objective_matches_sklearn(seed):
    from sklearn.cluster import KMeans

    x, _ = _blobs(std=6.0, seed=seed)  # overlapping blobs: local optima exist
    r = kmeans(x, 6, n_init=10, seed=seed)
    sk = KMeans(6, n_init=10, random_state=seed).fit(x)
    assert r.inertia <= sk.inertia_ * (1 + 1e-3)
    # the reported objective is the exact one of the returned labels/centres, and the result is a Lloyd
    # fixed point: labels are nearest centres and centres are the means of their points
    xd = x.astype(np.float64)
    assert r.inertia == pytest.approx(((xd - r.centers[r.labels]) ** 2).sum(), rel=1e-6)
    d = ((xd[:, None, :] - r.centers[None].astype(np.float64)) ** 2).sum(-1)
    assert np.mean(d.argmin(1) == r.labels) > 0.999
    for j in range(6):
        assert np.allclose(r.centers[j], xd[r.labels == j].mean(0), atol=1e-3)


def test_kmeans_restarts_help_and_edge_cases():
    x, y = _blobs(std=1.0, k=8)
    one = kmeans(x, 8, n_init=1, seed=3)
    ten = kmeans(x, 8, n_init=10, seed=3)
    assert ten.inertia == ten.inertias.min() and ten.inertia <= one.inertia * (1 + 1e-9)
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(y, ten.labels) == pytest.approx(1.0)
    # duplicated points: k equals the number of distinct points -> zero inertia
    pts = np.repeat(np.eye(3, dtype=np.float32), 5, axis=0)
    assert kmeans(pts, 3, n_init=3).inertia == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(NclabError):
        kmeans(pts, 20)
    with pytest.raises(NclabError):
        kmeans(np.zeros(5), 2)


# linear probe (supervised upper bound) ----------------------------------------------------------
def nuisance_mixture(n=800, seed=0):
    """2 superclasses x 2 fine classes. Inside a superclass the fine label sets x0 = ±1 (a low-variance
    direction) while an unrelated coin flip sets x1 = ±10: 2-means splits along x1 (chance-level recovery),
    a linear probe reads x0 (near perfect). Returns (x, fine, f2c)."""
    rng = np.random.default_rng(seed)
    f2c = np.array([0, 0, 1, 1])
    fine = rng.integers(0, 4, n)
    x = rng.normal(size=(n, 4)) * 0.15
    x[:, 0] += np.where(fine % 2 == 0, -1.0, 1.0)
    x[:, 1] += np.where(rng.random(n) < 0.5, -10.0, 10.0)
    x[:, 2] += f2c[fine] * 50.0
    return x.astype(np.float32), fine, f2c


def test_probe_reads_a_fine_split_that_clustering_misses():
    from nclab.finegrain.probe import linear_probe

    x, y, f2c = nuisance_mixture()
    xt, yt, _ = nuisance_mixture(seed=1)
    h = Hierarchy.from_mapping(f2c, ["a", "b", "c", "d"], spec="array")
    rec = evaluate_recovery(x, f2c[y], y, xt, f2c[yt], yt, h, normalize="none")
    probe = linear_probe(x, f2c[y], y, xt, f2c[yt], yt, h)
    assert rec["oracle_test_acc"] < 0.65  # k-means followed the nuisance coin flip
    assert probe["oracle_test_acc"] > 0.99 and probe["train_acc"] > 0.99
    assert [p["coarse"] for p in probe["per_superclass"]] == [0, 1]
    # predicted routing: a wrong coarse prediction is an error for the probe too, oracle dominates
    wrong = f2c[yt].copy()
    wrong[:100] = 1 - wrong[:100]
    p2 = linear_probe(x, f2c[y], y, xt, wrong, yt, h)
    assert p2["test_acc"] == pytest.approx(p2["oracle_test_acc"] - 100 / len(yt) * p2["oracle_test_acc"], abs=0.02)
    assert p2["test_acc"] < p2["oracle_test_acc"]
    with pytest.raises(NclabError, match="C must be > 0"):
        linear_probe(x, f2c[y], y, xt, None, yt, h, C=0)


def test_labels_must_agree_with_the_hierarchy_and_be_class_indices():
    xtr, ytr, xte, yte, f2c = split()
    ctr = f2c[ytr].copy()
    ctr[[3, 8]] = (ctr[[3, 8]] + 1) % 3  # two rows labelled with the wrong superclass
    with pytest.raises(NclabError,
                       match=r"2 of \d+ fit rows have a coarse label .* \(row 3: fine \d+ belongs to coarse"):
        FineLabelRecovery(f2c).fit(xtr, ctr, ytr)
    # ids that are not 0..K-1: a short message (not every missing id) with the remedy
    with pytest.raises(NclabError, match=r"99993 of 0\.\.99999 are missing \(2, 7, 8, 9, 10, \.\.\.\); remap") as e:
        FineLabelRecovery().fit(xtr, f2c[ytr], np.where(ytr == 2, 99999, ytr))
    assert len(str(e.value)) < 300
    with pytest.raises(NclabError, match="coarse labels must be class indices"):
        FineLabelRecovery().fit(xtr, f2c[ytr] * 3 + 3, ytr)  # coarse ids {3, 6, 9}
    # test labels outside the hierarchy, or routing labels outside it: one clear error, not a wrap-around
    for bad_fine, match in ((-1, r"test fine label -1 is outside 0\.\.6"), (7, r"test fine label 7 is outside")):
        y = yte.copy()
        y[0] = bad_fine
        with pytest.raises(NclabError, match=match):
            evaluate_recovery(xtr, f2c[ytr], ytr, xte, f2c[yte], y, f2c)
    with pytest.raises(NclabError, match="predicted coarse label 3 is outside 0..2"):
        evaluate_recovery(xtr, f2c[ytr], ytr, xte, np.full(len(yte), 3), yte, f2c)
    # global clustering checks the feature width like the per-superclass route
    rec = FineLabelRecovery(f2c, clustering="global").fit(xtr, f2c[ytr], ytr)
    with pytest.raises(NclabError, match="columns"):
        rec.predict(np.hstack([xte, xte]))


def test_fit_on_test_groups_by_true_coarse_and_routes_by_prediction():
    xtr, ytr, xte, yte, f2c = split(noise=2.0, fine_sep=4.0)
    pred = f2c[yte].copy()
    pred[pred == 2] = 0  # the network never predicts superclass 2
    t = evaluate_recovery(xtr, f2c[ytr], ytr, xte, pred, yte, f2c, fit_on="test", normalize="none")
    # hand computation: the same estimator fitted on the test rows grouped by their true superclass
    rec = FineLabelRecovery(f2c, normalize="none").fit(xte, f2c[yte], yte)
    for p in t["per_superclass"]:
        rows = f2c[yte] == p["coarse"]
        assert p["n_train"] == rows.sum()
        assert p["train_acc"] == pytest.approx(np.mean(rec.fit_pred_[rows] == yte[rows]))
    assert t["test_acc"] == pytest.approx(np.mean(rec.predict(xte, pred) == yte))
    assert t["test_acc"] <= t["oracle_test_acc"] - np.mean(f2c[yte] == 2) + 1e-12  # superclass 2's rows all wrong


def test_global_options_say_no_routing():
    xtr, ytr, xte, yte, f2c = split()
    g = evaluate_recovery(xtr, f2c[ytr], ytr, xte, f2c[yte], yte, f2c, clustering="global", whiten_var=0.9)
    assert g["options"]["routing"] == "none" and g["options"]["whiten_var"] == 0.9


def test_recovery_score_checks_the_fine_labels():
    # a (N, 1) column or a length-1 array broadcast against the predictions into a wrong accuracy
    from nclab.data.synthetic import make_hierarchical_gaussian
    from nclab.finegrain import FineLabelRecovery

    x, y, h = make_hierarchical_gaussian(2, 2, 8, n_per_class=20, fine_sep=4)
    c = h.coarse_of(y)
    r = FineLabelRecovery(h).fit(x, c, y)
    assert r.score(x, c, y) == np.mean(r.predict(x, c) == y)
    for bad, msg in ((y.reshape(-1, 1), "shape"), (y[:1], "shape"), (y + 4, "outside 0..3"), (y - 1, "outside")):
        with pytest.raises(NclabError, match=msg):
            r.score(x, c, bad)


def test_evaluate_recovery_keys_mean_what_the_docstring_says():
    """20 % wrong routings: test_acc / ari / nmi / test_acc_predicted_routing use the predicted routing,
    oracle_test_acc and per-superclass test_acc the true coarse labels, train_ari / train_nmi the fit set; all
    recomputed with scikit-learn from predictions of the fitted model."""
    from sklearn.metrics import adjusted_rand_score as ari, normalized_mutual_info_score as nmi

    xtr, ytr, xte, yte, f2c = split(seed=1, noise=3.0, fine_sep=4.0)
    true_c = f2c[yte]
    rng = np.random.default_rng(0)
    routed = true_c.copy()
    wrong = rng.random(len(yte)) < 0.2
    routed[wrong] = (routed[wrong] + rng.integers(1, 3, wrong.sum())) % 3
    out, rec = evaluate_recovery(xtr, f2c[ytr], ytr, xte, routed, yte, f2c, return_model=True, n_init=3)
    pred = rec.predict(xte, routed)
    oracle = rec.predict(xte, true_c)
    fit_pred = rec.fit_pred_
    assert np.mean(fit_pred == rec.predict(xtr, f2c[ytr])) > 0.99  # fit predictions are nearest-centroid ones
    assert out["test_acc"] == np.mean(pred == yte) and out["oracle_test_acc"] == np.mean(oracle == yte)
    assert out["test_acc"] < out["oracle_test_acc"] - 0.1
    assert out["coarse_test_acc"] == np.mean(routed == true_c)
    assert out["ari"] == pytest.approx(ari(yte, pred)) and out["nmi"] == pytest.approx(nmi(yte, pred))
    assert abs(ari(yte, pred) - ari(yte, oracle)) > 0.05 and abs(nmi(yte, pred) - nmi(yte, oracle)) > 0.05
    assert (out["train_ari"] == pytest.approx(ari(ytr, fit_pred))
            and out["train_nmi"] == pytest.approx(nmi(ytr, fit_pred)))
    assert abs(ari(ytr, fit_pred) - ari(yte, pred)) > 0.05
    for c, p in enumerate(out["per_superclass"]):
        te, trm = true_c == c, f2c[ytr] == c
        assert p["test_acc"] == np.mean(oracle[te] == yte[te])
        assert p["test_acc_predicted_routing"] == np.mean(pred[te] == yte[te])
        assert p["train_acc"] == np.mean(fit_pred[trm] == ytr[trm])
        assert p["n_test"] == te.sum() and p["n_train"] == trm.sum()
    assert any(p["test_acc"] - p["test_acc_predicted_routing"] > 0.05 for p in out["per_superclass"])


def test_center_then_l2_recovers_a_radial_fine_split():
    """Fine classes of a superclass differ along the direction of the superclass mean (50 ± 4 along it): L2
    rows around the origin erase that split, centring on the group's fit mean first keeps it (docs: center+l2 =
    directions around the group's mean). The fitted transform is (x - fit mean) / ||x - fit mean||."""
    rng = np.random.default_rng(2)
    f2c = np.array([0, 0, 1, 1])
    d = 6
    dirs = np.eye(d)[[0, 1]] * 50.0
    fine = rng.integers(0, 4, 800)
    sign = np.where(fine % 2 == 0, -1.0, 1.0)
    x = dirs[f2c[fine]] * (1 + 0.08 * sign[:, None]) + rng.normal(size=(800, d)) * 0.5
    x = x.astype(np.float32)
    tr, te = slice(0, 400), slice(400, 800)
    res = {}
    for norm in ("l2", "center+l2"):
        res[norm] = evaluate_recovery(x[tr], f2c[fine[tr]], fine[tr], x[te], f2c[fine[te]], fine[te], f2c,
                                      normalize=norm, n_init=3)["test_acc"]
    assert res["center+l2"] > 0.97 and res["l2"] < 0.75
    rec = FineLabelRecovery(f2c, normalize="center+l2", n_init=2).fit(x[tr], f2c[fine[tr]], fine[tr])
    for c in (0, 1):
        fit_mean = x[tr][f2c[fine[tr]] == c].astype(np.float64).mean(0)
        z = x[te].astype(np.float64) - fit_mean
        z /= np.linalg.norm(z, axis=1, keepdims=True)
        np.testing.assert_allclose(rec._transform(x[te], rec.groups_[c]), z, atol=1e-5)


def test_whitener_svd_route_gives_identity_covariance():
    """n < D (the SVD route): the projected rows have identity covariance (ddof 1) on the kept axes, and the
    kept axes are the top principal axes holding keep_var of the variance (numpy SVD by hand)."""
    from nclab.finegrain.whiten import pca_whitener

    rng = np.random.default_rng(6)
    n, D = 30, 80
    x = (rng.normal(size=(n, D)) * np.linspace(0.2, 5.0, D)).astype(np.float64) + 7.0
    xc = x - x.mean(0)
    s = np.linalg.svd(xc, compute_uv=False)
    var = s**2 / (n - 1)
    for keep_var in (1.0, 0.8):
        P = pca_whitener(x, keep_var)
        kept = int(np.argmax(np.cumsum(var) / var.sum() >= keep_var - 1e-12)) + 1
        assert P.shape == (D, min(kept, n - 1))
        z = xc @ P.astype(np.float64)
        np.testing.assert_allclose(z.T @ z / (n - 1), np.eye(P.shape[1]), atol=1e-4)
    # and the covariance route (n > D) for comparison
    y = rng.normal(size=(200, 5)) * np.array([1, 2, 3, 4, 5.0])
    P = pca_whitener(y)
    z = (y - y.mean(0)) @ P.astype(np.float64)
    np.testing.assert_allclose(z.T @ z / 199, np.eye(5), atol=1e-4)


def test_greedy_kmeans_plus_plus_finds_well_separated_blobs_with_one_start():
    """Greedy k-means++ keeps, at each step, the candidate that lowers the potential most: with a single start
    it seeds one centre per blob for 8 well-separated blobs on almost every seed (as scikit-learn's does)."""
    from sklearn.cluster import KMeans
    from sklearn.datasets import make_blobs
    from sklearn.metrics import adjusted_rand_score

    from nclab.finegrain.kmeans import kmeans

    x, y = make_blobs(n_samples=1500, n_features=32, centers=8, cluster_std=1.0, random_state=0, center_box=(-10, 10))
    x = x.astype(np.float32)
    ours = sum(adjusted_rand_score(y, kmeans(x, 8, n_init=1, seed=s).labels) > 0.999 for s in range(20))
    sk = sum(adjusted_rand_score(y, KMeans(8, n_init=1, random_state=s).fit(x).labels_) > 0.999 for s in range(20))
    assert sk >= 18 and ours >= 18


def test_empty_cluster_is_reseeded_at_the_farthest_point(monkeypatch):
    """An initial centre far from every point gets no sample; after one Lloyd step it must sit on the point
    farthest from its assigned centre (hand computation), the other centres on their clusters' means."""
    km = importlib.import_module("nclab.finegrain.kmeans")

    rng = np.random.default_rng(7)
    x = np.concatenate([rng.normal(size=(40, 2)) * 0.3, rng.normal(size=(40, 2)) * 0.3 + [10.0, 0.0],
                        [[0.0, 4.0]]]).astype(np.float32)  # the last row: far from its blob's centre
    i0, i1 = 0, 40

    def fake_init(xc, x2, k, r, gen):
        c = torch.stack([xc[i0], xc[i1], xc[i0] + 1e4])
        return c[None].repeat(r, 1, 1)

    monkeypatch.setattr(km, "_kmeanspp", fake_init)
    res = km.kmeans(x, 3, n_init=1, max_iter=1)
    xd = x.astype(np.float64)
    C0 = np.stack([xd[i0], xd[i1], xd[i0] + 1e4])
    d = ((xd[:, None] - C0[None]) ** 2).sum(-1)
    lab, mind = d.argmin(1), d.min(1)
    assert not np.any(lab == 2)
    far = int(np.argmax(mind))
    assert far == 80
    expect = np.stack([xd[lab == 0].mean(0), xd[lab == 1].mean(0), xd[far]])
    np.testing.assert_allclose(res.centers, expect, atol=1e-4)


@pytest.mark.parametrize("chunk", [1 << 24, 1])
def test_cluster_sums_equal_naive_per_cluster_sums(chunk, monkeypatch):
    """Both routes of _cluster_sums (one-hot matmul; per-restart scatter-add for large problems, forced here by a
    tiny _CHUNK) against per-cluster sums written out in NumPy, with different labels per restart."""
    km = importlib.import_module("nclab.finegrain.kmeans")

    monkeypatch.setattr(km, "_CHUNK", chunk)
    rng = np.random.default_rng(11)
    x = rng.normal(size=(60, 3)).astype(np.float32)
    lab = rng.integers(0, 5, size=(3, 60))
    lab[1, :10] = 4  # restarts differ
    sums, cnt = km._cluster_sums(torch.from_numpy(x), torch.from_numpy(lab), 5)
    for a in range(3):
        for j in range(5):
            np.testing.assert_allclose(sums[a, j].numpy(), x[lab[a] == j].astype(np.float64).sum(0), atol=1e-5)
            assert cnt[a, j].item() == np.sum(lab[a] == j)
    # and k-means through that route still reaches the blobs
    from sklearn.datasets import make_blobs
    from sklearn.metrics import adjusted_rand_score

    xb, yb = make_blobs(n_samples=300, n_features=4, centers=3, cluster_std=0.5, random_state=1)
    r = km.kmeans(xb.astype(np.float32), 3, n_init=3, seed=0)
    assert adjusted_rand_score(yb, r.labels) == pytest.approx(1.0)


def test_recovery_seed_changes_single_start_clusterings():
    """On structureless data (one Gaussian per superclass, 3 fine labels at random) a single k-means start depends
    on the seed: different seeds give different clusterings, one seed always the same one."""
    rng = np.random.default_rng(12)
    f2c = np.array([0, 0, 0, 1, 1, 1])
    fine = rng.integers(0, 6, 300)
    x = (rng.normal(size=(300, 5)) + 30.0 * f2c[fine][:, None]).astype(np.float32)
    fits = {s: FineLabelRecovery(f2c, n_init=1, seed=s, normalize="none").fit(x, f2c[fine], fine).labels_
            for s in range(5)}
    again = FineLabelRecovery(f2c, n_init=1, seed=3, normalize="none").fit(x, f2c[fine], fine).labels_
    assert np.array_equal(again, fits[3])

    def partition(labels):  # cluster ids are arbitrary: compare the partitions
        return frozenset(frozenset(np.flatnonzero(labels == j).tolist()) for j in np.unique(labels))

    assert len({partition(v) for v in fits.values()}) >= 2


def test_train_subset_is_a_seeded_random_subset():
    from nclab.finegrain.pipeline import train_subset

    a = train_subset(1000, 100, 0)
    assert len(a) == 100 and len(np.unique(a)) == 100 and np.all(np.diff(a) > 0) and 0 <= a.min() and a.max() < 1000
    assert not np.array_equal(a, np.arange(100))  # not the first rows
    assert a.max() > 500  # spread over the whole split (P(all < 500) ~ 2**-100)
    assert np.array_equal(train_subset(1000, 100, 0), a) and not np.array_equal(train_subset(1000, 100, 1), a)
    assert train_subset(1000, None, 0) is None and train_subset(50, 100, 0) is None


def test_recovery_callback_passes_options_and_honours_log_points(tmp_path):
    from nclab.finegrain.callback import RecoveryCallback
    from nclab.train import Trainer, load_config

    class Cfg:
        cfg = load_config({"optim": {"epochs": 100}})

    cb = RecoveryCallback(log_points=8, max_train=100, seed=3, n_init=2, whiten_var=0.5)
    # log_epochs(100, 8) = round(100 ** (i / 7)), i = 0..7 (by hand)
    assert [e for e in range(1, 101) if cb.should_log(Cfg, e)] == [1, 2, 4, 7, 14, 27, 52, 100]
    tr = Trainer(load_config("tiny", ["optim.epochs=1", "data.labels=coarse"]), tmp_path / "r")
    logs = cb.compute(tr)
    assert cb.last["options"]["whiten_var"] == 0.5 and cb.last["options"]["n_init"] == 2
    # the same as evaluate_recovery on the subset's features with whiten_var=0.5
    from nclab.finegrain.features import trainer_features
    from nclab.finegrain.pipeline import train_subset

    idx = train_subset(len(tr.dataset.train), 100, 3)
    ftr, _ = trainer_features(tr, "train", idx=idx)
    fte, pte = trainer_features(tr, "test")
    h = tr.hierarchy
    ytr, yte = tr.dataset.train.y.numpy()[idx], tr.dataset.test.y.numpy()
    ref = evaluate_recovery(ftr, h.coarse_of(ytr), ytr, fte, pte, yte, h, seed=3, n_init=2, whiten_var=0.5)
    assert logs["recovery.test_acc"] == ref["test_acc"] and logs["recovery.train_acc"] == ref["train_acc"]


def test_split_run_pseudo_recovery_routes_by_the_nets_prediction(tmp_path):
    """kind "split": pseudo_recovery clusters the pseudo classes inside each true class and routes test rows by
    the true class of the net's *predicted* pseudo class (oracle_test_acc: by the true class). An untrained net
    predicts badly, so the two differ; both recomputed with evaluate_recovery on features extracted here."""
    from nclab.finegrain.features import trainer_features
    from nclab.finegrain.pipeline import recover_trainer
    from nclab.train import Trainer, load_config

    tr = Trainer(load_config("tiny", ["data.hierarchy=split:2", "data.labels=fine"]), tmp_path / "r")
    rep = recover_trainer(tr, n_init=2)
    assert rep["kind"] == "split"
    h = tr.hierarchy  # fine = pseudo classes, coarse = true classes
    ftr, _ = trainer_features(tr, "train")
    fte, pte = trainer_features(tr, "test")
    ps_tr, ps_te = tr.train_targets("train").numpy(), tr.train_targets("test").numpy()
    ref = evaluate_recovery(ftr, h.coarse_of(ps_tr), ps_tr, fte, h.fine_to_coarse[pte], ps_te, h, n_init=2)
    for k in ("train_acc", "test_acc", "oracle_test_acc", "ari", "nmi"):
        assert rep["pseudo_recovery"][k] == pytest.approx(ref[k]), k
    assert rep["pseudo_recovery"]["test_acc"] < rep["pseudo_recovery"]["oracle_test_acc"] - 0.1
    assert rep["true_class_test_acc"] == pytest.approx(np.mean(h.fine_to_coarse[pte] == tr.dataset.test.y.numpy()))
