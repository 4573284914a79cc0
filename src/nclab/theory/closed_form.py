"""Closed-form global optimum of the deep linear unconstrained-features model (MSE).

Model (Dang et al., ICML 2023): free features ``H`` (d x N, column i = sample i), layers ``W_1 … W_M``
(``W = W_M⋯W_1``, K x d), optional unregularised bias ``b``; class k has ``n_k`` samples, ``N = Σ n_k``::

    f = 1/(2N)‖W H + b 1ᵀ − Y‖²_F + Σ_j λ_Wj/2 ‖W_j‖²_F + λ_H/2 ‖H‖²_F

Derivation (docs/theory.md has the long form):

1. For fixed ``W`` the cheapest factorisation has Σ_j λ_j/2‖W_j‖² = (M/2)·c·Σ_i s_i(W)^{2/M} with
   ``c = (Π_j λ_Wj)^{1/M}`` (AM-GM; the layers are balanced, λ_j a_j² equal for every singular value).
2. For fixed ``W`` (and ``b``) each ``h_i`` solves a ridge problem: h_i = Wᵀ(A + μI)⁻¹ t_i with
   ``A = W Wᵀ``, ``μ = N λ_H``; ``t_i = y_i`` without bias, ``t_i = y_i − π`` (π = n/N) with bias (the bias
   absorbs the mean, and a zero global feature mean is cheapest). The fit term becomes
   ``λ_H/2 · tr(C (A + μI)⁻¹)`` with ``C = Σ_k n_k t_k t_kᵀ`` (= diag(n) without bias, diag(n) − n nᵀ/N with).
3. For a given spectrum of ``A`` the trace is smallest when ``A`` shares ``C``'s eigenvectors (von Neumann),
   so the problem splits into one scalar problem per eigenvalue γ of C. With s = σ² = μ x^M::

       (γ/(2N)) · [ 1/(1 + x^M) + β x ],   β = b_M / γ,   b_M = M N (N λ_H Π_j λ_Wj)^{1/M}.

   Without bias the eigenvalues are the class counts (one mode per class, β_k = b_M / n_k); balanced with
   bias they are n (K−1 times, on the simplex directions) and 0 (the all-ones direction).
4. φ(x) = 1/(1+x^M) + βx. M = 1: convex, x = max(1/√β − 1, 0). M ≥ 2: φ'(0) = β > 0 so zero is always a
   local minimum; the positive local minimum (if any) is the larger root of β = M x^{M−1}/(1+x^M)², and it is
   the global one iff φ(x) < φ(0) = 1, i.e. iff β < β*_M = (M−1)^{(M−1)/M} / M (β*_1 = 1).

Everything is float64 numpy; this module never touches torch.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from nclab.utils.errors import NclabError

__all__ = [
    "validate_ufm_args",
    "b_M",
    "collapse_threshold",
    "scalar_objective",
    "solve_scalar",
    "UFMPrediction",
    "predict_ufm",
]


def validate_ufm_args(counts: Sequence[int], depth: int, lambda_w: float | Sequence[float], lambda_h: float
                      ) -> tuple[np.ndarray, list[float], float]:
    """Check user arguments; return (counts int64 array, λ_W list of length ``depth``, λ_H)."""
    try:
        depth_i = int(depth)
    except (TypeError, ValueError):
        raise NclabError(f"depth must be an integer >= 1, got {depth!r}") from None
    if depth_i < 1 or depth_i != depth:
        raise NclabError(f"depth must be an integer >= 1 (number of linear layers), got {depth}")
    try:
        cnt = np.asarray(list(counts) if not isinstance(counts, np.ndarray) else counts)
        if cnt.dtype == object:
            raise OverflowError
    except OverflowError:
        raise NclabError(f"counts must be sample counts of at most 1e12 per class, got {list(counts)}") from None
    if cnt.ndim != 1 or cnt.size < 2:
        raise NclabError(f"counts must list at least 2 class sizes (e.g. 200,100,50,50), got {cnt.ravel().tolist()}")
    if not np.all(np.asarray(cnt, dtype=float) == np.round(np.asarray(cnt, dtype=float))):
        raise NclabError(f"counts must be whole numbers, got {list(cnt)}")
    cnt = cnt.astype(np.int64)
    if np.any(cnt <= 0):
        raise NclabError(f"every class count must be >= 1, got {cnt.tolist()}; drop empty classes")
    lw = [float(lambda_w)] * depth_i if np.isscalar(lambda_w) else [float(v) for v in lambda_w]
    if len(lw) == 1 and depth_i > 1:
        lw = lw * depth_i
    if len(lw) != depth_i:
        raise NclabError(f"lambda_w has {len(lw)} values but depth is {depth_i}; give one value or one per layer")
    for j, v in enumerate(lw):
        if not math.isfinite(v) or v <= 0:
            raise NclabError(f"lambda_w for layer {j + 1} must be a positive finite number (weight decay), got {v}")
    lh = float(lambda_h)
    if not math.isfinite(lh) or lh <= 0:
        raise NclabError(f"lambda_h must be a positive finite number (feature decay), got {lh}")
    return cnt, lw, lh


def _positive_finite(v: float, what: str) -> float:
    """``float(v)`` if it is a positive finite number (not a string or bool), else a :class:`NclabError`."""
    try:
        f = float(v) if not isinstance(v, (str, bytes, bool)) else math.nan
    except (TypeError, ValueError):
        f = math.nan
    if not (f > 0 and math.isfinite(f)):
        raise NclabError(f"{what} must be a positive finite number, got {v!r}")
    return f


def b_M(N: int, lambda_w: Sequence[float], lambda_h: float) -> float:
    """``b_M = M·N·(N·λ_W1⋯λ_WM·λ_H)^{1/M}`` (M = len(lambda_w)); computed in logs to avoid underflow."""
    # the logs below need N, every λ > 0 (a math domain error otherwise) and M >= 1 (ZeroDivisionError)
    N = _positive_finite(N, "N (number of samples)")
    if isinstance(lambda_w, (str, bytes)) or np.ndim(lambda_w) != 1 or len(lambda_w) == 0:
        raise NclabError(f"lambda_w must list one weight decay per layer (at least one), got {lambda_w!r}")
    lambda_w = [_positive_finite(v, f"lambda_w for layer {j + 1}") for j, v in enumerate(lambda_w)]
    lambda_h = _positive_finite(lambda_h, "lambda_h")
    M = len(lambda_w)
    log_prod = math.log(N) + sum(math.log(v) for v in lambda_w) + math.log(lambda_h)
    log_b = math.log(M * N) + log_prod / M
    if not -700.0 < log_b < 700.0:  # exp would overflow float64 or underflow to 0
        raise NclabError(f"b_M = M·N·(N·λ_W1⋯λ_WM·λ_H)^(1/M) = e^{log_b:.0f} is outside float64's range for these "
                         "counts and lambdas; use lambda_w and lambda_h nearer the usual 1e-5 .. 1e-1")
    return M * N * math.exp(log_prod / M)


def collapse_threshold(M: int) -> float:
    """β*_M: a mode collapses to zero in the global optimum iff β ≥ β*_M. β*_1 = 1, β*_M = (M−1)^{(M−1)/M}/M."""
    if M < 1:
        raise NclabError(f"depth must be >= 1, got {M}")
    if M == 1:
        return 1.0
    return (M - 1) ** ((M - 1) / M) / M


def scalar_objective(x: float | np.ndarray, beta: float, M: int):
    """φ(x) = 1/(1 + x^M) + β x."""
    x = np.asarray(x, dtype=np.float64)
    return 1.0 / (1.0 + x**M) + beta * x


def _stationary_rhs(x: float, M: int) -> float:
    """g(x) = M x^{M−1}/(1 + x^M)²; φ'(x) = β − g(x)."""
    try:
        return M * x ** (M - 1) / (1.0 + x**M) ** 2
    except OverflowError:  # (1 + x^M)² past float64 for tiny β (< ~1e-150, which b_M allows): the same in logs
        lx = math.log(x)
        return math.exp(math.log(M) + (M - 1) * lx - 2.0 * (M * lx + math.log1p(x ** -M)))


