"""Behaviour pinned down by mutation testing (second pass, first-pass lean path, metrics_from_arrays
batching, nc1_from_projection, reproduce --resume reuse, sweep skip rules). Each test checks against an independent
reference (NumPy, a hand-built case or an invariance) and failed on a single planted bug that the suite let through."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nclab.collapse import ClassStats, SecondPass, metrics_from_arrays
from nclab.utils.errors import NclabError


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


# --- metrics_from_arrays batching -----------------------------------------------------------------------------------
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


# --- first pass (ClassStats) --------------------------------------------------------------------------------------
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


# --- SecondPass -------------------------------------------------------------------------------------------------------
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


# --- nc1 helpers ------------------------------------------------------------------------------------------------------
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


# --- reproduce --resume: reuse of the trained run's analysis (training and analysis stubbed: the reuse rule only) -----
@pytest.fixture
def stubbed_experiment(tmp_path, monkeypatch):
    """run_experiment on a folder whose run is 'complete', with _train and _analyse replaced: each real analysis
    writes a new serial number into every result it owns, so a reused analysis shows the old number."""
    import nclab.experiments.finegrain_runs as ex
    from nclab.rundir import RunDir

    out = tmp_path / "exp"
    out.mkdir()
    RunDir(out).write_status("complete", epoch=3, wall_time_s=12.5)
    calls = []

    def analyse(tr, results, write, *, spec, probe, which):
        calls.append(dict(opts=spec.estimator_kwargs(), max_train=spec.max_train, probe=probe, which=which))
        n = len(calls)
        results.update(coarse_test_acc=n, net_test_acc=n, recovery={"test_acc": n}, final_metrics={"epoch": n},
                       train_time_s=float(n), recovery_pursuit={"test_acc": n})
        if probe:
            results["probe"] = {"test_acc": n}
        if which:
            results["baselines"] = {k: {"test_acc": n} for k in which}

    monkeypatch.setattr(ex, "_train", lambda cfg, run_dir, resume, force: object())
    monkeypatch.setattr(ex, "_analyse", analyse)

    def run(**kw):
        args = dict(recipe="tiny", data="synthetic", out=out, resume=True, baseline=False)
        return ex.run_experiment("cifar10-coarse5", **{**args, **kw})

    return out, calls, run


def test_resume_reuses_every_analysis_result_of_the_same_checkpoint_and_settings(stubbed_experiment):
    out, calls, run = stubbed_experiment
    first = run()
    again = run()
    assert len(calls) == 1  # the second slice took the analysis from results.json
    for k in ("coarse_test_acc", "net_test_acc", "recovery", "final_metrics", "train_time_s", "recovery_pursuit",
              "probe", "baselines"):
        assert again[k] == first[k], k
    assert json.loads((out / "results.json").read_text())["train_time_s"] == 1.0


@pytest.mark.parametrize("change", ["recovery_options", "probe_off", "probe_on", "random_init_on", "raw_pixels_off",
                                    "epoch", "status"])
def test_resume_redoes_the_analysis_when_a_setting_or_the_checkpoint_differs(stubbed_experiment, change):
    from nclab.rundir import RunDir

    out, calls, run = stubbed_experiment
    base = dict(probe=change != "probe_on", random_init=change != "random_init_on")
    run(**base)
    if change == "epoch":  # another training that happens to report the same wall time
        RunDir(out).write_status("complete", epoch=4)
    if change == "status":
        RunDir(out).write_status("paused")
    # a setting that differs from the run's recorded one (naming the recorded value is no change)
    kw = {"recovery_options": dict(base, recovery_options={"normalize": "center+l2"}),
          "probe_off": dict(base, probe=False), "probe_on": dict(base, probe=True),
          "random_init_on": dict(base, random_init=True), "raw_pixels_off": dict(base, raw_pixels=False)
          }.get(change, base)
    res = run(**kw)
    assert len(calls) == 2, change
    assert res["recovery"] == {"test_acc": 2}
    assert ("probe" in res) == kw["probe"]
    assert set(res.get("baselines", {})) == {k for k, on in (("raw_pixels", kw.get("raw_pixels", True)),
                                                             ("random_init", kw["random_init"])) if on}


def test_a_reused_analysis_keeps_only_the_baselines_asked_for(stubbed_experiment, monkeypatch):
    import nclab.experiments.finegrain_runs as ex

    out, calls, run = stubbed_experiment
    run(random_init=True)
    # the same key (settings and checkpoint) but results.json also carries a stale baseline entry of another run
    res = json.loads((out / "results.json").read_text())
    res["baselines"]["stale"] = {"test_acc": 0.0}
    (out / "results.json").write_text(json.dumps(res))
    again = run(random_init=True)
    assert len(calls) == 1 and set(again["baselines"]) == {"raw_pixels", "random_init"}
    assert ex._ANALYSIS_KEYS  # (the reuse path ran)


def test_resume_inherits_the_first_configured_time_limit(tmp_path):
    from nclab.experiments.finegrain_runs import inherited_time_limit
    from nclab.rundir import RunDir

    dirs = [tmp_path / "a", tmp_path / "b", tmp_path / "c"]
    for d, lim in zip(dirs[1:], (30, 60)):
        d.mkdir()
        RunDir(d).write_config({"train": {"time_limit_s": lim}})
    assert inherited_time_limit([], dirs) == ["train.time_limit_s=30"]
    assert inherited_time_limit(["train.time_limit_s = 5"], dirs) == []


# --- sweep: which cells are complete --------------------------------------------------------------------------------
def test_a_sweep_cell_needs_a_complete_run_and_a_finished_results_json(tmp_path):
    from nclab.commands.sweep import _cell_done
    from nclab.rundir import RunDir

    rd = RunDir(tmp_path / "cell")
    rd.path.mkdir()
    assert not _cell_done(rd.path)
    rd.write_results({"recovery": {"test_acc": 0.5}, "wall_time_s": 3.0})
    for status in ("running", "paused", "failed", "interrupted"):
        rd.write_status(status)
        assert not _cell_done(rd.path), status
    rd.write_status("complete")
    assert _cell_done(rd.path)


def test_a_finished_sweep_rerun_with_a_time_limit_skips_its_cells(tmp_path, capsys, monkeypatch):
    # a time limit changes how a cell runs, not what it trains: a complete cell is skipped, not refused
    import nclab.experiments.finegrain_runs as ex
    from nclab.cli import main
    from nclab.commands.sweep import cell_name
    from nclab.rundir import RunDir

    out = tmp_path / "sw"
    d = out / cell_name({"lr": 0.05})
    d.mkdir(parents=True)
    rd = RunDir(d)
    rd.write_config(ex.build_config("cifar10-coarse5", recipe="tiny", data="synthetic", overrides=["optim.lr=0.05"],
                                    epochs=1, run_name=d.name))
    rd.write_status("complete")
    rd.write_results({"recovery": {"test_acc": 0.5}, "coarse_test_acc": 0.9, "wall_time_s": 1.0})
    monkeypatch.setattr(ex, "run_experiment", lambda *a, **k: pytest.fail("a complete cell was run again"))
    argv = ["sweep", "cifar10-coarse5", "--recipe", "tiny", "--data", "synthetic", "--epochs", "1", "--grid",
            "lr=0.05", "--out", str(out), "--json", "--time-limit", "30"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["grid"]["cells"][0]["recovery_acc"] == 0.5
