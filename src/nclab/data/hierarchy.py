"""Label hierarchies: a validated fine -> coarse mapping with names for both levels."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from nclab.utils.errors import NclabError

KINDS = ("group", "split")


@dataclass
class Hierarchy:
    """A fine -> coarse label mapping.

    ``fine_to_coarse[f]`` is the coarse class of fine class ``f``. Every fine class belongs to exactly one
    coarse class and no coarse class is empty (checked on construction; errors name the offending entry).
    ``kind`` says what the two levels are: ``"group"`` (the fine level is the data's labels, grouped into
    superclasses: mod:K, adjacent:K, cifar100, file:, ...) or ``"split"`` (``split:M``: the coarse level is the
    data's true classes, the fine level pseudo classes made by splitting each, see ``split_labels``).
    """

    fine_to_coarse: np.ndarray
    fine_names: list[str]
    coarse_names: list[str]
    spec: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    kind: str = "group"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise NclabError(f"hierarchy kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        f2c = np.asarray(self.fine_to_coarse)
        if f2c.ndim != 1 or f2c.size == 0:
            raise NclabError("hierarchy needs a non-empty 1-D fine->coarse mapping")
        if not np.issubdtype(f2c.dtype, np.integer):
            raise NclabError(f"hierarchy mapping must hold integers, got {f2c.dtype}")
        self.fine_to_coarse = f2c.astype(np.int64)
        self.fine_names = [str(n) for n in self.fine_names]
        self.coarse_names = [str(n) for n in self.coarse_names]
        if len(self.fine_names) != len(f2c):
            raise NclabError(f"hierarchy has {len(f2c)} fine classes but {len(self.fine_names)} fine names")
        k = len(self.coarse_names)
        for f, c in enumerate(self.fine_to_coarse):
            if not 0 <= c < k:
                raise NclabError(f"fine class {f} ({self.fine_names[f]}) maps to coarse index {c}, outside 0..{k - 1}")
        counts = np.bincount(self.fine_to_coarse, minlength=k)
        for c in range(k):
            if counts[c] == 0:
                raise NclabError(f"coarse class {c} ({self.coarse_names[c]}) has no fine class; remove it or map one to it")

    @property
    def num_fine(self) -> int:
        return len(self.fine_to_coarse)

    @property
    def num_coarse(self) -> int:
        return len(self.coarse_names)

    def coarse_of(self, y):
        """Coarse labels (same shape) for fine labels ``y`` (any shape; numpy array or torch tensor; same type
        back). Fine labels must be integer class indices ``0..num_fine-1`` (a -1 would silently wrap to the last
        class)."""
        n = len(self.fine_to_coarse)
        try:
            import torch
        except ImportError:  # pragma: no cover
            torch = None
        tensor = torch is not None and isinstance(y, torch.Tensor)
        if tensor:
            integer, size = not (y.is_floating_point() or y.is_complex() or y.dtype == torch.bool), y.numel()
        else:
            y = np.asarray(y)
            integer, size = np.issubdtype(y.dtype, np.integer), y.size
        if size:
            if not integer:
                raise NclabError(f"fine labels must be integer class indices, got dtype {y.dtype}")
            lo, hi = int(y.min()), int(y.max())
            if lo < 0 or hi >= n:
                raise NclabError(f"fine label {lo if lo < 0 else hi} is outside 0..{n - 1} ({n} fine classes in this "
                                 "hierarchy)")
        return torch.as_tensor(self.fine_to_coarse, device=y.device)[y] if tensor else self.fine_to_coarse[y]

    def fine_classes(self, c: int) -> list[int]:
        """Fine classes under coarse class ``c``, in increasing order."""
        return [int(f) for f in np.flatnonzero(self.fine_to_coarse == c)]

    def to_dict(self) -> dict:
        """JSON-ready form (``Hierarchy.from_dict`` reads it back; ``--hierarchy H.json`` takes it)."""
        return {
            "spec": self.spec,
            "fine_to_coarse": self.fine_to_coarse.tolist(),
            "fine_names": list(self.fine_names),
            "coarse_names": list(self.coarse_names),
            "meta": dict(self.meta),
            "kind": self.kind,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Hierarchy":
        return cls(
            np.asarray(d["fine_to_coarse"], dtype=np.int64),
            list(d["fine_names"]),
            list(d["coarse_names"]),
            d.get("spec", ""),
            dict(d.get("meta", {})),
            # a dict written before hierarchies recorded their kind: a split one carried meta["split"]
            d.get("kind") or ("split" if dict(d.get("meta", {})).get("split") else "group"),
        )

    @classmethod
    def from_mapping(cls, fine_to_coarse: Sequence[int], fine_names: Sequence[str], spec: str = "",
                     coarse_names: Sequence[str] | None = None) -> "Hierarchy":
        """Build with coarse names made by joining the fine names under each coarse class."""
        f2c = np.asarray(fine_to_coarse, dtype=np.int64)
        k = int(f2c.max()) + 1 if f2c.size else 0
        if coarse_names is None:
            coarse_names = ["+".join(fine_names[f] for f in np.flatnonzero(f2c == c)) or f"coarse{c}" for c in range(k)]
        return cls(f2c, list(fine_names), list(coarse_names), spec)
