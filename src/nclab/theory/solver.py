"""Numerical solver for the deep linear unconstrained-features model (float64, CPU or GPU).

Objective (H is d x N, W = W_M⋯W_1 is K x d, Y one-hot K x N)::

    MSE: f = 1/(2N)‖W H + b1ᵀ − Y‖²_F + Σ_j λ_Wj/2 ‖W_j‖²_F + λ_H/2 ‖H‖²_F
    CE:  f = 1/N Σ_i CE(W h_i + b, y_i)  + the same penalties

Gradients are written out by hand (R = ∂loss/∂Z, Z = W H + b1ᵀ; ∂/∂H = WᵀR, ∂/∂W_j = S_jᵀ R Hᵀ P_{j−1}ᵀ with
P_{j−1} = W_{j−1}⋯W_1, S_j = W_M⋯W_{j+1}), so one gradient step is ~4M small matmuls and three foreach ops.

Optimisers: ``gd`` = full-batch heavy-ball momentum exactly like ``torch.optim.SGD`` (v ← m v + g; p ← p − lr v;
the papers' setting lr 0.1, momentum 0.9, init N(0, 0.1²)), ``lbfgs`` = ``torch.optim.LBFGS`` with strong-Wolfe
line search. The bias is never regularised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from nclab.theory.closed_form import UFMPrediction, _ClassCounts, validate_ufm_args
from nclab.utils.errors import NclabError
from nclab.utils.progress import progress

__all__ = ["UFMSolution", "solve_ufm", "ufm_metrics", "measured_geometry", "compare_to_prediction"]


@dataclass
class UFMSolution(_ClassCounts):
    """Parameters and history of one solve. ``H`` (d, N); ``Ws[j]`` (d_{j+1}, d_j), last (K, d_{M−1}); ``b`` (K,)."""

    H: torch.Tensor
    Ws: list[torch.Tensor]
    b: torch.Tensor | None
    y: torch.Tensor
    counts: np.ndarray
    lambda_w: list[float]
    lambda_h: float
    loss: str
    optimizer: str
    steps: int = 0
    loss_curve: list[tuple[int, float]] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)

    @property
    def depth(self) -> int:
        return len(self.Ws)


    @property
    def bias(self) -> bool:
        return self.b is not None

    def W(self) -> torch.Tensor:
        return _product(self.Ws)

    def partial(self, j: int) -> torch.Tensor | None:
        """P_j = W_j⋯W_1 (None for j = 0, i.e. the identity)."""
        return _product(self.Ws[:j]) if j > 0 else None

    def objective(self) -> float:
        return float(_objective(self.H, self.Ws, self.b, _onehot(self.y, self.K, self.H), self.lambda_w,
                                self.lambda_h, self.loss))


def class_means(F: torch.Tensor, y: torch.Tensor, K: int) -> torch.Tensor:
    """(K, D) class means of features F (N, D) (a class without samples gets 0)."""
    sums = torch.zeros(K, F.shape[1], dtype=F.dtype, device=F.device).index_add_(0, y, F)
    cnt = torch.bincount(y, minlength=K).to(F.dtype).clamp_min(1)
    return sums / cnt[:, None]


def _product(Ws: Sequence[torch.Tensor]) -> torch.Tensor:
    out = Ws[0]
    for W in Ws[1:]:
        out = W @ out
    return out


def _onehot(y: torch.Tensor, K: int, like: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.one_hot(y, K).T.to(like.dtype)


def _residual(Z: torch.Tensor, Y: torch.Tensor, loss: str) -> torch.Tensor:
    """R = ∂(data term)/∂Z for Z (K, N); data term = 1/(2N)‖Z−Y‖² (mse) or mean CE."""
    N = Z.shape[1]
    if loss == "mse":
        return (Z - Y) / N
    return (torch.softmax(Z, dim=0) - Y) / N


def _data_term(Z: torch.Tensor, Y: torch.Tensor, loss: str) -> torch.Tensor:
    N = Z.shape[1]
    if loss == "mse":
        return ((Z - Y) ** 2).sum() / (2 * N)
    return (torch.logsumexp(Z, dim=0) - (Z * Y).sum(0)).mean()


def _objective(H, Ws, b, Y, lw, lh, loss) -> torch.Tensor:
    Z = _product(Ws) @ H
    if b is not None:
        Z = Z + b[:, None]
    reg = lh / 2 * (H * H).sum() + sum(l / 2 * (W * W).sum() for l, W in zip(lw, Ws))
    return _data_term(Z, Y, loss) + reg


def _grads(H, Ws, b, Y, loss):
    """Gradients of the data term (no penalties) w.r.t. H, each W_j, b; also returns R for the loss."""
    M = len(Ws)
    pref = [None] * M  # pref[j] = W_j⋯W_1, j ≥ 1
    for j in range(1, M):
        pref[j] = Ws[0] if j == 1 else Ws[j - 1] @ pref[j - 1]
    W = Ws[0] if M == 1 else Ws[M - 1] @ pref[M - 1]
    Z = W @ H
    if b is not None:
        Z = Z + b[:, None]
    R = _residual(Z, Y, loss)
    G = R @ H.T  # ∂/∂W, K x d
    gH = W.T @ R
    gW = [None] * M
    S = None  # S_j = W_M⋯W_{j+1}
    for j in range(M, 0, -1):  # 1-based layer index
        left = G if S is None else S.T @ G
        gW[j - 1] = left if j == 1 else left @ pref[j - 1].T
        S = Ws[j - 1] if S is None else S @ Ws[j - 1]
    gb = R.sum(1) if b is not None else None
    return gH, gW, gb, Z


def _eval_schedule(iters: int, n: int) -> list[int]:
    """~n steps spread log-uniformly over 0..iters (always includes 0 and iters)."""
    if iters <= 0:
        return [0]
    pts = np.unique(np.round(np.geomspace(1, iters, num=max(n - 1, 1))).astype(int))
    return sorted({0, *pts.tolist(), iters})


def solve_ufm(counts: Sequence[int], depth: int = 1, lambda_w: float | Sequence[float] = 5e-4,
              lambda_h: float = 5e-4, *, bias: bool = False, loss: str = "mse",
              width: int | Sequence[int] | None = None, optimizer: str = "gd", iters: int = 20000,
              lr: float = 0.1, momentum: float = 0.9, init_std: float = 0.1, seed: int = 0,
              device: str | torch.device = "cpu", eval_steps: int | Sequence[int] = 40,
              log_every: int | None = None, prediction: UFMPrediction | None = None,
              init: UFMSolution | None = None, show_progress: bool = False) -> UFMSolution:
    """Minimise the UFM objective numerically; returns the parameters, the loss curve and metrics history.

    ``width``: int (every hidden width and the feature dim d) or a list ``[d, d_1, …, d_{M−1}]``; default
    ``max(32, K)``. ``eval_steps``: a count (log-spaced) or explicit list of iterations at which
    :func:`ufm_metrics` is recorded into ``history`` (with ``prediction`` the Gram errors vs the closed form
    are included). ``init`` warm-starts from another solution (e.g. GD then L-BFGS).
    For ``lbfgs`` an "iteration" is one L-BFGS iteration (several function evaluations).
    """
    cnt, lw, lh = validate_ufm_args(counts, depth, lambda_w, lambda_h)
    if loss not in ("mse", "ce"):
        raise NclabError(f"loss must be 'mse' or 'ce', got {loss!r}")
    if optimizer not in ("gd", "lbfgs"):
        raise NclabError(f"optimizer must be 'gd' or 'lbfgs', got {optimizer!r}")
    if int(iters) < 0:
        raise NclabError(f"iters must be >= 0, got {iters}")
    if not (lr > 0 and 0 <= momentum < 1 and init_std > 0):
        raise NclabError("need lr > 0, 0 <= momentum < 1, init_std > 0; "
                         f"got lr={lr}, momentum={momentum}, init_std={init_std}")
    M, K, N = int(depth), len(cnt), int(cnt.sum())
    widths = _widths(width, M, K)
    try:
        dev = torch.device(device)
        torch.empty(1, device=dev)
    except (RuntimeError, AssertionError) as e:
        raise NclabError(f"device {device!r} is not available ({str(e).splitlines()[0]}); use --device cpu") from None
    y = torch.repeat_interleave(torch.arange(K, device=dev), torch.as_tensor(cnt, device=dev))
    dt = torch.float64
    if init is not None:
        if init.depth != M or init.K != K or list(init.counts) != list(cnt) or init.bias != bool(bias):
            raise NclabError("init solution has a different depth, class counts or bias setting; solve from scratch")
        H = init.H.detach().clone().to(dev)
        Ws = [W.detach().clone().to(dev) for W in init.Ws]
        b = init.b.detach().clone().to(dev) if init.b is not None else None
    else:
        g = torch.Generator(device="cpu").manual_seed(int(seed))  # CPU generator: same init on every device
        H = (torch.randn(widths[0], N, generator=g, dtype=dt) * init_std).to(dev)
        dims = widths + [K]
        Ws = [(torch.randn(dims[j + 1], dims[j], generator=g, dtype=dt) * init_std).to(dev) for j in range(M)]
        b = torch.zeros(K, dtype=dt, device=dev) if bias else None
    sol = UFMSolution(H=H, Ws=Ws, b=b, y=y, counts=cnt, lambda_w=lw, lambda_h=lh, loss=loss, optimizer=optimizer)
    if prediction is not None:
        _check_prediction_matches(prediction, cnt, M, lw, lh, bool(bias))
    iters = int(iters)
    evals = _eval_schedule(iters, eval_steps) if isinstance(eval_steps, int) else sorted({int(s) for s in eval_steps})
    evals = [s for s in evals if 0 <= s <= iters]
    log_every = int(log_every or max(1, iters // 400))

    def record(step: int) -> None:
        m = ufm_metrics(sol, prediction)
        m["step"] = step
        sol.history.append(m)

    # Collapsed directions decay geometrically into float64 subnormals, which are ~100x slower on CPUs.
    # The flag is per thread, and intra-op worker threads do not inherit it; the matrices are tiny anyway,
    # so a single thread is also the fastest.
    threads = torch.get_num_threads()
    flush = torch.set_flush_denormal(True)
    if dev.type == "cpu":
        torch.set_num_threads(1)
    try:
        if optimizer == "gd":
            _run_gd(sol, iters, lr, momentum, evals, log_every, record, show_progress)
        else:
            _run_lbfgs(sol, iters, evals, record, show_progress)
    finally:
        if flush:
            torch.set_flush_denormal(False)
        torch.set_num_threads(threads)
    return sol


def _widths(width, M: int, K: int) -> list[int]:
    if width is None:
        return [max(32, K)] * M
    ws = [int(width)] * M if np.isscalar(width) else [int(v) for v in width]
    if len(ws) == 1:
        ws = ws * M
    if len(ws) != M:
        raise NclabError(f"width needs 1 or {M} values (d, d_1, …, d_{{M-1}}), got {len(ws)}")
    if min(ws) < 1:
        raise NclabError(f"widths must be >= 1, got {ws}")
    return ws


def _params(sol: UFMSolution) -> tuple[list[torch.Tensor], list[float]]:
    params = [sol.H, *sol.Ws] + ([sol.b] if sol.b is not None else [])
    decays = [sol.lambda_h, *sol.lambda_w] + ([0.0] if sol.b is not None else [])
    return params, decays


def _loss_value(sol: UFMSolution, Z: torch.Tensor, Y: torch.Tensor) -> float:
    reg = sol.lambda_h / 2 * (sol.H * sol.H).sum() + sum(l / 2 * (W * W).sum() for l, W in zip(sol.lambda_w, sol.Ws))
    return float(_data_term(Z, Y, sol.loss) + reg)


def _run_gd(sol, iters, lr, momentum, evals, log_every, record, show_progress) -> None:
    Y = _onehot(sol.y, sol.K, sol.H)
    params, decays = _params(sol)
    bufs = [torch.zeros_like(p) for p in params]
    eval_set = set(evals)
    bar = progress(total=iters, desc=f"ufm gd M={sol.depth}") if show_progress else None
    for step in range(iters + 1):  # gradient at `step` = state after `step` updates
        if step in eval_set:
            record(step)
        if step == iters:
            break
        gH, gW, gb, Z = _grads(sol.H, sol.Ws, sol.b, Y, sol.loss)
        if step % log_every == 0:
            val = _loss_value(sol, Z, Y)
            if not math.isfinite(val):
                raise NclabError(f"gradient descent diverged at step {step} (loss {val}); lower the learning rate")
            sol.loss_curve.append((step, val))
        grads = [gH, *gW] + ([gb] if gb is not None else [])
        torch._foreach_add_(grads, torch._foreach_mul(params, decays))
        torch._foreach_mul_(bufs, momentum)
        torch._foreach_add_(bufs, grads)
        torch._foreach_add_(params, bufs, alpha=-lr)
        sol.steps = step + 1
        if bar is not None and step % 1000 == 0:
            bar.update(min(1000, iters - step))
    final = sol.objective()
    if not math.isfinite(final):
        raise NclabError("gradient descent diverged (non-finite loss); lower the learning rate")
    sol.loss_curve.append((iters, final))
    if bar is not None:
        bar.close()


def _run_lbfgs(sol, iters, evals, record, show_progress) -> None:
    Y = _onehot(sol.y, sol.K, sol.H)
    params, decays = _params(sol)
    for p in params:
        p.requires_grad_(False)

    def closure():
        gH, gW, gb, Z = _grads(sol.H, sol.Ws, sol.b, Y, sol.loss)
        grads = [gH, *gW] + ([gb] if gb is not None else [])
        for p, g, lam in zip(params, grads, decays):
            p.grad = g.add(p, alpha=lam) if lam else g
        return torch.as_tensor(_loss_value(sol, Z, Y), dtype=torch.float64)

    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=1, history_size=100, tolerance_grad=1e-15,
                            tolerance_change=0.0, line_search_fn="strong_wolfe")
    done = 0
    if 0 in evals:
        record(0)
    for target in [s for s in evals if s > 0] or [iters]:
        chunk = target - done
        if chunk <= 0:
            continue
        opt.param_groups[0]["max_iter"] = chunk
        opt.param_groups[0]["max_eval"] = chunk * 5 // 2
        before = opt.state[opt._params[0]].get("n_iter", 0)
        val = float(opt.step(closure))
        if not math.isfinite(val):
            raise NclabError("L-BFGS produced a non-finite loss; try --optimizer gd or a smaller init")
        ran = opt.state[opt._params[0]].get("n_iter", 0) - before
        done = target
        sol.steps += ran
        sol.loss_curve.append((sol.steps, sol.objective()))
        record(target)
    for p in params:
        p.grad = None


# ------------------------------------------------------------------------------------------------------------
def measured_geometry(sol: UFMSolution) -> dict:
    """Per-class ‖w_k‖², ‖h̄_k‖², w_k·h̄_k, σ_k², x_k = (σ_k²/(Nλ_H))^{1/M} measured on a solution, plus Grams.

    σ_k² is ‖w_k‖² = (W Wᵀ)_kk without bias; with bias it is the mean of the top K−1 eigenvalues of W Wᵀ
    (the common simplex-mode value of the balanced case).
    """
    with torch.no_grad():
        W = sol.W()
        means = class_means(sol.H.T, sol.y, sol.K)  # (K, d)
        A = W @ W.T
        gh = means @ means.T
        wh = W @ means.T
        mu = sol.N * sol.lambda_h
        if sol.bias:
            ev = torch.linalg.eigvalsh(A).flip(0)[: sol.K - 1]
            s2 = [float(ev.mean())] * sol.K
        else:
            s2 = [float(v) for v in torch.diagonal(A)]
        rows = []
        for k in range(sol.K):
            rows.append({"class": k, "n": int(sol.counts[k]),
                         "x": (max(s2[k], 0.0) / mu) ** (1.0 / sol.depth), "sigma2": s2[k],
                         "w_norm2": float(A[k, k]), "h_norm2": float(gh[k, k]), "w_dot_h": float(wh[k, k])})
        return {"per_class": rows, "gram_w": A.cpu().numpy(), "gram_h": gh.cpu().numpy(), "wh": wh.cpu().numpy(),
                "b": None if sol.b is None else sol.b.cpu().numpy(), "objective": sol.objective()}


SOLUTION_RTOL = 1e-6  # rank cut of the class-mean span for nc1 of solver output (see measured_geometry)

_LAYER_KEYS = ("nc1", "etf_error_means", "of_error_means", "etf_error_weights", "of_error_weights", "self_duality",
               "equinorm_means", "ncc_mismatch")


def _check_prediction_matches(pred: UFMPrediction, counts, depth: int, lambda_w, lambda_h: float, bias: bool) -> None:
    """The closed form compared against must be for the same problem (else its errors mean nothing)."""
    theirs = (np.asarray(pred.counts).tolist(), int(pred.depth), list(pred.lambda_w), pred.lambda_h, bool(pred.bias))
    ours = (np.asarray(counts).tolist(), depth, list(lambda_w), lambda_h, bias)
    if theirs != ours:  # lambdas compared exactly: predict_ufm and solve_ufm validate them the same way
        names = ("counts", "depth", "lambda_w", "lambda_h", "bias")
        raise NclabError(f"prediction is for {', '.join(f'{k} {v}' for k, v in zip(names, theirs))}; the solve is "
                         f"for {', '.join(f'{k} {v}' for k, v in zip(names, ours))}: pass predict_ufm() of the "
                         "same problem")


def ufm_metrics(sol: UFMSolution, prediction: UFMPrediction | None = None) -> dict:
    """NC metrics (``nclab.collapse``, see docs/metrics.md) per layer ``layer{j}`` and the objective ``loss``.

    Layer j = the input of layer j+1: features P_j H (P_0 = I, so layer0 is H) with the classifier it feeds,
    Q_j = W_M⋯W_{j+1} (layer0: W). Per layer: ``nc1`` (tr(Σ_W Σ_B†)/K), ``etf_error_means`` / ``of_error_means``
    (frame error of the centred / uncentred class-mean Gram vs I − 11ᵀ/K / I), ``etf_error_weights`` /
    ``of_error_weights`` (Q_jQ_jᵀ), ``self_duality``, ``equinorm_means``, ``ncc_mismatch``. With a prediction:
    ``layer{j}.means_pred_error`` / ``weights_pred_error`` = frame_error(measured Gram, closed-form Gram)
    (uncentred class-mean Gram, Q_jQ_jᵀ), ``wh_pred_error`` (W H̄ vs closed form) and ``objective_rel_diff``.
    Keys without a ``layer`` prefix repeat layer 0. ``nan`` = undefined (e.g. every class collapsed).
    """
    from nclab.collapse import frame_error, metrics_from_arrays

    K = sol.K
    out: dict = {}
    with torch.no_grad():
        out["loss"] = sol.objective()
        Qs: list = [None] * sol.depth  # Q_j = W_M⋯W_{j+1}
        Q = None
        for j in range(sol.depth - 1, -1, -1):
            Q = sol.Ws[j] if Q is None else Q @ sol.Ws[j]
            Qs[j] = Q
        F = sol.H  # (d_j, N)
        for j in range(sol.depth):
            if j > 0:
                F = sol.Ws[j - 1] @ F
            # an optimiser's solution: class-mean directions below 1e-6 of the largest are residue of collapsed
            # modes (exact zeros at the optimum), not between-class spread to divide by (nc1 would read O(1))
            m = metrics_from_arrays(F.T, sol.y, Qs[j], num_classes=K, device=F.device, rank_rtol=SOLUTION_RTOL)
            p = f"layer{j}."
            for key in _LAYER_KEYS:
                if key in m:
                    out[p + key] = float(m[key])
            if prediction is not None:
                means = class_means(F.T, sol.y, K)
                out[p + "means_pred_error"] = frame_error(means @ means.T, prediction.layer_means_gram(j))
                out[p + "weights_pred_error"] = frame_error(Qs[j] @ Qs[j].T, prediction.layer_classifier_gram(j))
        for key in [k[len("layer0."):] for k in list(out) if k.startswith("layer0.")]:
            out[key] = out["layer0." + key]
        if prediction is not None:
            means0 = class_means(sol.H.T, sol.y, K)
            out["wh_pred_error"] = frame_error(Qs[0] @ means0.T, prediction.wh)
            out["objective_rel_diff"] = abs(out["loss"] - prediction.objective) / abs(prediction.objective)
        if sol.b is not None:
            out["bias_norm"] = float(torch.linalg.norm(sol.b))
    return out


def compare_to_prediction(measured: dict, prediction: UFMPrediction, keep_tol: float = 1e-3) -> dict:
    """Relative differences measured vs predicted per class, and collapse disagreements.

    ``rel_diff[key][k] = |m − p| / |p|``, or ``|m − p| / max_k |p_k|`` where the predicted value is 0 (a collapsed
    class). A class counts as collapsed in the measurement when ‖h̄_k‖² < keep_tol · max_k ‖h̄_k‖²_pred.
    ``collapsed_but_optimum_keeps`` lists classes the solver sent to zero although the global optimum keeps them
    (zero is a local minimum for M ≥ 2); ``kept_but_optimum_collapses`` the reverse (not converged, or a positive
    local minimum).
    """
    keys = ("x", "sigma2", "w_norm2", "h_norm2", "w_dot_h")
    rel: dict = {}
    pc, mc = prediction.per_class, measured["per_class"]
    for key in keys:
        pv = [r[key] for r in pc]
        if any(v is None for v in pv):
            continue
        scale = max(abs(v) for v in pv) or 1.0
        rel[key] = [abs(m[key] - p) / (abs(p) if p != 0 else scale) for m, p in zip(mc, pv)]
    hmax = max(r["h_norm2"] for r in pc) or 1.0
    meas_collapsed = [m["h_norm2"] < keep_tol * hmax for m in mc]
    out = {
        "rel_diff": rel,
        "max_rel_diff": max((max(v) for v in rel.values()), default=float("nan")),
        "objective_rel_diff": abs(measured["objective"] - prediction.objective) / abs(prediction.objective),
        "measured_collapses": meas_collapsed,
        "collapsed_but_optimum_keeps": [k for k in range(len(pc)) if meas_collapsed[k] and not pc[k]["collapses"]],
        "kept_but_optimum_collapses": [k for k in range(len(pc)) if not meas_collapsed[k] and pc[k]["collapses"]],
    }
    if prediction.b is not None and measured.get("b") is not None:
        out["b_rel_diff"] = float(np.linalg.norm(measured["b"] - prediction.b) / np.linalg.norm(prediction.b))
    return out
