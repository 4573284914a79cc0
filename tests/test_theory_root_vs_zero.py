"""The closed form compares the positive stationary point with x = 0 (a "largest root, clamped at 0" routine
does not): pinned on M = 2, where beta* = 1/2 and the stationarity curve g(x) = 2x/(1+x^2)^2 peaks at
g(1/sqrt(3)) = 3*sqrt(3)/8 = 0.6495."""

import math

import numpy as np
import pytest

from nclab.theory.closed_form import collapse_threshold, scalar_objective, solve_scalar


def _largest_root_m2(beta: float) -> float | None:
    """Largest positive real root of beta (1 + x^2)^2 = 2x, i.e. beta x^4 + 2 beta x^2 - 2x + beta = 0 (numpy)."""
    r = np.roots([beta, 0.0, 2 * beta, -2.0, beta])
    real = [z.real for z in r if abs(z.imag) < 1e-9 and z.real > 0]
    return max(real) if real else None


def test_between_threshold_and_peak_the_minimiser_is_zero():
    beta = 0.6
    assert collapse_threshold(2) == pytest.approx(0.5) and beta < 3 * math.sqrt(3) / 8
    root = _largest_root_m2(beta)
    assert root is not None and root > 0.5  # what a largest-root-then-clamp routine would report
    grid = np.linspace(0.0, 5.0, 500001)
    assert grid[np.argmin(scalar_objective(grid, beta, 2))] == 0.0  # brute force: the global minimiser is 0
    assert scalar_objective(root, beta, 2) > 1.0  # the stationary point is worse than x = 0
    got = solve_scalar(beta, 2)
    assert got["x"] == 0.0 and got["collapses"] and got["local_x"] == pytest.approx(root, rel=1e-9)


def test_above_the_peak_there_is_no_root_and_the_answer_is_zero():
    beta = 0.7
    assert _largest_root_m2(beta) is None  # a root-finding routine has nothing to return here
    assert solve_scalar(beta, 2) == {"x": 0.0, "phi": 1.0, "collapses": True, "local_x": None}


def test_below_threshold_the_root_is_the_minimiser():
    beta = 0.4
    root = _largest_root_m2(beta)
    grid = np.linspace(0.0, 5.0, 500001)
    assert solve_scalar(beta, 2)["x"] == pytest.approx(root, rel=1e-9)
    assert abs(grid[np.argmin(scalar_objective(grid, beta, 2))] - root) < 2e-5
