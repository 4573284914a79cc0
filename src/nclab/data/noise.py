"""Label noise on the training labels (config ``data.label_noise: {rate, kind, seed}``).

Exactly ``round(rate * N)`` of the N training labels are corrupted; which ones is a seeded random choice
(``numpy.random.default_rng(seed)``, independent of the run's seed and of the global RNG), and every chosen
label is changed to a *different* class:

- ``symmetric``: the new label is drawn uniformly from the other ``K - 1`` classes (same RNG);
- ``asymmetric``: class ``c`` becomes ``(c + 1) mod K`` (a fixed class-dependent flip, the usual
  "pair-flip" model).

Only the train split is corrupted; test labels stay clean. Shapes: labels (N,) int, ``K`` classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nclab.utils.errors import NclabError

KINDS = ("symmetric", "asymmetric")

__all__ = ["KINDS", "NoisyLabels", "corrupt_labels", "noise_spec"]


@dataclass(frozen=True)
class NoisyLabels:
    """``labels`` (N,) int64 after corruption, ``corrupted`` (N,) bool (True where the label was changed),
    ``clean`` (N,) int64 the labels before corruption."""

    labels: np.ndarray
    corrupted: np.ndarray
    clean: np.ndarray

    @property
    def rate(self) -> float:
        """Fraction of labels changed."""
        return float(self.corrupted.mean()) if self.corrupted.size else 0.0


def noise_spec(d: dict | None) -> tuple[float, str, int]:
    """``(rate, kind, seed)`` from the config mapping ``data.label_noise`` (None = no noise)."""
    d = dict(d or {})
    rate, kind, seed = d.get("rate", 0.0) or 0.0, d.get("kind", "symmetric"), d.get("seed", 0)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= float(rate) < 1.0:
        raise NclabError(f"data.label_noise.rate must be a fraction in [0, 1), got {rate!r}")
    if kind not in KINDS:
        raise NclabError(f"data.label_noise.kind={kind!r} is not allowed; choose one of {', '.join(KINDS)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise NclabError(f"data.label_noise.seed must be a non-negative integer, got {seed!r}")
    return float(rate), str(kind), int(seed)


def corrupt_labels(labels, num_classes: int, rate: float, kind: str = "symmetric", seed: int = 0) -> NoisyLabels:
    """Corrupt exactly ``round(rate * N)`` of ``labels`` (N,) (module docstring); deterministic in ``seed``."""
    y = np.asarray(labels)
    if y.ndim != 1:
        raise NclabError(f"labels to corrupt must be 1-D (N,), got shape {y.shape}")
    y = y.astype(np.int64)
    rate, kind, seed = noise_spec({"rate": rate, "kind": kind, "seed": seed})
    k = int(num_classes)
    if y.size and (y.min() < 0 or y.max() >= k):
        raise NclabError(f"labels must be class indices in 0..{k - 1}, got {int(y.min())}..{int(y.max())}")
    n_flip = int(round(rate * y.size))
    if n_flip and k < 2:
        raise NclabError("label noise needs at least two classes (a label can only be changed to another class)")
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(y.size, n_flip, replace=False)) if n_flip else np.zeros(0, np.int64)
    out = y.copy()
    if kind == "symmetric":
        shift = rng.integers(1, k, size=n_flip) if n_flip else np.zeros(0, np.int64)  # 1..K-1: never the same class
        out[idx] = (y[idx] + shift) % k
    else:
        out[idx] = (y[idx] + 1) % k
    mask = np.zeros(y.size, dtype=bool)
    mask[idx] = True
    return NoisyLabels(out, mask, y)
