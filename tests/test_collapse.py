"""NC metrics engine: closed forms, invariances, streaming/merging, a naive float64 reference, bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from nclab.collapse import (
    ClassStats,
    SecondPass,
    compute_metrics,
    etf_error,
    etf_target,
    fine_within_coarse,
    frame_error,
    hierarchy_metrics_from_arrays,
    metrics_from_arrays,
    of_error,
)
from nclab.data.hierarchy import Hierarchy
from nclab.utils.errors import NclabError
from helpers_cli import save_arrays as _save


# ------------------------------------------------------------------------------------------------
# naive reference, written directly from the formulas in docs/metrics.md (full D x D pinv, loops)
def naive(H, y, K, W=None, b=None):
    H = np.asarray(H, np.float64)
    N, D = H.shape
    ks = [k for k in range(K) if np.any(y == k)]
    mu = np.stack([H[y == k].mean(0) for k in ks])
    Kp = len(ks)
    mG = H.mean(0)
    Mc = mu - mG
    lab = {k: i for i, k in enumerate(ks)}
    R = H - mu[[lab[v] for v in y]]
    Sw = sum(np.outer(r, r) for r in R) / N
    Sb = sum(np.outer(m, m) for m in Mc) / Kp
    out = {
        "nc1": np.trace(Sw @ np.linalg.pinv(Sb, rtol=1e-10)) / Kp,
        "nc1_quotient": np.trace(Sw) / np.trace(Sb),
        "trace_within": np.trace(Sw),
        "trace_between": np.trace(Sb),
    }
    var = [np.mean(np.sum((H[y == k] - mu[lab[k]]) ** 2, 1)) for k in ks]
    pairs = [(i, j) for i in range(Kp) for j in range(i + 1, Kp)]
    out["cdnv"] = np.mean([(var[i] + var[j]) / (2 * np.sum((mu[i] - mu[j]) ** 2)) for i, j in pairs])

    def nc2(V, suffix):
        norms = np.array([np.sqrt(np.sum(v * v)) for v in V])
        out["equinorm_" + suffix] = norms.std() / norms.mean()
        cos = np.array([V[i] @ V[j] / (norms[i] * norms[j]) for i in range(len(V)) for j in range(i + 1, len(V))])
        out["equiangular_" + suffix] = cos.std()
        out["maxangle_" + suffix] = np.mean(np.abs(cos + 1 / (len(V) - 1)))
        G = V @ V.T
        k = len(V)
        out["etf_error_" + suffix] = np.linalg.norm(G / np.linalg.norm(G) - (np.eye(k) - 1 / k) / np.sqrt(k - 1))

    nc2(Mc, "means")
    G = mu @ mu.T
    out["of_error_means"] = np.linalg.norm(G / np.linalg.norm(G) - np.eye(Kp) / np.sqrt(Kp))
    if W is not None:
        nc2(W, "weights")
        G = W @ W.T
        out["of_error_weights"] = np.linalg.norm(G / np.linalg.norm(G) - np.eye(K) / np.sqrt(K))
        Wp = W[ks]
        out["self_duality"] = np.sum((Wp / np.linalg.norm(Wp) - Mc / np.linalg.norm(Mc)) ** 2)
        scores = H @ W.T + (0 if b is None else b)
        dist = ((H[:, None, :] - mu[None]) ** 2).sum(-1)
        out["ncc_mismatch"] = np.mean(np.argmax(scores, 1) != np.array(ks)[np.argmin(dist, 1)])
    return out


def gaussian_data(seed=0, N=600, D=12, K=7, offset=0.0, noise=1.0, sep=3.0):
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(K, D)) * sep + offset
    p = rng.dirichlet(np.ones(K) * 3)  # unequal class sizes
    y = rng.choice(K, size=N, p=p)
    y[:K] = np.arange(K)  # every class present
    H = mu[y] + noise * rng.normal(size=(N, D)) * rng.uniform(0.5, 2, size=K)[y, None]
    return H, y


def assert_close(got: dict, ref: dict, rtol=1e-8):
    for k, v in ref.items():
        assert k in got, k
        assert got[k] == pytest.approx(v, rel=rtol, abs=1e-14), (k, got[k], v)


def etf_means(K, D, seed=0, scale=2.5, offset=None):
    """Rows of a simplex ETF (K points in D >= K dims), randomly rotated, optionally translated."""
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.normal(size=(D, K)))
    M = scale * (np.eye(K) - 1.0 / K) @ U.T
    if offset is not None:
        M = M + offset
    return M


# ------------------------------------------------------------------------------------------------
@pytest.fixture(params=["fused", "float32"])
def classifier_route(request, monkeypatch):
    """Run a test with W fused into the float64 residual product (small K) and on the float32 route."""
    from nclab.collapse import second_pass

    monkeypatch.setattr(second_pass, "FUSED_COLUMNS", 10_000 if request.param == "fused" else 0)
    return request.param


@pytest.mark.parametrize("K,D", [(7, 12), (10, 4)])  # D < K: Σ_B has rank D, not K-1
def test_every_metric_matches_naive_reference(K, D, classifier_route):
    H, y = gaussian_data(seed=K, D=D, K=K, offset=0.7)
    rng = np.random.default_rng(1)
    W, b = rng.normal(size=(K, D)), rng.normal(size=K)
    ref = naive(H, y, K, W, b)
    for scatter in (True, False):  # full D x D scatter, and the projected two-pass route
        got = metrics_from_arrays(H, y, W, b, scatter=scatter, batch_size=97)
        assert_close(got, ref)
        assert got["ncc_mismatch"] == ref["ncc_mismatch"]  # a fraction of samples: exact
        assert 0 < got["ncc_mismatch"] < 1 and got["nc1"] > 0


def test_default_chunked_projected_route_matches_naive_reference_with_offset(classifier_route):
    # metrics_from_arrays' own choices (D > 2K: no D x D scatter, cache-sized chunks, residual-based second
    # pass) on float32 features far from the origin, as a network gives them
    H, y = gaussian_data(seed=4, N=5000, D=96, K=6, offset=50.0)
    H = H.astype(np.float32)
    rng = np.random.default_rng(2)
    W, b = rng.normal(size=(6, 96)), rng.normal(size=6) * 10
    ref = naive(H.astype(np.float64), y, 6, W, b)
    for bs in (None, 333, 5000):
        got = metrics_from_arrays(H, y, W, b, batch_size=bs)
        assert_close(got, ref)
        assert got["ncc_mismatch"] == ref["ncc_mismatch"]
    assert 0 < ref["ncc_mismatch"] < 1


def test_second_pass_reads_features_without_changing_them_in_any_dtype():
    # the labelled second pass forms float64 residuals straight from the input dtype (no float64 copy of the
    # batch): the caller's array must stay untouched, and float16 / integer features must give the metrics of
    # their exact float64 values
    H, y = gaussian_data(seed=11, N=600, D=20, K=4, offset=3.0)
    rng = np.random.default_rng(4)
    W, b = rng.normal(size=(4, 20)), rng.normal(size=4)
    for dtype in (np.float64, np.float16, np.int32):
        Hd = (H * 4).astype(dtype)
        before = Hd.copy()
        ref = naive(Hd.astype(np.float64), y, 4, W, b)
        got = metrics_from_arrays(torch.from_numpy(Hd), y, W, b, scatter=False, batch_size=128)
        np.testing.assert_array_equal(Hd, before)
        assert_close(got, ref)
        assert got["ncc_mismatch"] == ref["ncc_mismatch"]


def test_float32_classifier_scores_fall_back_to_float64_on_near_ties(classifier_route):
    # two classifier rows 1e-7 apart: float32 scores cannot order them, float64 can; the decisions (hence
    # classifier_acc and ncc_mismatch) must equal the float64 reference exactly — both on the float32 route
    # (large K) and with W fused into the float64 residual product (small K)
    fused = classifier_route == "fused"
    H, y = gaussian_data(seed=6, N=3000, D=64, K=4, offset=5.0)
    H = H.astype(np.float32)
    rng = np.random.default_rng(3)
    W = rng.normal(size=(4, 64))
    W[0] = H.mean(0) / np.linalg.norm(H.mean(0)) * 8  # along the common offset: rows 0 and 1 win often
    W[1] = W[0] + 1e-7 * rng.normal(size=64)
    b = np.zeros(4)
    ref = naive(H.astype(np.float64), y, 4, W, b)
    H64 = H.astype(np.float64)
    ref_pred = np.argmax(H64 @ W.T + b, 1)
    stats = ClassStats(4, scatter=False, traces=False).update(H, y)
    sp = SecondPass(stats, W, b)
    for i in range(0, len(y), 500):
        sp.update(H[i : i + 500], y[i : i + 500])
    got = compute_metrics(stats, W, b, second=sp)
    assert sp._fused_w == fused
    assert sp.rescored == 0 if fused else sp.rescored > 100  # near-tie rows really went through the fallback
    assert got["ncc_mismatch"] == ref["ncc_mismatch"]
    assert got["classifier_acc"] == np.mean(ref_pred == y)
    assert np.sum(ref_pred == 1) > 0 and np.sum(ref_pred == 0) > 0  # both tied classes are really chosen


def test_one_large_batch_in_chunks_keeps_each_rows_decision(monkeypatch):
    # a batch is scored in float32 at once, then worked through in cache-sized float64 chunks: the float32
    # decisions kept (sure rows) and those redone in float64 (near ties: rows 0 and 1 of W are 1e-7 apart) must
    # be matched to the right rows of the right chunk. The float64 reference decides every row directly.
    from nclab.collapse import second_pass

    monkeypatch.setattr(second_pass, "FUSED_COLUMNS", 0)  # the float32 route
    monkeypatch.setattr(second_pass, "CHUNK_BYTES", 1)  # chunks of 256 rows: 12 for 3,000 rows
    H, y = gaussian_data(seed=11, N=3000, D=64, K=4, offset=0.0)
    H = H.astype(np.float32)
    rng = np.random.default_rng(5)
    W = rng.normal(size=(4, 64))
    W[1] = W[0] + 1e-7 * rng.normal(size=64)
    b = rng.normal(size=4)
    b[1] = b[0]
    H64 = H.astype(np.float64)
    ref_pred = np.argmax(H64 @ W.T + b, 1)
    mu = np.stack([H64[y == k].mean(0) for k in range(4)])
    ncc_ref = np.argmin(((H64[:, None, :] - mu[None]) ** 2).sum(-1), 1)
    stats = ClassStats(4, scatter=False, traces=False).update(H, y)
    sp = SecondPass(stats, W, b).update(H, y)
    got = sp.result()
    assert 300 < sp.rescored < 2700  # both kinds of rows, in every part of the batch
    assert got["classifier_acc"] == np.mean(ref_pred == y)
    assert got["ncc_mismatch"] == np.mean(ref_pred != ncc_ref)
    assert sp.n == sp.n_labelled == len(y)


def test_float32_overflow_of_the_classifier_scores_falls_back_to_float64(monkeypatch):
    # |scores| ~ 1e40 overflow float32 (max 3.4e38) but not float64: the decisions must be float64's
    from nclab.collapse import second_pass

    monkeypatch.setattr(second_pass, "FUSED_COLUMNS", 0)  # the float32 route
    H, y = gaussian_data(seed=9, N=1500, D=16, K=5, offset=2.0)
    H = (H * 1e20).astype(np.float32)
    W = np.random.default_rng(4).normal(size=(5, 16)) * 1e20
    b = np.zeros(5)
    H64 = H.astype(np.float64)
    ref_pred = np.argmax(H64 @ W.T + b, 1)
    mu = np.stack([H64[y == k].mean(0) for k in range(5)])
    ncc_ref = np.argmin(((H64[:, None, :] - mu[None]) ** 2).sum(-1), 1)
    with np.errstate(over="ignore"):
        assert not np.isfinite(H @ W.T.astype(np.float32)).all()  # the float32 product really overflows
    stats = ClassStats(5, scatter=False, traces=False).update(H, y)
    got = SecondPass(stats, W, b).update(H, y).result()
    assert got["classifier_acc"] == np.mean(ref_pred == y)
    assert got["ncc_mismatch"] == np.mean(ref_pred != ncc_ref)


@pytest.mark.parametrize("sep, screened", [(0.6, "some"), (40.0, "all")])
def test_nearest_centre_screening_gives_the_exact_decisions(sep, screened):
    # rows within half the distance to the nearest other mean skip the distance product; the decisions
    # (ncc_acc, ncc_mismatch) must still equal the naive per-row argmin, for overlapping and separated classes
    H, y = gaussian_data(seed=8, N=4000, D=40, K=9, offset=3.0, sep=sep)
    W = np.random.default_rng(1).normal(size=(9, 40))
    b = np.random.default_rng(2).normal(size=9)
    mu = np.stack([H[y == k].mean(0) for k in range(9)])
    ncc_ref = np.argmin(((H[:, None, :] - mu[None]) ** 2).sum(-1), 1)
    pred_ref = np.argmax(H @ W.T + b, 1)
    stats = ClassStats(9, scatter=False, traces=False).update(H, y)
    sp = SecondPass(stats, W, b, project=True)
    for i in range(0, len(y), 700):
        sp.update(H[i : i + 700], y[i : i + 700])
    got = sp.result()
    assert got["ncc_acc"] == np.mean(ncc_ref == y)
    assert got["ncc_mismatch"] == np.mean(ncc_ref != pred_ref)
    if screened == "all":
        assert sp.screened == len(y)
    else:  # overlapping classes: the radius test settles some rows and leaves the rest to the exact route
        assert 0 < sp.screened < len(y) and np.mean(ncc_ref == y) < 0.95


def test_second_pass_on_unlabelled_rows_gives_the_naive_mismatch():
    """NC4 needs no labels: rows fed without labels (e.g. an unlabelled pool) are compared classifier vs nearest
    class mean of the first pass, with and without a bias; labelled-only outputs stay absent."""
    H, y = gaussian_data(seed=9, N=1500, D=12, K=5, offset=2.0, sep=1.0)
    pool = np.random.default_rng(5).normal(size=(800, 12)) * 2 + H.mean(0)  # other samples, no labels
    W = np.random.default_rng(6).normal(size=(5, 12))
    mu = np.stack([H[y == k].mean(0) for k in range(5)])
    ncc = np.argmin(((pool[:, None, :] - mu[None]) ** 2).sum(-1), 1)
    stats = ClassStats(5).update(H, y)
    for b in (None, np.random.default_rng(7).normal(size=5) * 3):
        pred = np.argmax(pool @ W.T + (0 if b is None else b), 1)
        sp = SecondPass(stats, W, b, project=False)
        for i in range(0, len(pool), 300):
            sp.update(pool[i : i + 300])
        got = sp.result()
        assert got == {"ncc_mismatch": np.mean(pred != ncc)} and 0 < got["ncc_mismatch"] < 1
    with pytest.raises(NclabError, match="projected scatter needs labels"):
        SecondPass(stats, W, project=True).update(pool)
    with pytest.raises(NclabError, match=r"shape \(batch, 12\)"):
        SecondPass(stats, W).update(pool[:, :5])


def test_simplex_etf_with_zero_noise_is_exactly_collapsed():
    K, D, n = 6, 9, 5
    offset = np.random.default_rng(3).normal(size=D) * 4
    M = etf_means(K, D, offset=offset)
    y = np.repeat(np.arange(K), n)
    H = M[y]
    W = 1.7 * (M - offset)  # a self-dual classifier for the centred means
    b = -W @ offset
    m = metrics_from_arrays(H, y, W, b)
    for key in ("nc1", "nc1_quotient", "cdnv", "etf_error_means", "etf_error_weights", "equinorm_means",
                "equinorm_weights", "equiangular_means", "maxangle_means", "maxangle_weights", "self_duality"):
        assert 0 <= m[key] < 1e-12, (key, m[key])
    assert m["ncc_mismatch"] == 0.0 and m["ncc_acc"] == 1.0 and m["classifier_acc"] == 1.0
    # the same checks fail for the right reason: noise breaks NC1, an orthogonal frame is no ETF
    noisy = metrics_from_arrays(H + 0.1 * np.random.default_rng(0).normal(size=H.shape), y, W, b)
    assert noisy["nc1"] > 1e-4 and noisy["cdnv"] > 1e-4
    Q = np.eye(K, D) * 3.0
    ortho = metrics_from_arrays(Q[y], y, Q)
    assert ortho["etf_error_means"] == pytest.approx(0.0, abs=1e-12)  # centred orthogonal frame = ETF
    assert ortho["etf_error_weights"] > 0.1  # uncentred orthogonal W is not an ETF


def test_self_duality_zero_for_scaled_centred_means():
    H, y = gaussian_data(seed=5)
    K = 7
    mu = np.stack([H[y == k].mean(0) for k in range(K)])
    Mc = mu - H.mean(0)
    assert metrics_from_arrays(H, y, 3.3 * Mc)["self_duality"] < 1e-24
    assert metrics_from_arrays(H, y, -Mc)["self_duality"] == pytest.approx(4.0)  # opposite direction
    assert metrics_from_arrays(H, y, Mc + 0.2 * np.random.default_rng(0).normal(size=Mc.shape))["self_duality"] > 1e-4


def test_orthogonal_frame_gives_zero_of_error():
    K, D = 5, 11
    Q, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(D, K)))
    M = 4.0 * Q.T  # K orthogonal rows of equal norm
    y = np.repeat(np.arange(K), 3)
    m = metrics_from_arrays(M[y], y, 0.5 * Q.T)
    assert m["of_error_means"] < 1e-12 and m["of_error_weights"] < 1e-12
    assert of_error(M @ M.T) < 1e-12
    E = etf_means(K, D)
    assert of_error(E @ E.T) > 0.1  # an ETF is not an orthogonal frame
    # frame_error is scale invariant and agrees with etf_error on the ETF target
    G = np.random.default_rng(0).normal(size=(K, K))
    G = G @ G.T
    assert frame_error(G, 7.0 * G) < 1e-12
    assert frame_error(G, etf_target(K)) == pytest.approx(etf_error(G), rel=1e-12)


def test_nc1_invariances():
    H, y = gaussian_data(seed=11, D=10, K=6)
    base = metrics_from_arrays(H, y)
    rng = np.random.default_rng(4)
    R, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    perm = rng.permutation(6)
    variants = {
        "translation": (H + 1e3 * rng.normal(size=10), y),
        "rotation": (H @ R, y),
        "scale_up": (H * 1e4, y),
        "scale_down": (H * 1e-4, y),
        "relabel": (H, perm[y]),
    }
    for name, (h, yy) in variants.items():
        m = metrics_from_arrays(h, yy)
        for key in ("nc1", "nc1_quotient", "cdnv", "etf_error_means", "equinorm_means"):
            assert m[key] == pytest.approx(base[key], rel=1e-8), (name, key)


def test_streaming_equals_all_at_once_and_merge_equals_single():
    H, y = gaussian_data(seed=2, N=500, D=8, K=6, offset=5.0)
    one = ClassStats(6).update(H, y)
    streamed = ClassStats(6)
    cuts = [0, 1, 7, 40, 41, 200, 333, 500]  # uneven batches, some missing classes, a single-row batch
    for a, b in zip(cuts[:-1], cuts[1:]):
        streamed.update(H[a:b], y[a:b])
    parts = [ClassStats(6).update(H[a:b], y[a:b]) for a, b in [(0, 150), (150, 151), (151, 500)]]
    merged = ClassStats(6).merge(parts[0]).merge(ClassStats(6)).merge(parts[1]).merge(parts[2])
    for acc in (streamed, merged):
        assert torch.equal(acc.counts, one.counts)
        for name in ("means", "traces", "scatter"):
            np.testing.assert_allclose(getattr(acc, name).numpy(), getattr(one, name).numpy(), rtol=1e-11, atol=1e-11)
        assert_close(compute_metrics(acc), compute_metrics(one), rtol=1e-10)
    # and the accumulator itself against the direct formulas
    mu = np.stack([H[y == k].mean(0) for k in range(6)])
    R = H - mu[y]
    np.testing.assert_allclose(one.scatter[0].numpy(), R.T @ R, rtol=1e-11)
    np.testing.assert_allclose(one.traces.numpy(), np.bincount(y, (R * R).sum(1)), rtol=1e-11)


def test_state_dict_round_trip_through_a_weights_only_file_then_merge(tmp_path):
    """A worker's accumulator saved with torch.save and read with weights_only=True (tensors only) restores
    exactly, and merging restored partial accumulators equals one accumulator over all rows (the multi-process
    recipe); with fine->coarse groups the per-superclass scatter comes back too."""
    H, y = gaussian_data(seed=3, N=400, D=6, K=6, offset=3.0)
    groups = np.array([0, 0, 1, 1, 2, 2])
    one = ClassStats(6, groups=groups).update(H, y)
    parts = []
    for i, (a, b) in enumerate([(0, 123), (123, 400)]):
        path = tmp_path / f"worker{i}.pt"
        torch.save(ClassStats(6, groups=groups).update(H[a:b], y[a:b]).state_dict(), path)
        parts.append(ClassStats.from_state_dict(torch.load(path, weights_only=True)))
    merged = ClassStats(6, groups=groups).merge(parts[0]).merge(parts[1])
    assert torch.equal(merged.counts, one.counts) and np.array_equal(merged.groups, groups)
    for name in ("means", "traces", "scatter"):
        np.testing.assert_allclose(getattr(merged, name).numpy(), getattr(one, name).numpy(), rtol=1e-11, atol=1e-11)
    assert_close(compute_metrics(merged), compute_metrics(one), rtol=1e-10)
    assert_close(fine_within_coarse(merged, Hierarchy(groups, [str(i) for i in range(6)], ["a", "b", "c"])),
                 fine_within_coarse(one, Hierarchy(groups, [str(i) for i in range(6)], ["a", "b", "c"])), rtol=1e-10)
    # an accumulator that has seen nothing yet (dim unknown) round-trips too, and still accepts data
    empty = ClassStats.from_state_dict(ClassStats(6).state_dict())
    assert empty.dim is None and empty.update(H, y).num_samples == 400


def test_accumulator_misuse_raises_clear_errors():
    H, y = gaussian_data(seed=1, N=40, D=4, K=3)
    with pytest.raises(NclabError, match="num_classes must be >= 1"):
        ClassStats(0)
    with pytest.raises(NclabError, match="feature dimension must be >= 1"):
        ClassStats(3, 0)
    with pytest.raises(NclabError, match="groups must be a length-3"):
        ClassStats(3, groups=[0, 1])
    with pytest.raises(NclabError, match="2-D"):
        ClassStats(3).update(H.reshape(40, 2, 2), y)
    with pytest.raises(NclabError, match="labels must be integers"):
        ClassStats(3).update(H, y + 0.5)
    assert ClassStats(3).update(H, y.astype(np.float64)).num_samples == 40  # integral floats are fine
    full = ClassStats(3).update(H, y)
    with pytest.raises(NclabError, match="same num_classes"):
        full.merge(ClassStats(4).update(H, y))
    with pytest.raises(NclabError, match="same groups"):
        ClassStats(3, groups=[0, 0, 1]).merge(ClassStats(3, groups=[0, 1, 1]))
    with pytest.raises(NclabError, match="dims 4 and 2"):
        ClassStats(3).update(H, y).merge(ClassStats(3).update(H[:, :2], y))
    with pytest.raises(NclabError, match="coarse class for each of the 3"):
        full.coarsen([0, 1])


def test_lean_first_pass_converts_large_batches_in_pieces_exactly():
    # counts and means only: a float32 batch far larger than one cache-sized piece (D = 4096 -> 128 rows per
    # piece) must give the means of the direct float64 formula and of a row-by-row accumulation
    rng = np.random.default_rng(4)
    y = rng.integers(0, 5, 1000)
    H = (rng.normal(size=(1000, 4096)) + 30 * y[:, None]).astype(np.float32)
    lean = ClassStats(5, scatter=False, traces=False).update(H, y)
    mu = np.stack([H[y == k].astype(np.float64).mean(0) for k in range(5)])
    np.testing.assert_allclose(lean.means.numpy(), mu, rtol=1e-13, atol=1e-14)
    small = ClassStats(5, scatter=False, traces=False)
    for i in range(0, 1000, 97):
        small.update(H[i : i + 97], y[i : i + 97])
    np.testing.assert_allclose(lean.means.numpy(), small.means.numpy(), rtol=1e-13, atol=1e-14)
    assert torch.equal(lean.counts, torch.as_tensor(np.bincount(y, minlength=5), dtype=torch.float64))
    H[700, 5] = np.nan  # a NaN in a later piece is still caught
    with pytest.raises(NclabError, match="NaN"):
        ClassStats(5, scatter=False, traces=False).update(H, y)


def test_collapsed_regime_with_large_offset_stays_accurate_and_non_negative():
    # tiny within-class spread far from the origin: raw-moment formulas cancel catastrophically here
    H, y = gaussian_data(seed=3, N=400, D=6, K=5, noise=1e-6)
    shifted = H + 1e4
    a, b = metrics_from_arrays(H, y)["nc1"], metrics_from_arrays(shifted, y, batch_size=37)["nc1"]
    assert a > 0 and b == pytest.approx(a, rel=1e-4)


def test_second_pass_projected_nc1_equals_full_scatter_nc1():
    H, y = gaussian_data(seed=8, D=15, K=5)
    full = ClassStats(5).update(H, y)
    lean = ClassStats(5, scatter=False).update(H, y)
    assert lean.scatter is None
    sp = SecondPass(lean)
    for i in range(0, len(y), 64):
        sp.update(H[i : i + 64], y[i : i + 64])
    assert compute_metrics(lean, second=sp)["nc1"] == pytest.approx(compute_metrics(full)["nc1"], rel=1e-10)
    with pytest.raises(NclabError, match="scatter=False"):
        lean.within_scatter()


# degenerate inputs -----------------------------------------------------------------------------
def test_class_with_one_sample_and_empty_class():
    H, y = gaussian_data(seed=9, N=200, D=6, K=4)
    y = y.copy()
    y[y == 3] = 2
    y[0] = 3  # class 3: one sample; class 4 (of K=5): none
    m = metrics_from_arrays(H, y, num_classes=5)
    assert m["n_classes"] == 4 and m["nc1"] >= 0
    assert_close(m, naive(H, y, 5))


@pytest.mark.parametrize("fill", [0.0, 3.5])
def test_zero_or_constant_features_give_undefined_not_zero(fill):
    y = np.arange(30) % 3
    H = np.full((30, 4), fill)
    m = metrics_from_arrays(H, y, np.ones((3, 4)))
    assert math.isnan(m["nc1"]) and math.isnan(m["nc1_quotient"]) and math.isnan(m["cdnv"])
    assert math.isnan(m["etf_error_means"]) and math.isnan(m["self_duality"])
    assert m["trace_within"] == 0 and m["trace_between"] == 0
    assert all(v >= 0 for v in m.values() if not math.isnan(v))


def test_single_class_and_bad_inputs_raise_clear_errors():
    m = metrics_from_arrays(np.random.default_rng(0).normal(size=(10, 3)), np.zeros(10, int))
    assert m["n_classes"] == 1 and math.isnan(m["nc1"])
    H, y = gaussian_data(seed=1, N=50, D=4, K=3)
    Hn = H.copy()
    Hn[7, 2] = np.nan
    for scatter in (True, False):
        with pytest.raises(NclabError, match="NaN"):
            metrics_from_arrays(Hn, y, scatter=scatter)
    Hn[7, 2] = np.inf
    with pytest.raises(NclabError, match="NaN or inf"):
        SecondPass(ClassStats(3).update(H, y), np.ones((3, 4))).update(Hn)
    with pytest.raises(NclabError, match="outside 0..2"):
        ClassStats(3).update(H, y + 1)
    with pytest.raises(NclabError, match="rows"):
        ClassStats(3).update(H, y[:-1])
    with pytest.raises(NclabError, match="W must have shape"):
        metrics_from_arrays(H, y, np.ones((3, 5)))
    with pytest.raises(NclabError, match="no samples"):
        compute_metrics(ClassStats(3))
    with pytest.raises(NclabError, match="dim"):
        ClassStats(3).update(H, y).update(H[:, :2], y)


def test_metric_functions_reject_mismatched_or_non_finite_inputs():
    from nclab.collapse import nc1_quotient, self_duality

    H, y = gaussian_data(seed=1, N=60, D=4, K=3)
    W = np.random.default_rng(0).normal(size=(3, 4))
    with pytest.raises(NclabError, match="two square matrices of one shape"):
        frame_error(np.eye(3), np.eye(4))
    with pytest.raises(NclabError, match="W has shape"):
        self_duality(np.ones((3, 5)), np.ones((3, 4)))
    Wn = W.copy()
    Wn[1, 2] = np.inf
    with pytest.raises(NclabError, match="W contains NaN or inf"):
        metrics_from_arrays(H, y, Wn)
    with pytest.raises(NclabError, match="b must have K=3 entries"):
        metrics_from_arrays(H, y, W, np.zeros(4))
    with pytest.raises(NclabError, match=r"need features \(N, D\) and labels \(N,\)"):
        metrics_from_arrays(H[:, 0], y)
    with pytest.raises(NclabError, match="no samples"):
        metrics_from_arrays(H[:0], y[:0], num_classes=3)
    with pytest.raises(NclabError, match="traces=False"):
        nc1_quotient(ClassStats(3, scatter=False, traces=False).update(H, y))
    bn = np.zeros(3)
    bn[1] = np.nan
    for scatter in (True, False):  # a diverged bias would silently turn every score into NaN
        with pytest.raises(NclabError, match="b contains NaN or inf"):
            metrics_from_arrays(H, y, W, bn, scatter=scatter)
    with pytest.raises(NclabError, match="label -1 is negative; labels must be 0-based"):
        metrics_from_arrays(H, np.where(y == 0, -1, y), W)
    with pytest.raises(NclabError, match=r"label 3 outside 0\.\.2: this accumulator has 3 classes"):
        metrics_from_arrays(H, np.where(y == 0, 3, y), W)
    yh = y.copy()
    yh[0] = 10**10  # would need 10**10 x D accumulators
    with pytest.raises(NclabError, match="implies 10000000001 classes for 60 samples"):
        metrics_from_arrays(H, yh)
    assert math.isnan(etf_error(np.ones((1, 1))))  # one class: no simplex to compare with
    assert math.isnan(frame_error(np.zeros((3, 3)), np.eye(3)))  # all-zero Gram: undefined, not 0


# coarse / fine views ---------------------------------------------------------------------------
def _hier():
    return Hierarchy([0, 0, 1, 1, 1, 2], [f"f{i}" for i in range(6)], ["a", "b", "c"])


def test_coarse_view_equals_direct_coarse_accumulation():
    h = _hier()
    H, y = gaussian_data(seed=12, N=500, D=7, K=6)
    fine = ClassStats(6, groups=h.fine_to_coarse).update(H, y)
    direct = ClassStats(3).update(H, h.coarse_of(y))
    coarse = fine.coarsen(h.fine_to_coarse)
    np.testing.assert_allclose(coarse.scatter.sum(0).numpy(), direct.scatter[0].numpy(), rtol=1e-10)
    np.testing.assert_allclose(coarse.traces.numpy(), direct.traces.numpy(), rtol=1e-10)
    Wc = np.random.default_rng(0).normal(size=(3, 7))
    res = hierarchy_metrics_from_arrays(H, y, h, Wc, np.zeros(3))
    assert_close(res["coarse"], naive(H, h.coarse_of(y), 3, Wc, np.zeros(3)))
    assert_close(res["fine"], naive(H, y, 6))
    assert "self_duality" not in res["fine"]  # W has coarse rows: fine view has no weight metrics
    with pytest.raises(NclabError, match="W has 4 rows but the hierarchy has 6 fine and 3 coarse classes"):
        hierarchy_metrics_from_arrays(H, y, h, np.ones((4, 7)))


def test_fine_within_coarse_is_nc1_inside_each_superclass():
    h = _hier()
    H, y = gaussian_data(seed=13, N=600, D=5, K=6)
    fine = ClassStats(6, groups=h.fine_to_coarse).update(H, y)
    fwc = fine_within_coarse(fine, h)
    for c, fc in enumerate([[0, 1], [2, 3, 4]]):
        sel = np.isin(y, fc)
        relabel = np.searchsorted(fc, y[sel])
        assert fwc[str(c)] == pytest.approx(naive(H[sel], relabel, len(fc))["nc1"], rel=1e-8)
    assert math.isnan(fwc["2"])  # one fine class: no fine structure to measure
    assert fwc["mean"] == pytest.approx((fwc["0"] + fwc["1"]) / 2)
    with pytest.raises(NclabError, match="groups"):
        fine_within_coarse(ClassStats(6).update(H, y), h)


# CLI -------------------------------------------------------------------------------------------
def test_cli_arrays_json(tmp_path, capsys):
    from nclab.cli import main

    H, y = gaussian_data(seed=4, N=120, D=6, K=4)
    W, b = np.random.default_rng(0).normal(size=(4, 6)), np.zeros(4)
    for name, arr in {"H": H.astype(np.float32), "y": y, "W": W, "b": b}.items():
        np.save(tmp_path / f"{name}.npy", arr)
    rc = main(["metrics", "--features", str(tmp_path / "H.npy"), "--labels", str(tmp_path / "y.npy"),
               "--weights", str(tmp_path / "W.npy"), "--bias", str(tmp_path / "b.npy"), "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert_close(out, naive(H.astype(np.float32), y, 4, W, b))
    np.save(tmp_path / "z.npy", np.zeros((10, 3), np.float32))
    np.save(tmp_path / "yz.npy", np.arange(10) % 2)
    assert main(["metrics", "--features", str(tmp_path / "z.npy"), "--labels", str(tmp_path / "yz.npy"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["nc1"] is None  # undefined -> null, valid JSON
    assert main(["metrics", "--features", str(tmp_path / "missing.npy"), "--labels", str(tmp_path / "y.npy")]) == 2
    assert "does not exist" in capsys.readouterr().err
    np.save(tmp_path / "Hc.npy", H.astype(np.complex64))  # numeric, but not features
    assert main(["metrics", "--features", str(tmp_path / "Hc.npy"), "--labels", str(tmp_path / "y.npy")]) == 2
    assert "must be a numeric (N, D) array" in capsys.readouterr().err


def test_cli_refuses_options_of_the_other_mode(tmp_path, capsys):
    # --device/--epoch were silently ignored in arrays mode (exit 0 with --device cuda on a CPU-only machine)
    from nclab.cli import main

    H, y = gaussian_data(seed=4, N=60, D=5, K=3)
    np.save(tmp_path / "H.npy", H)
    np.save(tmp_path / "y.npy", y)
    arrays = ["metrics", "--features", str(tmp_path / "H.npy"), "--labels", str(tmp_path / "y.npy")]
    for extra, named in ((["--device", "cuda"], "--device"), (["--epoch", "3"], "--epoch"),
                         (["--splits", "train,test"], "--splits"), (["--taps", "head.0"], "--taps")):
        assert main(arrays + extra) == 2
        err = capsys.readouterr().err
        assert named in err and "only apply with --run" in err
    assert main(["metrics", "--run", str(tmp_path), "--labels", str(tmp_path / "y.npy")]) == 2
    assert "--labels only apply with --features" in capsys.readouterr().err
    assert main(arrays + ["--json"]) == 0  # the plain arrays call still works
    assert json.loads(capsys.readouterr().out)["nc1"] > 0


@pytest.mark.parametrize("grouped", [False, True])
def test_one_large_batch_in_pieces_equals_the_naive_statistics(monkeypatch, grouped):
    # ClassStats.update works through a batch in cache-sized float64 pieces (here 50 rows: 12 pieces): its means,
    # traces and (per-group) scatter must equal the formulas written directly in float64 NumPy
    from nclab.collapse import stats as stats_module

    monkeypatch.setattr(stats_module, "CHUNK_BYTES", 8 * 12 * 50)
    H, y = gaussian_data(seed=12, N=600, D=12, K=7, offset=3.0)
    H32 = H.astype(np.float32)
    groups = np.arange(7) % 3 if grouped else None
    st = ClassStats(7, groups=groups).update(H32, y)
    H64 = H32.astype(np.float64)
    mu = np.stack([H64[y == k].mean(0) for k in range(7)])
    R = H64 - mu[y]
    np.testing.assert_allclose(st.means.numpy(), mu, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(st.traces.numpy(), [np.sum(R[y == k] ** 2) for k in range(7)], rtol=1e-10)
    g_of = groups if grouped else np.zeros(7, dtype=int)
    for g in range(st.num_groups):
        Rg = R[np.isin(y, np.flatnonzero(g_of == g))]
        np.testing.assert_allclose(st.scatter[g].numpy(), Rg.T @ Rg, rtol=1e-10, atol=1e-9)


def test_a_nan_in_a_later_chunk_leaves_the_second_pass_as_it_was(monkeypatch):
    # a batch is worked through in chunks: a NaN in its last chunk must raise without counting the earlier ones
    from nclab.collapse import second_pass

    monkeypatch.setattr(second_pass, "CHUNK_BYTES", 1)  # 256-row chunks
    H, y = gaussian_data(seed=13, N=1200, D=8, K=3)
    W = np.random.default_rng(0).normal(size=(3, 8))
    stats = ClassStats(3, scatter=False, traces=False).update(H, y)
    sp = SecondPass(stats, W, project=True).update(H[:600], y[:600])
    before = sp._counters()
    bad = H[600:].copy()
    bad[-1, 0] = np.nan
    with pytest.raises(NclabError, match="NaN"):
        sp.update(bad, y[600:])
    after = sp._counters()
    for k, v in before.items():
        assert (torch.equal(v, after[k]) if isinstance(v, torch.Tensor) else v == after[k]), k
    assert sp.n == sp.n_labelled == 600
    ref = SecondPass(stats, W, project=True).update(H[:600], y[:600]).update(H[600:], y[600:])
    assert sp.update(H[600:], y[600:]).result() == ref.result()  # usable afterwards, as if the bad batch never came


def test_metrics_take_gradient_tracking_tensors_and_stay_usable():
    # features straight from a model and W = model.classifier.weight (an nn.Parameter) must work with the out=
    # work buffers, and must not leave the per-thread buffer failing every later call in the process
    import torch

    from nclab.collapse import metrics_from_arrays
    from nclab.models import build_model

    torch.manual_seed(0)
    m = build_model("mlp", 3, (4,), width=8, depth=1)
    x, y = torch.randn(60, 4), torch.arange(60) % 3
    want = metrics_from_arrays(m.features(x).detach(), y, m.classifier.weight.detach(), num_classes=3)
    got = metrics_from_arrays(m.features(x), y, m.classifier.weight, num_classes=3)
    assert got == pytest.approx(want, rel=1e-12, nan_ok=True)
    H = np.random.default_rng(1).normal(size=(90, 50))  # D > 2K: the projected route and its buffers
    yy = np.arange(90) % 3
    a = metrics_from_arrays(torch.from_numpy(H).requires_grad_(), yy)
    assert metrics_from_arrays(H, yy) == pytest.approx(a, rel=1e-12, nan_ok=True)


def test_second_pass_checks_labels_like_the_first():
    from nclab.collapse import ClassStats
    from nclab.collapse.second_pass import SecondPass

    rng = np.random.default_rng(0)
    H, y = rng.normal(size=(30, 4)), np.arange(30) % 3
    sp = SecondPass(ClassStats(3).update(H, y), rng.normal(size=(3, 4)))
    for bad, msg in ((y + 5, "label 7 outside 0..2"), (y - 1, "label -1 outside"), (y + 0.5, "must be integers")):
        with pytest.raises(NclabError, match=msg):
            sp.update(H, bad)
    sp.update(H, y.astype(np.float64))  # whole-number floats are labels, as in ClassStats
    assert sp.n == 30


def test_whole_float_batch_size_and_trimmed_buffers():
    from nclab.collapse import metrics_from_arrays
    from nclab.collapse.stats import thread_scratch

    rng = np.random.default_rng(0)
    H, y = rng.normal(size=(3000, 8)), np.arange(3000) % 3
    a = metrics_from_arrays(H, y, batch_size=np.float64(512))
    assert metrics_from_arrays(H, y, batch_size=512) == pytest.approx(a, nan_ok=True)
    H = rng.normal(size=(40_000, 300))  # 40,000 x 300 float64 buffers (96 MB each) must not stay pinned
    metrics_from_arrays(H, np.arange(40_000) % 3, batch_size=40_000)
    assert max((t.numel() * t.element_size() for t in thread_scratch()._t.values()), default=0) <= 64 << 20


def _blobs(seed, N, D, K, offset=0.0, sep=3.0, noise=1.0):
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(K, D)) * sep + offset
    y = rng.integers(0, K, N)
    y[:K] = np.arange(K)
    return mu[y] + noise * rng.normal(size=(N, D)), y


def _reference(H, y, W=None, b=None):
    """NumPy float64 reference of the metrics checked here (all classes present): trace_within, trace_between,
    nc1 = tr(Σ_W Σ_B⁺)/K in the basis of the centred means (SVD, not the engine's Householder), cdnv, NC4."""
    H = np.asarray(H, np.float64)
    N = len(y)
    ks = np.unique(y)
    K = len(ks)
    mu = np.stack([H[y == k].mean(0) for k in ks])
    Mc = mu - H.mean(0)
    R = H - mu[np.searchsorted(ks, y)]
    _, s, vt = np.linalg.svd(Mc, full_matrices=False)
    Q = vt[s > s[0] * 1e-10].T  # (D, r) basis of the span of the centred means
    RQ = R @ Q
    sw = RQ.T @ RQ / N
    sb = (Mc @ Q).T @ (Mc @ Q) / K
    var = np.array([np.mean(np.sum(R[y == k] ** 2, 1)) for k in ks])
    d2 = ((mu[:, None] - mu[None]) ** 2).sum(-1)
    iu = np.triu_indices(K, 1)
    out = {"n_samples": float(N), "trace_within": np.sum(R * R) / N, "trace_between": np.sum(Mc * Mc) / K,
           "nc1": np.trace(sw @ np.linalg.inv(sb)) / K,
           "cdnv": np.mean((var[iu[0]] + var[iu[1]]) / (2 * d2[iu]))}
    if W is not None:
        ncc = ks[np.argmin(((H[:, None, :] - mu[None]) ** 2).sum(-1), 1)]
        pred = np.argmax(H @ np.asarray(W, np.float64).T + (0 if b is None else b), 1)
        out["ncc_mismatch"] = np.mean(pred != ncc)
        out["ncc_acc"] = np.mean(ncc == y)
        out["classifier_acc"] = np.mean(pred == y)
    return out


def _assert_metrics(got, ref, rel=1e-9):
    for k, v in ref.items():
        assert got[k] == pytest.approx(v, rel=rel, abs=1e-14), (k, got[k], v)


def test_default_route_first_pass_sees_every_row_when_the_data_spans_many_chunks():
    # D = 1024 (> 2K): the default route takes the lean first pass in chunks of 16 x 512 rows and the second pass
    # in chunks of 512; 9,000 rows span both chunkings, so each pass must visit every row exactly once
    H, y = _blobs(1, 9000, 1024, 5, offset=2.0)
    H = H.astype(np.float32)
    W = np.random.default_rng(2).normal(size=(5, 1024))
    got = metrics_from_arrays(H, y, W)
    _assert_metrics(got, _reference(H, y, W), rel=1e-8)
    assert 0 < got["ncc_mismatch"] < 1


@pytest.mark.parametrize("N, bs", [(98, 97), (61, 12), (1, 1)])
def test_second_pass_counts_a_last_chunk_of_one_row(N, bs):
    # the projected route (D > 2K) with W: the last chunk of the second pass holds a single row
    H, y = _blobs(3, N, 9, 1 if N == 1 else 3, offset=1.0)
    W = np.random.default_rng(4).normal(size=(int(y.max()) + 1, 9))
    got = metrics_from_arrays(H, y, W, batch_size=bs)
    if N == 1:  # one sample: nothing about the spread is defined, but the row is counted in NC4
        assert got["n_samples"] == 1 and got["trace_within"] == 0
        assert got["ncc_mismatch"] == float(np.argmax(H[0] @ W.T) != 0)
        return
    _assert_metrics(got, _reference(H, y, W))


@pytest.mark.parametrize("N", [1, 128, 129, 257])
def test_lean_first_pass_includes_a_last_piece_of_one_row(N):
    # counts and means only, float32 at D = 4096: converted in pieces of 128 rows; N = 129 / 257 leave one row
    rng = np.random.default_rng(N)
    y = np.arange(N) % 3
    H = (rng.normal(size=(N, 4096)) + 10 * y[:, None]).astype(np.float32)
    st = ClassStats(3, scatter=False, traces=False).update(H, y)
    for k in range(3):
        if np.any(y == k):
            np.testing.assert_allclose(st.means[k].numpy(), H[y == k].astype(np.float64).mean(0), rtol=1e-13,
                                       atol=1e-13)


@pytest.mark.parametrize("scatter, traces", [(False, True), (True, False)])
def test_first_pass_with_only_traces_or_only_scatter_is_exact_and_leaves_float32_input_alone(scatter, traces):
    # the "counts and means only" shortcut must not be taken when either statistic is kept: traces / scatter are
    # float64 sums about the class means, and the caller's float32 array is never changed
    H, y = _blobs(5, 700, 6, 4, offset=30.0, noise=0.01)
    H = H.astype(np.float32)
    before = H.copy()
    st = ClassStats(4, scatter=scatter, traces=traces).update(H, y)
    np.testing.assert_array_equal(H, before)
    H64 = H.astype(np.float64)
    R = H64 - np.stack([H64[y == k].mean(0) for k in range(4)])[y]
    if traces:
        want = np.array([np.sum(R[y == k] ** 2) for k in range(4)])
        np.testing.assert_allclose(st.traces.numpy(), want, rtol=1e-10)
    if scatter:
        np.testing.assert_allclose(st.scatter[0].numpy(), R.T @ R, rtol=1e-10, atol=1e-12)


def test_second_pass_label_checks_name_the_problem():
    rng = np.random.default_rng(0)
    H, y = rng.normal(size=(30, 4)), np.arange(30) % 3
    sp = SecondPass(ClassStats(3).update(H, y), rng.normal(size=(3, 4)))
    bad = y.copy()
    bad[4] = 3  # exactly K: one past the last class
    with pytest.raises(NclabError, match="label 3 outside 0..2"):
        sp.update(H, bad)
    with pytest.raises(NclabError, match="features have 30 rows but labels have 29"):
        sp.update(H, y[:29])
    # a class the first pass never saw (K = 3, first pass fed classes 0 and 1 only)
    two = np.arange(20) % 2
    sp2 = SecondPass(ClassStats(3).update(H[:20], two), rng.normal(size=(3, 4)))
    with pytest.raises(NclabError, match="never saw"):
        sp2.update(H, y)
    assert sp.n == 0 and sp2.n == 0


def test_float32_scores_rescore_rows_whose_order_rounding_of_the_bias_can_flip(monkeypatch):
    # float32 route (FUSED_COLUMNS = 0, as with many classes): scores W h + b near 100 where float32 spacing is 2^-17.
    # b0 rounds up and b1 rounds down to the same float32 value, so float32 ranks class 0 first (by one spacing) while
    # float64 ranks class 1 first; the bias's rounding must be inside the rescoring tolerance
    from nclab.collapse import second_pass

    monkeypatch.setattr(second_pass, "FUSED_COLUMNS", 0)
    sp32 = 2.0 ** -17
    rng = np.random.default_rng(1)
    N = 60
    H = np.zeros((N, 4), np.float32)
    H[:, 0] = 5.0
    H[:, 1:] = rng.normal(size=(N, 3))  # W is 0 there: only varies the class means
    y = np.repeat([0, 1, 2], [10, 30, 20])  # unequal classes: "always 0" and "always 1" score differently
    W = np.zeros((3, 4))
    W[0, 0] = 1e-6  # (W h)_0 = 5e-6, (W h)_1 = 0
    b = np.array([100 + 0.52 * sp32, 100 + 1.46 * sp32, -1000.0])
    H64 = H.astype(np.float64)
    ref = np.argmax(H64 @ W.T + b, 1)
    f32 = np.argmax((H @ W.T.astype(np.float32)) + b.astype(np.float32), 1)
    assert np.all(ref == 1) and np.all(f32 == 0)  # the trap is real: plain float32 gets every row wrong
    stats = ClassStats(3).update(H, y)
    sp = SecondPass(stats, W, b)
    sp.update(H, y)
    assert not sp._fused_w
    assert sp.result()["classifier_acc"] == np.mean(ref == y) != np.mean(f32 == y)


def test_float32_scores_that_overflow_are_scored_in_float64(monkeypatch):
    # float32 features whose products overflow float32 (inf - inf = nan for class 0): decisions are float64's
    from nclab.collapse import second_pass

    monkeypatch.setattr(second_pass, "FUSED_COLUMNS", 0)
    rng = np.random.default_rng(2)
    N = 40
    H = np.zeros((N, 3), np.float32)
    H[:, 0], H[:, 1] = 2.0**66, -(2.0**66)
    H[:, 2] = rng.normal(size=N).astype(np.float32)
    y = np.repeat([0, 1], [10, 30])
    # powers of two: float64 products are exact, row 0 scores exactly 0 and row 1 scores 2^56; float32 products
    # of row 0 are 2^130 > float32's largest (2^128)
    W = np.array([[2.0**64, 2.0**64, 0.0], [2.0**-10, 0.0, 0.0]])
    H64 = H.astype(np.float64)
    ref = np.argmax(H64 @ W.T, 1)
    assert np.all(ref == 1)
    with np.errstate(all="ignore"):
        assert not np.all(np.isfinite(H @ W.T.astype(np.float32)))  # float32 really overflows
    sp = SecondPass(ClassStats(2).update(H, y), W)
    sp.update(H, y)
    assert sp.result()["classifier_acc"] == np.mean(ref == y) == 0.75


def test_nc4_over_a_mix_of_labelled_and_unlabelled_batches_is_per_sample():
    # NC4 counts every row fed (labelled or not); the accuracies only the labelled ones
    H, y = _blobs(7, 400, 6, 4, sep=1.0)
    pool = np.random.default_rng(8).normal(size=(300, 6)) * 2
    W = np.random.default_rng(9).normal(size=(4, 6))
    mu = np.stack([H[y == k].mean(0) for k in range(4)])
    sp = SecondPass(ClassStats(4).update(H, y), W, project=False)
    sp.update(H, y).update(pool)
    both = np.vstack([H, pool])
    ncc = np.argmin(((both[:, None] - mu[None]) ** 2).sum(-1), 1)
    pred = np.argmax(both @ W.T, 1)
    got = sp.result()
    assert got["ncc_mismatch"] == np.mean(pred != ncc)
    assert got["ncc_acc"] == np.mean(ncc[:400] == y)


def test_nc1_from_projection_takes_the_matrix_or_its_diagonal():
    from nclab.collapse.metrics import between_span, centred_means, class_means, nc1_from_projection

    H, y = _blobs(11, 500, 8, 4, offset=1.0)
    st = ClassStats(4).update(H, y)
    _, n, _ = class_means(st)
    V, s = between_span(n, centred_means(st))
    P = V @ st.within_scatter() @ V.T  # (r, r), with off-diagonal terms
    assert float(P.abs().sum() - torch.diagonal(P).abs().sum()) > 1e-3
    want = _reference(H, y)["nc1"]
    assert nc1_from_projection(P, s) == pytest.approx(want, rel=1e-10)
    assert nc1_from_projection(torch.diagonal(P), s) == pytest.approx(want, rel=1e-10)


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
