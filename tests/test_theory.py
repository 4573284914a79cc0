"""Deep linear UFM: closed form vs numerical solver, scalar problem, thresholds, bias/ETF, CE, CLI errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from nclab.cli import main
from nclab.theory import (b_M, collapse_threshold, compare_to_prediction, measured_geometry, predict_ufm,
                          solve_scalar, solve_ufm)
from nclab.theory.solver import _grads, _objective, _onehot
from nclab.utils.errors import NclabError

TOL = 1e-4
IMB = [60, 30, 10, 10]


def lam_for_beta(beta: float, n: int, N: int, M: int) -> float:
    """λ (= every λ_Wj = λ_H) that puts β = b_M/n at the given value: b_M = M N (N λ^{M+1})^{1/M}."""
    return (beta * n / (M * N ** (1 + 1 / M))) ** (M / (M + 1))


# --- scalar problem -----------------------------------------------------------------------------------------
def test_m1_explicit_formula():
    counts, lw, lh = [200, 100, 50, 50], 5e-3, 2e-3
    N = sum(counts)
    assert b_M(N, [lw], lh) == pytest.approx(N * N * lw * lh, rel=1e-13)
    pred = predict_ufm(counts, 1, lw, lh)
    b1 = N * N * lw * lh
    for row, n in zip(pred.per_class, counts):
        x = max(math.sqrt(n / b1) - 1.0, 0.0)
        assert row["x"] == pytest.approx(x, rel=1e-12)
        s2 = N * lh * x
        assert row["sigma2"] == pytest.approx(s2, rel=1e-12)
        # M = 1 ridge: w_k·h̄_k = σ²/(σ²+Nλ_H), ‖h̄_k‖² = σ²/(σ²+Nλ_H)²
        assert row["w_dot_h"] == pytest.approx(s2 / (s2 + N * lh), rel=1e-12)
        assert row["h_norm2"] == pytest.approx(s2 / (s2 + N * lh) ** 2, rel=1e-12)


@pytest.mark.parametrize("M", [2, 3, 5])
def test_scalar_global_min_against_dense_grid(M):
    grid = np.linspace(0.0, 6.0, 600001)
    for beta in np.linspace(0.02, 1.3, 23) * collapse_threshold(M):
        s = solve_scalar(float(beta), M)
        vals = 1.0 / (1.0 + grid**M) + beta * grid
        i = int(np.argmin(vals))
        assert s["phi"] <= vals[i] + 1e-12
        assert s["phi"] == pytest.approx(vals[i], abs=1e-9)
        assert abs(s["x"] - grid[i]) < 1e-3 or abs(vals[i] - 1.0) < 1e-9


@pytest.mark.parametrize("M", [1, 2, 3, 6, 9])
def test_zero_threshold_both_sides(M):
    bs = collapse_threshold(M)
    below, above = solve_scalar(bs * (1 - 1e-4), M), solve_scalar(bs * (1 + 1e-4), M)
    assert not below["collapses"] and below["x"] > 0 and below["phi"] < 1.0
    assert above["collapses"] and above["x"] == 0.0
    if M >= 2:
        # just above β* the positive stationary point still exists but is NOT the global minimum:
        # taking "the largest root" would be wrong
        assert above["local_x"] is not None
        assert 1.0 / (1.0 + above["local_x"] ** M) + bs * (1 + 1e-4) * above["local_x"] > 1.0
        # the threshold is where the positive local minimum's value crosses φ(0) = 1
        x = (M - 1) ** (1 / M)
        assert 1.0 / (1.0 + x**M) + bs * x == pytest.approx(1.0, abs=1e-12)


def test_threshold_in_predict_counts():
    M, counts = 3, IMB
    N = sum(counts)
    for f, coll in ((0.99, False), (1.01, True)):
        lam = lam_for_beta(f * collapse_threshold(M), 10, N, M)
        pred = predict_ufm(counts, M, lam, lam)
        assert [r["collapses"] for r in pred.per_class] == [False, False, coll, coll]
        assert pred.per_class[2]["beta"] == pytest.approx(f * collapse_threshold(M), rel=1e-10)


# --- solver -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_manual_gradients_match_autograd(loss):
    g = torch.Generator().manual_seed(0)
    K, N = 4, 12
    y = torch.arange(K).repeat_interleave(3)
    Y = _onehot(y, K, torch.zeros(1, dtype=torch.float64))
    for M in (1, 2, 3):
        H = torch.randn(5, N, generator=g, dtype=torch.float64, requires_grad=True)
        Ws = [torch.randn(5, 5, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(M - 1)]
        Ws.append(torch.randn(K, 5, generator=g, dtype=torch.float64, requires_grad=True))
        b = torch.randn(K, generator=g, dtype=torch.float64, requires_grad=True)
        _objective(H, Ws, b, Y, [0.0] * M, 0.0, loss).backward()
        gH, gW, gb, _ = _grads(H.detach(), [w.detach() for w in Ws], b.detach(), Y, loss)
        torch.testing.assert_close(gH, H.grad, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(gb, b.grad, rtol=1e-10, atol=1e-12)
        for a, w in zip(gW, Ws):
            torch.testing.assert_close(a, w.grad, rtol=1e-10, atol=1e-12)


CASES = []
for _M in (1, 2, 3):
    CASES += [(_M, [30, 30, 30, 30], 0.3, False), (_M, IMB, 0.3, False), (_M, IMB, 2.0, True)]


@pytest.mark.parametrize("M,counts,f,collapsing", CASES)
def test_closed_form_matches_solver(M, counts, f, collapsing):
    """f = β of the smallest class / β*_M: 2.0 makes the smallest classes collapse in the global optimum."""
    N = sum(counts)
    lam = lam_for_beta(f * collapse_threshold(M), min(counts), N, M)
    pred = predict_ufm(counts, M, lam, lam)
    assert any(r["collapses"] for r in pred.per_class) == collapsing
    sol = solve_ufm(counts, M, lam, lam, optimizer="lbfgs", iters=600, width=6, init_std=1.0, seed=1,
                    eval_steps=[600], prediction=pred)
    c = compare_to_prediction(measured_geometry(sol), pred)
    assert c["objective_rel_diff"] <= TOL
    assert c["max_rel_diff"] <= TOL, c["rel_diff"]
    assert c["collapsed_but_optimum_keeps"] == [] and c["kept_but_optimum_collapses"] == []
    m = sol.history[-1]
    for j in range(M):  # per-layer Grams of the partial products against the balanced-layer prediction
        assert m[f"layer{j}.means_pred_error"] <= TOL
        assert m[f"layer{j}.weights_pred_error"] <= TOL
    assert m["wh_pred_error"] <= TOL


def test_per_layer_lambdas_use_their_product():
    counts, M, lw, lh = IMB, 3, [2e-3, 8e-3, 4e-3], 3e-3
    pred = predict_ufm(counts, M, lw, lh)
    assert pred.b_M == pytest.approx(M * 110 * (110 * 2e-3 * 8e-3 * 4e-3 * lh) ** (1 / M), rel=1e-12)
    sol = solve_ufm(counts, M, lw, lh, optimizer="lbfgs", iters=600, width=6, init_std=1.0, eval_steps=[600],
                    prediction=pred)
    c = compare_to_prediction(measured_geometry(sol), pred)
    assert c["max_rel_diff"] <= TOL and c["objective_rel_diff"] <= TOL
    assert all(sol.history[-1][f"layer{j}.means_pred_error"] <= TOL for j in range(M))


def test_gd_collapse_to_local_zero_is_reported():
    """Small init + deep + strong decay: GD falls into the zero local minimum although the optimum keeps classes."""
    counts, M, lam = [200, 100, 50, 50], 3, 5e-3
    pred = predict_ufm(counts, M, lam, lam)
    assert not any(r["collapses"] for r in pred.per_class)
    sol = solve_ufm(counts, M, lam, lam, optimizer="gd", iters=3000, width=8, eval_steps=[])
    c = compare_to_prediction(measured_geometry(sol), pred)
    assert c["collapsed_but_optimum_keeps"] == [0, 1, 2, 3]
    assert sol.objective() == pytest.approx(0.5, abs=1e-6)  # all-zero value: ‖Y‖²/(2N)
    assert pred.objective < 0.5


def test_gd_reaches_closed_form_papers_setting():
    counts, M, lam = [100, 50, 25, 25], 2, 2e-3
    pred = predict_ufm(counts, M, lam, lam)
    sol = solve_ufm(counts, M, lam, lam, optimizer="gd", iters=6000, width=16, eval_steps=[6000], prediction=pred)
    c = compare_to_prediction(measured_geometry(sol), pred)
    assert c["objective_rel_diff"] <= 1e-4 and c["max_rel_diff"] <= 1e-3


@pytest.mark.parametrize("M", [1, 2, 3])
def test_bias_balanced_gives_uniform_bias_and_etf(M):
    K, n = 4, 25
    lam = lam_for_beta(0.4 * collapse_threshold(M), n, K * n, M)
    pred = predict_ufm([n] * K, M, lam, lam, bias=True)
    np.testing.assert_allclose(pred.b, np.full(K, 1 / K), rtol=1e-14)
    etf = np.eye(K) - 1.0 / K
    ratio = pred.A / etf
    np.testing.assert_allclose(ratio, ratio[0, 0], rtol=1e-10)
    np.testing.assert_allclose(pred.gram_h / etf, (pred.gram_h / etf)[0, 0], rtol=1e-10)
    sol = solve_ufm([n] * K, M, lam, lam, bias=True, optimizer="lbfgs", iters=600, width=6, init_std=1.0,
                    eval_steps=[600], prediction=pred)
    meas = measured_geometry(sol)
    np.testing.assert_allclose(meas["b"], np.full(K, 1 / K), rtol=TOL)
    m = sol.history[-1]
    assert m["etf_error_means"] <= TOL and m["etf_error_weights"] <= TOL and m["nc1"] <= 1e-8
    assert compare_to_prediction(meas, pred)["objective_rel_diff"] <= TOL


def test_bias_imbalanced_general_closed_form():
    """With bias and unequal counts the modes are the eigenvectors of diag(n) − nnᵀ/N (derived in docs/theory.md)."""
    counts, M, lam = IMB, 2, 3e-3
    pred = predict_ufm(counts, M, lam, lam, bias=True)
    sol = solve_ufm(counts, M, lam, lam, bias=True, optimizer="lbfgs", iters=600, width=6, init_std=1.0,
                    eval_steps=[600], prediction=pred)
    c = compare_to_prediction(measured_geometry(sol), pred)
    assert c["objective_rel_diff"] <= TOL and c["b_rel_diff"] <= TOL
    assert sol.history[-1]["means_pred_error"] <= TOL and sol.history[-1]["weights_pred_error"] <= TOL


def _etf_ce_objective(K: int, M: int, n: int, lam: float) -> float:
    """CE objective of the best simplex-ETF configuration (balanced layers), minimised over two scales."""
    def f(p):
        s, t = np.exp(p)
        ce = np.log1p((K - 1) * np.exp(-s * t * K / (K - 1)))
        return ce + M * lam / 2 * (K - 1) * (t * t * K / (K - 1)) ** (1 / M) + lam / 2 * n * K * s * s  # ‖H‖² = N s²
    return float(minimize(f, [0.0, 0.0], method="Nelder-Mead", options=dict(xatol=1e-12, fatol=1e-15)).fun)


@pytest.mark.parametrize("M,init_std", [(1, 0.1), (2, 1.0)])
def test_ce_gd_converges_to_neural_collapse(M, init_std):
    K, n, lam = 4, 25, 1e-3
    sol = solve_ufm([n] * K, M, lam, lam, bias=True, loss="ce", optimizer="gd", iters=8000, width=8,
                    init_std=init_std, eval_steps=[8000])
    m = sol.history[-1]
    assert m["nc1"] <= 1e-4
    assert m["etf_error_means"] <= 1e-2 and m["etf_error_weights"] <= 1e-2 and m["self_duality"] <= 1e-3
    assert m["loss"] <= _etf_ce_objective(K, M, n, lam) + 1e-5


# --- bad input ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw,word", [
    (dict(counts=[10, 10], depth=1, lambda_w=-1e-3, lambda_h=1e-3), "lambda_w"),
    (dict(counts=[10, 10], depth=1, lambda_w=1e-3, lambda_h=-1e-3), "lambda_h"),
    (dict(counts=[10, 0], depth=1, lambda_w=1e-3, lambda_h=1e-3), "count"),
    (dict(counts=[10, 10], depth=0, lambda_w=1e-3, lambda_h=1e-3), "depth"),
    (dict(counts=[10, 10], depth=2, lambda_w=[1e-3, 1e-3, 1e-3], lambda_h=1e-3), "lambda_w"),
])
def test_invalid_arguments(kw, word):
    with pytest.raises(NclabError, match=word):
        predict_ufm(**kw)
    with pytest.raises(NclabError, match=word):
        solve_ufm(**kw, iters=1)


def test_cli_errors_are_one_line(capsys):
    for argv in (["ufm", "predict", "--counts", "10,0"], ["ufm", "predict", "--counts", "10,10", "--depth", "0"],
                 ["ufm", "predict", "--counts", "10,10", "--lambda-h", "-1"],
                 ["ufm", "predict", "--counts", "10,10", "--loss", "ce"],
                 ["ufm", "predict", "--counts", "1e30,4"], ["ufm", "predict", "--counts", "inf,4"],
                 ["ufm", "predict", "--counts", "3,4", "--lambda-w", "1e300", "--lambda-h", "1e300"],
                 ["ufm", "predict", "--counts", "3,4", "--lambda-w", "1e-300", "--lambda-h", "1e-300"],
                 ["reproduce", "dln-cifar10-imbalanced", "--depths", "a,b"],
                 ["reproduce", "dln-cifar10-imbalanced", "--width", "0"],
                 ["reproduce", "dln-cifar10-imbalanced", "--lambda-h", "0"],
                 ["reproduce", "hierarchy-synthetic", "--seed", "-1"],
                 ["reproduce", "dln-synthetic", "--width", "2"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err
    # a negative entry written with a space (not --counts=-3,4) reaches the command's own check, not argparse's
    # "expected one argument"
    for argv in (["ufm", "predict", "--counts", "-3,4"], ["ufm", "predict", "--counts", "3,4", "--lambda-h", "-.5"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and ("count" in err or "lambda_h" in err), err


def test_nc1_of_an_exact_optimum_with_collapsed_modes_is_zero(capsys):
    # with the bias, two of the three modes of (12, 6, 3, 3) collapse: the class means span fewer than K-1
    # directions, and the solver leaves ~1e-9 of residue in the others. nc1 must not divide that residue's
    # within-class spread by its own size (it read 1.94 with matrix_rank's tolerance)
    args = ["ufm", "solve", "--counts", "12,6,3,3", "--depth", "3", "--lambda-w", "0.045", "--lambda-h", "0.045",
            "--bias", "--optimizer", "lbfgs", "--iters", "800", "--init-std", "1", "--width", "8", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["metrics"]["objective_rel_diff"] <= 1e-8  # the optimum
    assert sum(m["collapses"] for m in out["prediction"]["modes"] if m["gamma"] > 0) == 2  # the regime in question
    for j in range(3):
        assert 0 <= out["metrics"][f"layer{j}.nc1"] <= 1e-8


def test_cli_predict_and_solve_json(capsys):
    args = ["--counts", "40,20,10,10", "--depth", "2", "--lambda-w", "2e-3,4e-3", "--lambda-h", "3e-3", "--json"]
    assert main(["ufm", "predict", *args]) == 0
    pred = json.loads(capsys.readouterr().out)
    assert pred["b_M"] == pytest.approx(2 * 80 * math.sqrt(80 * 2e-3 * 4e-3 * 3e-3), rel=1e-12)
    assert [r["n"] for r in pred["per_class"]] == [40, 20, 10, 10]
    assert main(["ufm", "solve", *args, "--optimizer", "lbfgs", "--iters", "400", "--width", "6",
                 "--init-std", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["comparison"]["max_rel_diff"] <= TOL
    assert out["measured"]["objective"] == pytest.approx(pred["optimal_objective"], rel=TOL)


def test_solve_ufm_refuses_a_prediction_for_another_problem():
    # it ran and reported objective_rel_diff 34 against the optimum of a different problem
    from nclab.theory import predict_ufm, solve_ufm

    sol = solve_ufm([4, 2], iters=5, prediction=predict_ufm([4, 2], 1, 5e-4, 5e-4))
    assert "objective_rel_diff" in sol.history[-1]
    for pred in (predict_ufm([4, 3], 1, 5e-4, 5e-4), predict_ufm([4, 2], 2, 5e-4, 5e-4),
                 predict_ufm([4, 2], 1, 1e-3, 5e-4), predict_ufm([4, 2], 1, 5e-4, 5e-4, bias=True)):
        with pytest.raises(NclabError, match="pass predict_ufm\\(\\) of the same problem"):
            solve_ufm([4, 2], iters=5, prediction=pred)


def test_theory_helpers_refuse_inputs_outside_their_domain():
    import math

    from nclab.theory.closed_form import b_M, solve_scalar

    # each was "ValueError: math domain error" (or a misleading "outside float64's range" for nan/inf)
    for args, msg in (((0, [1e-3], 1e-3), "N .* must be a positive finite number"),
                      ((-5, [1e-3], 1e-3), "N .* must be a positive finite number"),
                      ((math.nan, [1e-3], 1e-3), "N .* must be a positive finite number"),
                      ((10, [], 1e-3), "one weight decay per layer"),
                      ((10, 1e-3, 1e-3), "one weight decay per layer"),
                      ((10, [1e-3, 0.0], 1e-3), "lambda_w for layer 2 must be a positive finite number"),
                      ((10, [-1e-3, -1e-3], 1e-3), "lambda_w for layer 1 must be a positive finite number"),
                      ((10, [math.nan], 1e-3), "lambda_w for layer 1 must be a positive finite number"),
                      ((10, [1e-3], 0.0), "lambda_h must be a positive finite number"),
                      ((10, [1e-3], math.inf), "lambda_h must be a positive finite number")):
        with pytest.raises(NclabError, match=msg):
            b_M(*args)
    # M < 1 was a ZeroDivisionError, a string/None a TypeError, M = 1.5 a silent answer for a non-existent depth
    for beta, M, msg in ((0.1, 0, "M .* must be an integer >= 1"), (0.1, -1, "M .* must be an integer >= 1"),
                         (0.1, 1.5, "M .* must be an integer >= 1"), (0.1, None, "M .* must be an integer >= 1"),
                         ("0.1", 2, "beta must be a positive finite number"),
                         (None, 2, "beta must be a positive finite number")):
        with pytest.raises(NclabError, match=msg):
            solve_scalar(beta, M)
    assert solve_scalar(0.1, 2.0) == solve_scalar(0.1, 2)  # a whole float depth is still fine
    # a tiny β (which b_M allows down to ~1e-304) was "OverflowError: Numerical result out of range"; for β -> 0
    # the root tends to (M/β)^(1/(M+1)). A subnormal β made the root search answer "collapses": refused
    r = solve_scalar(1e-300, 3)
    assert not r["collapses"] and r["x"] == pytest.approx((3 / 1e-300) ** 0.25, rel=1e-12)
    with pytest.raises(NclabError, match="below float64's normal range"):
        solve_scalar(1e-316, 3)
    assert b_M(10, (1e-3, 1e-3), 1e-3) == pytest.approx(2 * 10 * math.sqrt(10 * 1e-9), rel=1e-13)


def test_theory_absolute_grams_and_per_class_values():
    from nclab.theory import predict_ufm, solve_ufm, measured_geometry, compare_to_prediction
    from nclab.theory.solver import class_means
    imb = [60, 30, 10, 10]
    pred = predict_ufm(imb, 2, 3e-3, 3e-3, bias=True)
    sol = solve_ufm(imb, 2, 3e-3, 3e-3, bias=True, optimizer="lbfgs", iters=600, width=6, init_std=1.0,
                    eval_steps=[600], prediction=pred)
    assert compare_to_prediction(measured_geometry(sol), pred)["max_rel_diff"] <= 1e-4
    assert sol.history[-1]["wh_pred_error"] <= 1e-4
    M, lw, lh = 3, [2e-3, 8e-3, 4e-3], 3e-3
    pred = predict_ufm(imb, M, lw, lh)
    sol = solve_ufm(imb, M, lw, lh, optimizer="lbfgs", iters=600, width=6, init_std=1.0, eval_steps=[])
    Fj = sol.H
    for j in range(M):
        if j:
            Fj = sol.Ws[j - 1] @ Fj
        m = class_means(Fj.T, sol.y, 4)
        Q = sol.Ws[-1]
        for W in reversed(sol.Ws[j:-1]):
            Q = Q @ W
        np.testing.assert_allclose((m @ m.T).numpy(), pred.layer_means_gram(j), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose((Q @ Q.T).numpy(), pred.layer_classifier_gram(j), rtol=1e-4, atol=1e-6)
    pred = predict_ufm([25] * 4, 2, 1e-3, 1e-3, bias=True)
    sol = solve_ufm([25] * 4, 2, 1e-3, 1e-3, bias=True, optimizer="lbfgs", iters=600, width=6, init_std=1.0,
                    eval_steps=[])
    assert compare_to_prediction(measured_geometry(sol), pred)["max_rel_diff"] <= 1e-4