def _larger_root(beta: float, M: int) -> float | None:
    """Largest x > 0 with g(x) = β (the positive local minimum of φ), or None if none (M ≥ 2)."""
    x_peak = ((M - 1) / (M + 1)) ** (1.0 / M)  # g is unimodal with its maximum here
    if beta >= _stationary_rhs(x_peak, M):
        return None
    lo, hi = x_peak, max(x_peak, (M / beta) ** (1.0 / (M + 1)))  # g(x) < M/x^{M+1} bounds the root
    while _stationary_rhs(hi, M) > beta:  # safety: g(hi) must be <= β
        hi *= 2.0
    for _ in range(200):  # bisection on the decreasing branch; float64 resolution reached well before 200
        mid = 0.5 * (lo + hi)
        if _stationary_rhs(mid, M) > beta:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-16 * hi:
            break
    return 0.5 * (lo + hi)


def solve_scalar(beta: float, M: int) -> dict:
    """Global minimiser of φ(x) = 1/(1+x^M) + βx over x ≥ 0, comparing objective values (never "largest root").

    Returns ``{"x", "phi", "collapses", "local_x"}``: ``local_x`` is the positive local minimum (None if φ has
    none); for M ≥ 2 zero is always a local minimum too, so ``local_x`` may exist while ``x == 0`` and vice versa.
    Ties (β = β*) go to zero, matching "collapses iff β ≥ β*".
    """
    beta = _positive_finite(beta, "beta")
    # φ is defined for a whole depth M >= 1 only (M <= 0 divided by zero in _larger_root)
    if (isinstance(M, bool) or not isinstance(M, (int, float, np.integer, np.floating))
            or not (M >= 1 and float(M).is_integer())):
        raise NclabError(f"M (depth, number of linear layers) must be an integer >= 1, got {M!r}")
    M = int(M)
    if M == 1:
        x = max(1.0 / math.sqrt(beta) - 1.0, 0.0)
        return {"x": x, "phi": float(scalar_objective(x, beta, 1)), "collapses": x == 0.0,
                "local_x": x if x > 0 else None}
    if beta < sys.float_info.min:  # subnormal: M/β overflowed to inf and the root search answered "collapses"
        raise NclabError(f"beta = {beta} is below float64's normal range (2.2e-308); use lambda_w and lambda_h "
                         "nearer the usual 1e-5 .. 1e-1")
    xr = _larger_root(beta, M)
    if xr is None:
        return {"x": 0.0, "phi": 1.0, "collapses": True, "local_x": None}
    phi_r = float(scalar_objective(xr, beta, M))
    if phi_r < 1.0:
        return {"x": xr, "phi": phi_r, "collapses": False, "local_x": xr}
    return {"x": 0.0, "phi": 1.0, "collapses": True, "local_x": xr}


