"""Gaps found by a mutation audit: each test checks a documented behaviour against an independent computation
(the naive NumPy reference of test_collapse.py, scikit-learn, a hand computation or a closed form)."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest
import torch

from nclab.collapse import ClassStats, compute_metrics, hierarchy_metrics_from_arrays, metrics_from_arrays
from nclab.data.hierarchy import Hierarchy
from nclab.finegrain.evaluate import evaluate_recovery
from nclab.finegrain.recovery import FineLabelRecovery
from test_collapse import assert_close, gaussian_data, naive
from test_finegrain_recovery import split


# ================================================================================ collapse metrics
def test_weight_metrics_with_an_absent_class_follow_the_documented_rows():
    """docs/metrics.md: the *_weights metrics use every row of W (K_W rows, 1/(K_W - 1) in maxangle), while
    self_duality compares the rows of the *present* classes with the centred means. Class 2 of 6 (not the last
    one, so a prefix of W's rows is not the present rows) has no sample."""
    H, y = gaussian_data(seed=21, N=500, D=9, K=6, offset=1.5)
    y = y.copy()
    y[y == 2] = 4
    assert not np.any(y == 2)
    rng = np.random.default_rng(8)
    W, b = rng.normal(size=(6, 9)), rng.normal(size=6)
    W[2] *= 5.0  # the absent class's row differs visibly from the others (norm, angles)
    ref = naive(H, y, 6, W, b)
    for scatter in (True, False):
        got = metrics_from_arrays(H, y, W, b, scatter=scatter, batch_size=128)
        assert got["n_classes"] == 5
        assert_close(got, ref)
    # the reference really distinguishes the two conventions (else this test could not tell them apart)
    present = [0, 1, 3, 4, 5]
    Wp = W[present] / np.linalg.norm(W[present], axis=1, keepdims=True)
    cos = (Wp @ Wp.T)[np.triu_indices(5, 1)]
    assert abs(np.mean(np.abs(cos + 1 / 4)) - ref["maxangle_weights"]) > 1e-3  # present rows only: another value
    Mc = np.stack([H[y == k].mean(0) for k in present]) - H.mean(0)
    prefix = W[:5]
    wrong = np.sum((prefix / np.linalg.norm(prefix) - Mc / np.linalg.norm(Mc)) ** 2)
    assert abs(wrong - ref["self_duality"]) > 1e-3


@pytest.mark.parametrize("fused", [True, False])
def test_classifier_and_ncc_accuracy_are_against_the_labels(fused, monkeypatch):
    """ncc_acc = mean(nearest class mean == y), classifier_acc = mean(argmax(W h + b) == y), on overlapping
    classes where the nearest-centre rule and the classifier are often wrong and disagree."""
    from nclab.collapse import second_pass

    monkeypatch.setattr(second_pass, "FUSED_COLUMNS", 10_000 if fused else 0)
    H, y = gaussian_data(seed=31, N=1500, D=10, K=5, offset=2.0, sep=0.7)
    mu = np.stack([H[y == k].mean(0) for k in range(5)])
    W = mu - H.mean(0) + 0.3 * np.random.default_rng(3).normal(size=(5, 10))  # a noisy, imperfect classifier
    b = np.random.default_rng(4).normal(size=5)
    ncc = np.argmin(((H[:, None, :] - mu[None]) ** 2).sum(-1), 1)
    pred = np.argmax(H @ W.T + b, 1)
    ref_ncc, ref_clf = np.mean(ncc == y), np.mean(pred == y)
    assert 0.3 < ref_ncc < 0.95 and 0.3 < ref_clf < 0.95 and abs(np.mean(pred == ncc) - ref_clf) > 0.05
    for scatter in (True, False):
        got = metrics_from_arrays(H, y, W, b, scatter=scatter, batch_size=256)
        assert got["ncc_acc"] == ref_ncc and got["classifier_acc"] == ref_clf
        assert got["ncc_mismatch"] == np.mean(pred != ncc)


def test_rank_rtol_drops_a_residue_direction_of_the_means():
    """Means in a 2-D plane up to a 1e-9 residue in a third direction: numpy's default rank cut keeps the residue
    (Σ_B† ~ 1e18 there, nc1 explodes); rank_rtol=1e-6 drops it and nc1 equals the naive pinv with a rank-2 Σ_B."""
    rng = np.random.default_rng(5)
    K, D, n = 4, 6, 60
    M = np.zeros((K, D))
    M[:, :2] = rng.normal(size=(K, 2)) * 3.0
    M[:, 2] = np.array([1.0, -1.0, 0.5, -0.5]) * 1e-9  # residue of an imperfect solution
    y = np.repeat(np.arange(K), n)
    E = rng.normal(size=(K * n, D))
    for k in range(K):  # zero-mean noise per class: the class means are exactly M
        E[y == k] -= E[y == k].mean(0)
    H = M[y] + E
    ref = naive(H, y, K)["nc1"]  # pinv(Σ_B, rtol=1e-10) keeps the two genuine directions only
    Sw = (E.T @ E) / len(y)
    Mc = M - M.mean(0)
    U, s, Vt = np.linalg.svd(Mc, full_matrices=False)
    hand = sum(Vt[j] @ Sw @ Vt[j] / s[j] ** 2 for j in range(2))  # tr(Σ_W Σ_B†)/K on the rank-2 span
    assert ref == pytest.approx(hand, rel=1e-6) and 0 < ref < 10
    for scatter in (True, False):
        default = metrics_from_arrays(H, y, scatter=scatter)["nc1"]
        assert default > 1e6 * ref  # the residue direction is kept by the default cut
        got = metrics_from_arrays(H, y, scatter=scatter, rank_rtol=1e-6)["nc1"]
        assert got == pytest.approx(ref, rel=1e-6)
    stats = ClassStats(K).update(H, y)
    assert compute_metrics(stats, rank_rtol=1e-6)["nc1"] == pytest.approx(ref, rel=1e-6)


def test_hierarchy_metrics_reject_a_non_finite_bias_of_either_view():
    """docs/metrics.md: NaN/inf in W or b raise NclabError, also for hierarchy_metrics on statistics alone (no
    second pass), whichever view the classifier belongs to."""
    from nclab.collapse import hierarchy_metrics
    from nclab.utils.errors import NclabError

    h = Hierarchy([0, 0, 1, 1, 1, 2], [f"f{i}" for i in range(6)], ["a", "b", "c"])
    H, y = gaussian_data(seed=16, N=300, D=5, K=6)
    stats = ClassStats(6, groups=h.fine_to_coarse).update(H, y)
    for k in (6, 3):
        W = np.random.default_rng(k).normal(size=(k, 5))
        bn = np.zeros(k)
        bn[1] = np.nan
        with pytest.raises(NclabError, match="b contains NaN or inf"):
            hierarchy_metrics(stats, h, W, bn)
        view = "fine" if k == 6 else "coarse"
        labels = y if k == 6 else h.coarse_of(y)
        assert_close(hierarchy_metrics(stats, h, W, np.zeros(k))[view],
                     {key: v for key, v in naive(H, labels, k, W).items() if key != "ncc_mismatch"})


def test_measure_with_a_cache_that_overflows_recomputes_every_batch():
    """max_cache_bytes between one batch and all batches: the second pass must still see every sample (same
    numbers as max_cache_bytes=0 and as the naive reference on all features)."""
    from nclab.collapse.callback import measure
    from test_collapse_callback import FakeTrainer, _collect

    tr = FakeTrainer()
    batches = tr.eval_loader("train")  # 5 batches (50, 50, 50, 50, 40) of 16 float32 features: 3200 B each
    fine = tr.dataset.train.y
    args = dict(hierarchy=tr.hierarchy, fine_labels=fine)
    part = measure(tr.model, batches, max_cache_bytes=5000, **args)
    fresh = measure(tr.model, batches, max_cache_bytes=0, **args)
    H = _collect(tr, "train").numpy()
    assert H.shape == (240, 16)
    W = tr.model.classifier.weight.detach().double().numpy()
    b = tr.model.classifier.bias.detach().double().numpy()
    ref = naive(H, tr.hierarchy.coarse_of(fine.numpy()), 3, W, b)
    for res in (part, fresh):
        assert_close(res["coarse"], ref, rtol=1e-6)
        assert res["coarse"]["n_samples"] == 240
    for key, val in fresh["coarse"].items():
        assert part["coarse"][key] == pytest.approx(val, rel=1e-12, nan_ok=True), key


def test_log_epochs_are_geometrically_spaced():
    from nclab.train.callbacks import log_epochs

    # round(1000 ** (i / 9)) for i = 0..9, by hand: 1, 1.99, 4.64, 10, 21.5, 46.4, 100, 215, 464, 1000
    assert log_epochs(1000, 10) == [1, 2, 5, 10, 22, 46, 100, 215, 464, 1000]
    # round(100 ** (i / 7)): 1, 1.93, 3.73, 7.20, 13.9, 26.8, 51.8, 100
    assert log_epochs(100, 8) == [1, 2, 4, 7, 14, 27, 52, 100]


# ------------------------------------------------------------------------------------------ metrics CLI
def _save(tmp_path, **arrays):
    for name, arr in arrays.items():
        np.save(tmp_path / f"{name}.npy", arr)
    return {name: str(tmp_path / f"{name}.npy") for name in arrays}


def test_cli_metrics_uses_the_bias(tmp_path, capsys):
    from nclab.cli import main

    H, y = gaussian_data(seed=14, N=400, D=6, K=4, sep=1.0)
    rng = np.random.default_rng(9)
    W, b = rng.normal(size=(4, 6)), np.array([3.0, 0.0, -3.0, 0.0])
    ref = naive(H, y, 4, W, b)
    assert abs(ref["ncc_mismatch"] - naive(H, y, 4, W)["ncc_mismatch"]) > 0.1  # the bias matters here
    f = _save(tmp_path, H=H, y=y, W=W, b=b)
    assert main(["metrics", "--features", f["H"], "--labels", f["y"], "--weights", f["W"], "--bias", f["b"],
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert_close(out, ref)
    assert out["ncc_mismatch"] == ref["ncc_mismatch"]
    assert out["classifier_acc"] == np.mean(np.argmax(H @ W.T + b, 1) == y)


def test_cli_metrics_with_a_hierarchy_and_fine_classifier(tmp_path, capsys):
    from nclab.cli import main

    h = Hierarchy([0, 0, 1, 1, 1, 2], [f"f{i}" for i in range(6)], ["a", "b", "c"])
    H, y = gaussian_data(seed=15, N=500, D=7, K=6, sep=1.5)
    rng = np.random.default_rng(10)
    W, b = rng.normal(size=(6, 7)), rng.normal(size=6) * 2
    f = _save(tmp_path, H=H, y=y, W=W, b=b)
    (tmp_path / "h.json").write_text(json.dumps(h.to_dict()))
    assert main(["metrics", "--features", f["H"], "--labels", f["y"], "--weights", f["W"], "--bias", f["b"],
                 "--hierarchy", str(tmp_path / "h.json"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    api = hierarchy_metrics_from_arrays(H, y, h, W, b)
    assert set(out) == set(api)
    for view in api:
        assert set(out[view]) == set(api[view]), view
        for key, val in api[view].items():
            if np.isnan(val):
                assert out[view][key] is None, (view, key)  # JSON null
            else:
                assert out[view][key] == pytest.approx(val, rel=1e-12), (view, key)
    for key in ("self_duality", "maxangle_weights", "etf_error_weights", "ncc_mismatch", "classifier_acc"):
        assert key in out["fine"], key
    assert_close(out["fine"], naive(H, y, 6, W, b))  # W has fine rows: fine view gets the weight metrics
    assert_close(out["coarse"], naive(H, h.coarse_of(y), 3))
    assert "self_duality" not in out["coarse"]


# ======================================================================================= recovery
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


def test_recover_cli_passes_normalize_and_fit_on(tmp_path, capsys):
    from nclab.cli import main

    xtr, ytr, xte, yte, f2c = split(seed=2, noise=3.0, fine_sep=4.0)
    pred = f2c[yte].copy()
    pred[::7] = (pred[::7] + 1) % 3
    f = _save(tmp_path, xtr=xtr, ctr=f2c[ytr], ytr=ytr, xte=xte, pred=pred, yte=yte)
    base = ["recover", "--features-train", f["xtr"], "--coarse-train", f["ctr"], "--fine-train", f["ytr"],
            "--features-test", f["xte"], "--coarse-pred", f["pred"], "--fine-test", f["yte"], "--json", "--confusion"]
    default = evaluate_recovery(xtr, f2c[ytr], ytr, xte, pred, yte)
    for extra, kw in ((["--normalize", "none"], {"normalize": "none"}), (["--fit-on", "test"], {"fit_on": "test"})):
        assert main(base + extra) == 0
        out = json.loads(capsys.readouterr().out)
        ref = evaluate_recovery(xtr, f2c[ytr], ytr, xte, pred, yte, **kw)
        for k in ("test_acc", "oracle_test_acc", "train_acc", "ari", "nmi", "train_ari", "train_nmi"):
            assert out[k] == pytest.approx(ref[k]), (extra, k)
        assert out["confusion"] == ref["confusion"]
        for k, v in kw.items():
            assert out["options"][k] == v
        assert any(ref[k] != default[k] for k in ("train_acc", "train_ari", "test_acc"))  # the option matters


# ------------------------------------------------------------------------------------------ k-means
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


# ------------------------------------------------------------------------------------------ options
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


@pytest.mark.filterwarnings("ignore:Graph is not fully connected")  # well-separated fine classes: expected
def test_gmm_covariance_type_and_spectral_neighbours_reach_sklearn(monkeypatch):
    import sklearn.cluster

    # docs/recovery.md: gmm uses full covariances with >= 10 k D points, diagonal ones otherwise
    # (about 60 train rows per fine class: >= 10 D for D = 4, not for D = 16)
    types = set()
    for dim in (4, 16):
        xtr, ytr, _, _, f2c = split(seed=3, n_per_fine=120, dim=dim)
        rec = FineLabelRecovery(f2c, method="gmm", normalize="none", n_init=2).fit(xtr, f2c[ytr], ytr)
        for c, g in rec.groups_.items():
            k, n = len(g.fine), int(np.sum(f2c[ytr] == c))
            assert g.model.covariance_type == ("full" if n >= 10 * k * dim else "diag")
            types.add(g.model.covariance_type)
    assert types == {"full", "diag"}

    seen = []
    real = sklearn.cluster.SpectralClustering

    def recording(*a, **kw):
        seen.append(kw.get("n_neighbors"))
        return real(*a, **kw)

    monkeypatch.setattr(sklearn.cluster, "SpectralClustering", recording)
    FineLabelRecovery(f2c, method="spectral", n_neighbors=7).fit(xtr, f2c[ytr], ytr)
    assert seen == [7, 7, 7]


def test_probe_standardises_with_the_superclass_statistics():
    """linear_probe against scikit-learn's LogisticRegression(C=0.1) on features standardised with each
    superclass's own train mean and std (docstring). The fine split of superclass 0 lives in a feature whose
    spread over the whole train set is ~1000x larger (superclass 1 uses it): standardising with the all-train
    std would shrink it below the regularisation."""
    from sklearn.linear_model import LogisticRegression

    from nclab.finegrain.evaluate import as_hierarchy
    from nclab.finegrain.probe import linear_probe

    rng = np.random.default_rng(13)
    f2c = np.array([0, 0, 1, 1])
    fine = rng.integers(0, 4, 600)
    x = rng.normal(size=(600, 3)) * 0.03
    s = np.where(fine % 2 == 0, -1.0, 1.0)
    x[:, 0] += np.where(f2c[fine] == 0, 0.1 * s, 100.0 * s)
    x[:, 1] += 20.0 * f2c[fine]
    tr, te = slice(0, 400), slice(400, 600)
    out = linear_probe(x[tr], f2c[fine[tr]], fine[tr], x[te], None, fine[te], as_hierarchy(f2c))
    for c in (0, 1):
        m, mt = f2c[fine[tr]] == c, f2c[fine[te]] == c
        xs = x[tr][m]
        mu, sd = xs.mean(0), xs.std(0)
        clf = LogisticRegression(C=0.1, max_iter=1000).fit((xs - mu) / sd, fine[tr][m])
        ref = np.mean(clf.predict((x[te][mt] - mu) / sd) == fine[te][mt])
        assert out["per_superclass"][c]["test_acc"] == pytest.approx(ref)
        assert ref > 0.95


# ------------------------------------------------------------------------------------------ callback
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
