"""Fast in-memory batches: the whole uint8 set lives on the device as one tensor.

Per batch: index (permutation slice) -> augment on uint8 -> float, scale to 0..1, normalise
``(x/255 - mean)/std`` -> optionally channels_last. No per-sample Python, no worker processes.

Randomness is a pure function of ``(seed, epoch, step)``: the epoch's permutation comes from a
generator seeded with ``mix(seed, epoch)`` and each batch's augmentation from ``mix(seed, epoch, step)``,
so a run resumed at an epoch boundary sees exactly the same batches.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch

from nclab.data.augment import Augment
from nclab.utils.errors import NclabError

_MASK = (1 << 63) - 1


def mix_seed(*parts: int) -> int:
    """Deterministic 63-bit seed from integers (splitmix64-style; independent of PYTHONHASHSEED)."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
        h = h * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 29
    return h & _MASK


class BatchIterator:
    """Iterate ``(x_float_normalised, y)`` batches over an in-memory split.

    ``x``: uint8 (N, C, H, W) images or float (N, D) vectors; ``y``: int64 (N,).
    ``mean``/``std``: per-channel (images, on the 0..1 scale) or per-feature (vectors); ``None`` = no
    normalisation. ``len(it)`` = number of batches per epoch.
    ``shard=(rank, world)``: yield only rows ``[rank*b//world, (rank+1)*b//world)`` of each global batch of ``b``
    rows (data-parallel ranks). The global batches, their order and the augmentation drawn for every row are
    those of the unsharded iterator (``len`` is the same), so the ranks together see exactly its batches.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, *, shuffle: bool = False,
                 drop_last: bool = False, seed: int = 0, augment: Augment | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 device: str | torch.device = "cpu", channels_last: bool = False,
                 shard: tuple[int, int] | None = None):
        if x.shape[0] != y.shape[0]:
            raise NclabError(f"x has {x.shape[0]} rows but y has {y.shape[0]}; pass matching arrays")
        if batch_size < 1:
            raise NclabError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.is_image = x.dtype == torch.uint8 and x.dim() == 4
        self.x = x.to(self.device).contiguous()
        self.y = y.to(self.device, torch.int64)
        self.n = int(x.shape[0])
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last and self.n >= batch_size
        self.seed = int(seed)
        self.augment = augment if (augment is not None and augment.active) else None
        if self.augment is not None and not self.is_image:
            raise NclabError("augmentation needs image data; set data.augment to crop: 0, flip: false")
        self.channels_last = channels_last and self.is_image
        shape = (1, -1, 1, 1) if self.is_image else (1, -1)
        self.mean = None if mean is None else torch.as_tensor(mean, dtype=torch.float32, device=self.device).view(shape)
        self.std = None if std is None else torch.as_tensor(std, dtype=torch.float32, device=self.device).view(shape)
        self.epoch = 0
        if shard is not None and not (0 <= shard[0] < shard[1]):
            raise NclabError(f"shard must be (rank, world_size) with 0 <= rank < world_size, got {shard}")
        self.shard = None if shard is None or shard[1] == 1 else (int(shard[0]), int(shard[1]))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else math.ceil(self.n / self.batch_size)

    def order(self, epoch: int | None = None) -> torch.Tensor:
        """The epoch's sample order (int64 (N,) on CPU); identity when not shuffling."""
        e = self.epoch if epoch is None else epoch
        if not self.shuffle:
            return torch.arange(self.n)
        g = torch.Generator().manual_seed(mix_seed(self.seed, e))
        return torch.randperm(self.n, generator=g)

    def global_batch_size(self, step: int) -> int:
        """Rows of global batch ``step`` (all ranks together)."""
        return min(self.batch_size, self.n - step * self.batch_size)

    def _rows(self, b: int) -> tuple[int, int]:
        """This shard's rows ``[lo, hi)`` of a global batch of ``b`` rows (all of them when unsharded)."""
        if self.shard is None:
            return 0, b
        r, w = self.shard
        return r * b // w, (r + 1) * b // w

    def local_order(self, epoch: int | None = None) -> torch.Tensor:
        """The sample indices this iterator yields in an epoch, in order (int64 on CPU): :meth:`order` when
        unsharded, else this shard's rows of each global batch."""
        idx = self.order(epoch)
        if self.shard is None:
            return idx[: len(self) * self.batch_size]
        parts = []
        for step in range(len(self)):
            lo, hi = self._rows(self.global_batch_size(step))
            parts.append(idx[step * self.batch_size + lo: step * self.batch_size + hi])
        return torch.cat(parts) if parts else idx[:0]

    def prepare(self, xb: torch.Tensor) -> torch.Tensor:
        """uint8/float batch -> normalised float32 batch (no augmentation)."""
        xb = xb.float()
        if self.is_image:
            xb = xb.mul_(1.0 / 255.0)
        if self.mean is not None:
            xb = xb.sub_(self.mean).div_(self.std)
        if self.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        return xb

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        idx = self.order().to(self.device)
        for step in range(len(self)):
            sel = idx[step * self.batch_size:(step + 1) * self.batch_size]
            if self.shard is not None:
                b = int(sel.numel())
                lo, hi = self._rows(b)
                sel = sel[lo:hi]
            xb = self.x.index_select(0, sel)
            if self.augment is not None:
                g = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch, step, 0xA06))
                # a shard draws the whole global batch's augmentation and keeps its own rows' draws
                xb = self.augment(xb, g) if self.shard is None else self.augment(xb, g, total=b, offset=lo)
            yield self.prepare(xb), self.y.index_select(0, sel)