class _ClassCounts:
    """``K`` classes and ``N`` samples from a ``counts`` array (shared by predictions and solutions)."""

    counts: np.ndarray

    @property
    def K(self) -> int:
        return len(self.counts)

    @property
    def N(self) -> int:
        return int(self.counts.sum())


@dataclass
class UFMPrediction(_ClassCounts):
    """The closed-form optimum. Matrices are numpy float64; K = number of classes.

    ``A = W Wᵀ`` (K x K), ``gram_h = H̄ᵀH̄`` (class means, uncentred), ``wh = W H̄``; ``modes`` lists the scalar
    problems (eigenvalue γ of C, β, x, σ², collapses). ``per_class`` rows hold x_k, σ_k², ‖w_k‖², ‖h̄_k‖², w_k·h̄_k,
    collapses (x/σ² per class only where each class is one mode: bias-free, or balanced with bias).
    """

    counts: np.ndarray
    depth: int
    lambda_w: list[float]
    lambda_h: float
    bias: bool
    b_M: float
    beta_star: float
    modes: list[dict]
    U: np.ndarray  # eigenvectors of C (columns), same order as modes
    sigma2: np.ndarray  # per mode
    A: np.ndarray
    gram_h: np.ndarray
    wh: np.ndarray
    b: np.ndarray | None
    objective: float
    per_class: list[dict] = field(default_factory=list)


    @property
    def mu(self) -> float:
        return self.N * self.lambda_h

    def targets(self) -> np.ndarray:
        """T (K x K): column k is t_k = e_k (no bias) or e_k − n/N (bias)."""
        T = np.eye(self.K)
        if self.bias:
            T = T - (self.counts / self.N)[:, None]
        return T

    def layer_means_gram(self, j: int) -> np.ndarray:
        """Predicted Gram of class means at the input of layer j+1 (j = 0: H itself; features P_j H, P_j = W_j⋯W_1).

        With balanced layers P_j's squared singular values are c^j σ^{2j/M}/(λ_1⋯λ_j), so
        Gram_j = Tᵀ(A+μ)⁻¹ U diag(σ^{2+2j/M} c^j/Λ_j) Uᵀ (A+μ)⁻¹ T.
        """
        self._check_layer(j)
        c = math.exp(sum(math.log(v) for v in self.lambda_w) / self.depth)
        lam_j = math.prod(self.lambda_w[:j])
        s = self.sigma2 ** (1.0 + j / self.depth) * c**j / lam_j
        R = np.linalg.solve(self.A + self.mu * np.eye(self.K), self.targets())
        return R.T @ (self.U * s) @ self.U.T @ R

    def layer_classifier_gram(self, j: int) -> np.ndarray:
        """Predicted Q_j Q_jᵀ for the classifier seen by layer j's input, Q_j = W_M⋯W_{j+1} (j = 0: A)."""
        self._check_layer(j)
        c = math.exp(sum(math.log(v) for v in self.lambda_w) / self.depth)
        lam = math.prod(self.lambda_w[j:])
        s = self.sigma2 ** ((self.depth - j) / self.depth) * c ** (self.depth - j) / lam
        return (self.U * s) @ self.U.T

    def _check_layer(self, j: int) -> None:
        if not 0 <= j < self.depth:
            raise NclabError(f"layer index must be in 0..{self.depth - 1}, got {j}")

    def to_dict(self) -> dict:
        return {
            "counts": self.counts.tolist(), "depth": self.depth, "lambda_w": self.lambda_w,
            "lambda_h": self.lambda_h, "bias": self.bias, "loss": "mse", "b_M": self.b_M,
            "beta_star": self.beta_star, "optimal_objective": self.objective,
            "b": None if self.b is None else self.b.tolist(),
            "per_class": self.per_class, "modes": self.modes,
            "gram_w": self.A.tolist(), "gram_h": self.gram_h.tolist(), "wh": self.wh.tolist(),
        }


