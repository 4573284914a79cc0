"""Image decoding with Pillow, optionally in a small process pool.

``Decoder`` takes chunks of encoded bytes as they are read (so reading an archive overlaps with decoding)
and hands back decoded images in submission order, so the result never depends on scheduling.

Workers are forked (Linux only). Not ``spawn``: a spawned worker re-imports the user's main script, which
re-runs an unguarded script's top-level code (e.g. a second full decode). The forked workers only run Pillow
and numpy on bytes they are sent, never locks or threads of the parent. Elsewhere decoding is inline.
"""

from __future__ import annotations

import io
import os
import sys
import warnings
from typing import Sequence

import numpy as np

from nclab.utils.errors import NclabError

CHUNK = 500
POOL_MIN_IMAGES = 2000  # decode the first images inline: a pool costs ~1-2 s to start


def decode_one(data: bytes, size: int | None = None) -> np.ndarray:
    """Encoded image bytes -> uint8 (H, W, C) with C = 1 (grey) or 3 (RGB). Raises on undecodable input.

    ``size``: resize so the shorter side is ``size`` (bicubic, antialiased when shrinking), then crop the
    central ``size`` x ``size`` square (the usual ImageNet-style evaluation transform)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        if im.mode.startswith("I;16") or im.mode == "I":
            # 16-bit grey (PNG): scale 0..65535 to 0..255 (Pillow's convert("L") clips at 255 instead)
            im = Image.fromarray((np.asarray(im, dtype=np.float64) / 257.0).round().clip(0, 255).astype(np.uint8))
        mode = "L" if im.mode in ("1", "L", "LA", "F") else "RGB"
        im = im if im.mode == mode else im.convert(mode)
        if size is not None:
            im = square_resize(im, size)
        a = np.asarray(im, dtype=np.uint8)
    return a[:, :, None] if a.ndim == 2 else a


def square_resize(im, size: int):
    """PIL image -> ``size`` x ``size``: shorter side to ``size`` (aspect kept), then the centre crop."""
    from PIL import Image

    w, h = im.size
    s = size / min(w, h)
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return im.crop((left, top, left + size, top + size))


def _die_with_parent(parent: int) -> None:
    """Pool initializer: the kernel sends this worker SIGKILL when its parent dies (Linux ``PR_SET_PDEATHSIG``),
    so a killed ``nclab`` leaves no decoder behind. If the parent died before the request took effect, exit."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # no prctl: the pool's own handling of a lost parent applies
        pass
    if os.getppid() != parent:
        os._exit(0)


def _decode_chunk(items: Sequence[bytes], size: int | None = None) -> list:
    out = []
    for b in items:
        try:
            out.append(decode_one(b, size))
        except Exception as e:  # noqa: BLE001 - reported with the file name by the caller
            out.append(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'unreadable'}")
    return out


def num_workers() -> int:
    """``$NCLAB_DATA_WORKERS`` (default 2), capped by the CPU count; <= 1 means decode in this process.
    Always 1 inside a worker process or where fork is unavailable."""
    import multiprocessing as mp

    if sys.platform != "linux" or "fork" not in mp.get_all_start_methods() or mp.parent_process() is not None:
        return 1
    try:
        n = int(os.environ.get("NCLAB_DATA_WORKERS", "2"))
    except ValueError:
        n = 2
    return max(1, min(n, os.cpu_count() or 1))


class Decoder:
    """Decode chunks of images, in a pool of ``workers`` processes (started on the first full chunk) or inline;
    with ``size`` every image is brought to ``size`` x ``size`` (see :func:`decode_one`).

    ``add(blob)`` queues one encoded image; ``results()`` returns every decoded (H, W, C) array, or an error
    string for an undecodable one, in the order they were added. Use as a context manager.
    """

    def __init__(self, workers: int | None = None, bar=None, size: int | None = None):
        self.workers = num_workers() if workers is None else workers
        self.bar = bar
        self.size = size  # see decode_one
        self._buf: list[bytes] = []
        self._jobs: list = []  # AsyncResult, or a finished list when decoded inline
        self._pool = None
        self._count = 0

    def __enter__(self) -> "Decoder":
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def _flush(self, final: bool) -> None:
        if not self._buf:
            return
        chunk, self._buf = self._buf, []
        self._count += len(chunk)
        if self.workers > 1 and (self._pool is not None or (self._count >= POOL_MIN_IMAGES and not final)):
            if self._pool is None:
                import multiprocessing as mp

                with warnings.catch_warnings():  # 3.12+ warns on fork with threads; see the module docstring
                    warnings.simplefilter("ignore", DeprecationWarning)
                    self._pool = mp.get_context("fork").Pool(self.workers, initializer=_die_with_parent,
                                                             initargs=(os.getpid(),))
            cb = (lambda res: self.bar.update(len(res))) if self.bar is not None else None
            self._jobs.append(self._pool.apply_async(_decode_chunk, (chunk, self.size), callback=cb))
        else:
            self._jobs.append(_decode_chunk(chunk, self.size))
            if self.bar is not None:
                self.bar.update(len(chunk))

    def add(self, blob: bytes) -> None:
        self._buf.append(blob)
        if len(self._buf) >= CHUNK:
            self._flush(final=False)

    def results(self) -> list:
        self._flush(final=True)
        out = []
        for job in self._jobs:
            if isinstance(job, list):
                out.extend(job)
            else:
                out.extend(job.get())
        return out


def stack_images(images: Sequence, names: Sequence[str]) -> np.ndarray:
    """Decoded (H, W, C) images -> one uint8 (N, C, H, W) array. Every image must have the same size; grey
    images are expanded to RGB when the set mixes both. Errors name the offending file."""
    n = len(images)
    out: np.ndarray | None = None
    grey = np.zeros(n, dtype=bool)
    for i, a in enumerate(images):
        if isinstance(a, str):
            raise NclabError(f"cannot decode image {names[i]} ({a}); remove or replace that file")
        if out is None:
            out = np.empty((n, 3, a.shape[0], a.shape[1]), dtype=np.uint8)
        if a.shape[:2] != out.shape[2:]:
            raise NclabError(f"image {names[i]} is {a.shape[1]}x{a.shape[0]} but {names[0]} is "
                             f"{out.shape[3]}x{out.shape[2]}; resize all images to one size")
        if a.shape[2] == 1:
            grey[i] = True
        out[i] = a.transpose(2, 0, 1)  # a grey (1, H, W) broadcasts into all three channels
    if out is None:
        return np.empty((0, 3, 0, 0), dtype=np.uint8)
    return np.ascontiguousarray(out[:, :1]) if grey.all() else out


def decode_images(blobs: Sequence[bytes], names: Sequence[str], workers: int | None = None) -> np.ndarray:
    """Decode encoded images into one uint8 (N, C, H, W) array (see :func:`stack_images`)."""
    with Decoder(workers) as dec:
        for b in blobs:
            dec.add(b)
        return stack_images(dec.results(), names)
