"""Synthetic hierarchical Gaussian mixture: K coarse classes, each holding m fine classes.

Generative model (all draws from ``seed``)::

    coarse centre   mu_k      = coarse_sep * u_k              u_k unit vectors (orthonormal when K <= dim)
    fine centre     mu_{k,j}  = mu_k + fine_sep * v_{k,j}     v_{k,j} unit vectors (orthonormal per k when m <= dim)
    sample          x         = mu_{k,j} + noise * eps        eps ~ N(0, I_dim)

Fine label ``f = k * m + j`` (so ``coarse = f // m``). Train and test samples come from separate random
streams, so changing ``n_test`` never changes the training set.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import torch

from nclab.data.hierarchy import Hierarchy
from nclab.data.types import Dataset, Split
from nclab.utils.errors import NclabError
from nclab.utils.seed import check_seed

DEFAULTS: dict[str, float | int] = {
    "coarse": 4,
    "fine_per_coarse": 3,
    "dim": 32,
    "coarse_sep": 6.0,
    "fine_sep": 2.0,
    "noise": 1.0,
    "n_train": 100,
    "n_test": 100,
    "seed": 0,
}
_INT_KEYS = {"coarse", "fine_per_coarse", "dim", "n_train", "n_test", "seed"}


def _unit_directions(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """(n, dim) unit vectors: orthonormal if n <= dim, otherwise independent uniform directions."""
    g = rng.standard_normal((dim, max(n, 1)))
    if n <= dim:
        q, r = np.linalg.qr(g)
        q = q * np.sign(np.diag(r))  # sign fix makes the draw a deterministic function of g
        return q[:, :n].T.copy()
    return (g / np.linalg.norm(g, axis=0, keepdims=True)).T.copy()


def hierarchical_gaussian_means(coarse: int, fine_per_coarse: int, dim: int, coarse_sep: float,
                                fine_sep: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Coarse centres (K, dim) and fine centres (K*m, dim), float64, as in the module docstring."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0]))
    mu_c = coarse_sep * _unit_directions(rng, coarse, dim)
    mu_f = np.concatenate([mu_c[k] + fine_sep * _unit_directions(rng, fine_per_coarse, dim) for k in range(coarse)])
    return mu_c, mu_f


def make_hierarchical_gaussian(coarse: int = 4, fine_per_coarse: int = 3, dim: int = 32, coarse_sep: float = 6.0,
                               fine_sep: float = 2.0, noise: float = 1.0, n_per_class: int = 100, seed: int = 0,
                               stream: int = 1, return_means: bool = False):
    """Draw ``n_per_class`` samples per fine class.

    Returns ``(x, y, hierarchy)``: ``x`` float32 (N, dim) with N = coarse * fine_per_coarse * n_per_class,
    ``y`` int64 (N,) fine labels (shuffled order), ``hierarchy`` the K coarse groups (coarse = y // m).
    With ``return_means=True`` also returns ``(coarse_means (K, dim), fine_means (K*m, dim))``.
    ``stream`` selects an independent sample stream for the same centres (1 = train, 2 = test).
    """
    _check(coarse=coarse, fine_per_coarse=fine_per_coarse, dim=dim, coarse_sep=coarse_sep, fine_sep=fine_sep,
           noise=noise, n_per_class=n_per_class)
    mu_c, mu_f = hierarchical_gaussian_means(coarse, fine_per_coarse, dim, coarse_sep, fine_sep, seed)
    n_fine = coarse * fine_per_coarse
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(stream)]))
    y = np.repeat(np.arange(n_fine, dtype=np.int64), n_per_class)
    y = y[rng.permutation(y.size)]
    x = (mu_f[y] + noise * rng.standard_normal((y.size, dim))).astype(np.float32)
    h = _hierarchy(coarse, fine_per_coarse)
    if return_means:
        return x, y, h, (mu_c, mu_f)
    return x, y, h


def _hierarchy(coarse: int, m: int) -> Hierarchy:
    fine_names = [f"c{k}f{j}" for k in range(coarse) for j in range(m)]
    return Hierarchy(np.arange(coarse * m) // m, fine_names, [f"c{k}" for k in range(coarse)], spec="synthetic")


def _check(**kw) -> None:
    for key in ("coarse", "fine_per_coarse", "dim", "n_per_class"):
        if int(kw[key]) < 1:
            raise NclabError(f"synthetic: {key} must be >= 1, got {kw[key]}")
    for key in ("coarse_sep", "fine_sep", "noise"):
        if not 0 <= float(kw[key]) < float("inf"):
            raise NclabError(f"synthetic: {key} must be a finite number >= 0, got {kw[key]}")


def parse_synthetic_spec(arg: str) -> dict:
    """``k=v,k=v`` -> params dict (defaults filled). Unknown keys are errors."""
    params = dict(DEFAULTS)
    given: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in (arg or "").split(","))):
        if "=" not in item:
            raise NclabError(f"synthetic spec item '{item}' is not key=value; keys: {', '.join(DEFAULTS)}")
        k, v = (s.strip() for s in item.split("=", 1))
        if k not in DEFAULTS:
            raise NclabError(f"unknown synthetic key '{k}'; keys: {', '.join(DEFAULTS)}")
        if k in given:  # the last would silently win
            raise NclabError(f"synthetic key '{k}' is given twice ({k}={given[k]} and {k}={v}); keep one")
        given[k] = v
        try:
            params[k] = int(v) if k in _INT_KEYS else float(v)
        except ValueError:
            raise NclabError(f"synthetic key '{k}' needs a number, got '{v}'") from None
    return params


BYTES_PER_VALUE = 4 + 2 * 8  # the float32 result + two float64 (N, dim) temporaries of the split being drawn


def needed_bytes(p: dict) -> int:
    """Peak memory of :func:`load_synthetic` for params ``p``: both float32 splits, plus the float64 work of
    drawing the larger one (the centres and the label arrays are small next to it)."""
    n_fine = int(p["coarse"]) * int(p["fine_per_coarse"])
    rows = [n_fine * int(p[k]) for k in ("n_train", "n_test")]
    return int(p["dim"]) * (4 * sum(rows) + 2 * 8 * max(rows)) + 8 * sum(rows)


def available_bytes() -> int | None:
    """Memory the kernel says is available now (``MemAvailable``), else free physical pages; None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(p: dict) -> None:
    """Refuse sizes that would not fit in available memory, before anything is allocated."""
    need, have = needed_bytes(p), available_bytes()
    if have is not None and need > have:
        raise NclabError(f"synthetic: n_train={p['n_train']}, n_test={p['n_test']}, dim={p['dim']} with "
                         f"{p['coarse'] * p['fine_per_coarse']} fine classes needs about {_gib(need)} of memory, "
                         f"{_gib(have)} is available; lower n_train, n_test or dim")


def _gib(n: int) -> str:
    return f"{n / 2**30:.3g} GiB" if n >= 2**30 else f"{n / 2**20:.3g} MiB"


def load_synthetic(arg: str = "") -> Dataset:
    p = parse_synthetic_spec(arg)
    for key in ("n_train", "n_test"):  # checked here under the names the user typed
        if p[key] < 1:
            raise NclabError(f"synthetic: {key} must be >= 1 (samples per fine class), got {p[key]}")
    check_seed(p["seed"], "synthetic: seed")
    _check(coarse=p["coarse"], fine_per_coarse=p["fine_per_coarse"], dim=p["dim"], coarse_sep=p["coarse_sep"],
           fine_sep=p["fine_sep"], noise=p["noise"], n_per_class=1)
    check_memory(p)
    common = {k: p[k] for k in ("coarse", "fine_per_coarse", "dim", "coarse_sep", "fine_sep", "noise", "seed")}
    xtr, ytr, h = make_hierarchical_gaussian(n_per_class=p["n_train"], stream=1, **common)
    xte, yte, _ = make_hierarchical_gaussian(n_per_class=p["n_test"], stream=2, **common)
    canon = ",".join(f"{k}={p[k]}" for k in DEFAULTS)
    return Dataset(
        name="synthetic",
        train=Split(torch.from_numpy(xtr), torch.from_numpy(ytr)),
        test=Split(torch.from_numpy(xte), torch.from_numpy(yte)),
        class_names=list(h.fine_names),
        source=f"synthetic:{canon}",
        checksum=hashlib.sha256(canon.encode()).hexdigest(),
        hierarchy=h,
        meta={"params": p},
    )