def predict_ufm(counts: Sequence[int], depth: int, lambda_w: float | Sequence[float], lambda_h: float,
                bias: bool = False, loss: str = "mse") -> UFMPrediction:
    """Closed-form global optimum of the MSE deep linear UFM (see module docstring).

    The solution is unique up to rotations of H's space (and of hidden layers) as long as every width is at
    least the number of non-collapsed modes and no β equals β*_M exactly.
    """
    if loss != "mse":
        raise NclabError(f"there is no closed form for loss {loss!r}; "
                         f"use --loss mse, or `nclab ufm solve --loss {loss}`")
    cnt, lw, lh = validate_ufm_args(counts, depth, lambda_w, lambda_h)
    M, K, N = int(depth), len(cnt), int(cnt.sum())
    mu = N * lh
    bm = b_M(N, lw, lh)
    if bias:
        pi = cnt / N
        C = np.diag(cnt.astype(np.float64)) - N * np.outer(pi, pi)
        gam, U = np.linalg.eigh(C)
        gam = np.where(gam > 1e-9 * cnt.max(), gam, 0.0)  # the all-ones direction: exactly 0
        order = np.argsort(-gam, kind="stable")
        gam, U = gam[order], U[:, order]
    else:
        gam, U = cnt.astype(np.float64), np.eye(K)
    modes, sig2 = [], np.zeros(K)
    obj = 0.0
    for i, g in enumerate(gam):
        if g == 0.0:
            modes.append({"gamma": 0.0, "beta": None, "x": 0.0, "sigma2": 0.0, "collapses": True, "local_x": None})
            continue
        beta = bm / g
        s = solve_scalar(beta, M)
        sig2[i] = mu * s["x"] ** M
        obj += g / (2 * N) * s["phi"]
        modes.append({"gamma": float(g), "beta": beta, "x": s["x"], "sigma2": float(sig2[i]),
                      "collapses": bool(s["collapses"]), "local_x": s["local_x"]})
    A = (U * sig2) @ U.T
    T = np.eye(K) - ((cnt / N)[:, None] if bias else 0.0)
    R = np.linalg.solve(A + mu * np.eye(K), T)  # (A+μ)⁻¹ T
    gram_h = R.T @ A @ R
    wh = A @ R
    pred = UFMPrediction(counts=cnt, depth=M, lambda_w=lw, lambda_h=lh, bias=bool(bias), b_M=bm,
                         beta_star=collapse_threshold(M), modes=modes, U=U, sigma2=sig2, A=A, gram_h=gram_h,
                         wh=wh, b=(cnt / N) if bias else None, objective=float(obj))
    per_mode_is_class = (not bias) or bool(np.all(cnt == cnt[0]))
    for k in range(K):
        row = {"class": k, "n": int(cnt[k]), "x": None, "sigma2": None, "beta": None,
               "w_norm2": float(A[k, k]), "h_norm2": float(gram_h[k, k]), "w_dot_h": float(wh[k, k])}
        if per_mode_is_class:
            m = modes[k] if not bias else modes[0]  # balanced with bias: all K−1 simplex modes are equal
            row.update(x=m["x"], sigma2=m["sigma2"], beta=m["beta"])
        row["collapses"] = bool(row["h_norm2"] <= 1e-14 * max(1.0, float(np.max(np.diag(gram_h)))))
        pred.per_class.append(row)
    return pred
