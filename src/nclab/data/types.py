"""Dataset containers shared by every source."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from nclab.data.hierarchy import Hierarchy


@dataclass
class Split:
    """One split: ``x`` uint8 (N, C, H, W) for images or float32 (N, D); ``y`` int64 (N,) fine labels."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass
class Dataset:
    """A loaded dataset: train/test splits with the finest true labels, names and provenance."""

    name: str
    train: Split
    test: Split
    class_names: list[str]
    source: str = ""
    checksum: str = ""
    hierarchy: Hierarchy | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_arrays(cls, name: str, arrays: dict, class_names, *, source: str, checksum: str, path,
                    hierarchy: Hierarchy | None = None) -> "Dataset":
        """From numpy ``arrays`` with keys ``train_x, train_y, test_x, test_y`` (as the cache stores them)."""
        import numpy as np

        def split(s: str) -> Split:
            return Split(torch.from_numpy(arrays[f"{s}_x"]), torch.from_numpy(np.asarray(arrays[f"{s}_y"], np.int64)))

        return cls(name=name, train=split("train"), test=split("test"), class_names=list(class_names),
                   source=source, checksum=checksum, hierarchy=hierarchy, meta={"path": str(path)})

    @property
    def is_image(self) -> bool:
        return self.train.x.dtype == torch.uint8 and self.train.x.dim() == 4

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std of the train split (0..1 scale for images; per-feature for vectors)."""
        x = self.train.x
        if self.is_image:
            # exact: per-channel histogram of the 256 byte values (fast, and no float copy of the whole set)
            v = torch.arange(256, dtype=torch.float64) / 255.0
            mean, std = [], []
            for c in range(x.shape[1]):
                h = torch.bincount(x[:, c].reshape(-1).cpu(), minlength=256).to(torch.float64)
                n = h.sum()
                m = (h * v).sum() / n
                mean.append(float(m))
                std.append(float(((h * (v - m) ** 2).sum() / n).sqrt()))
            return mean, std
        xf = x.to(torch.float64)
        return xf.mean(0).tolist(), xf.std(0).clamp_min(1e-12).tolist()
