"""Fine-label recovery on data whose answer is known (hierarchical Gaussian mixtures)."""

from __future__ import annotations

import itertools

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
