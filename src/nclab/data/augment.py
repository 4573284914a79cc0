"""Batch-wise image augmentation on uint8 tensors (random translate-crop and horizontal flip).

Everything is done on whole batches on the batch's device with an explicit ``torch.Generator``, so
the randomness is a pure function of the generator's seed (the batch iterator seeds it from
``(seed, epoch, step)``) and never touches the global RNG.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nclab.utils.errors import NclabError


@dataclass
class Augment:
    """``crop``: pad by ``crop`` pixels (reflect) and take a random HxW window (= translate by
    -crop..crop in both axes); 0 disables. ``flip``: mirror left-right with probability 1/2."""

    crop: int = 0
    flip: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.crop, int) or isinstance(self.crop, bool) or self.crop < 0:
            raise NclabError(f"augment.crop must be a non-negative integer (pixels of padding), got {self.crop!r}")
        self.flip = bool(self.flip)

    @property
    def active(self) -> bool:
        return self.crop > 0 or self.flip

    def __call__(self, x: torch.Tensor, gen: torch.Generator, total: int | None = None, offset: int = 0) -> torch.Tensor:
        """Augment a batch ``x`` (N, C, H, W) of any dtype; ``gen`` lives on ``x.device`` (or CPU).

        ``total``/``offset``: ``x`` is rows ``offset..offset+N-1`` of a batch of ``total`` rows (one data-parallel
        rank's shard); the random numbers are drawn for all ``total`` rows and these rows keep theirs, so the
        shards together are augmented exactly as the whole batch would be."""
        if x.dim() != 4:
            raise NclabError("augmentation needs image batches (N, C, H, W); set data.augment to crop: 0, flip: false")
        n = x.shape[0] if total is None else int(total)
        # Draw all random numbers up front on CPU in a fixed order: identical across devices.
        if self.crop > 0:
            shifts = torch.randint(0, 2 * self.crop + 1, (2, n), generator=gen)
        if self.flip:
            flips = torch.rand(n, generator=gen) < 0.5
        if total is not None:
            rows = slice(offset, offset + x.shape[0])
            if self.crop > 0:
                shifts = shifts[:, rows]
            if self.flip:
                flips = flips[rows]
        if self.crop > 0:
            x = random_translate(x, shifts[0].to(x.device), shifts[1].to(x.device), self.crop)
        if self.flip:
            x = torch.where(flips.to(x.device)[:, None, None, None], x.flip(3), x)
        return x


def _reflect(i: torch.Tensor, size: int) -> torch.Tensor:
    """Reflect-pad index mapping (``torch.nn.functional.pad(mode="reflect")``), valid for |overhang| < size."""
    i = i.abs()
    return torch.where(i > size - 1, 2 * (size - 1) - i, i)


def random_translate(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, pad: int) -> torch.Tensor:
    """Per sample, the window ``[dy:dy+H, dx:dx+W]`` of the image reflect-padded by ``pad``.

    ``dy``, ``dx``: int64 (N,) in ``0..2*pad``. The padding is never materialised: the source
    index of each output pixel is reflected back into the image and the whole batch is one gather.
    """
    n, c, h, w = x.shape
    if pad >= min(h, w):
        raise NclabError(f"augment.crop={pad} must be smaller than the image side {min(h, w)}")
    rows = _reflect(dy[:, None] - pad + torch.arange(h, device=x.device), h)[:, None, :, None]  # (N,1,H,1)
    cols = _reflect(dx[:, None] - pad + torch.arange(w, device=x.device), w)[:, None, None, :]  # (N,1,1,W)
    bi = torch.arange(n, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return x[bi, ci, rows, cols]
