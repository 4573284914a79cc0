"""Image decoding with Pillow, optionally in a small process pool.

Workers are started with ``spawn`` (no fork of a process that may hold threads) and receive chunks of raw
encoded bytes; results come back in submission order, so the sample order never depends on scheduling.
"""

from __future__ import annotations

import io
import os
from typing import Sequence

import numpy as np

from nclab.utils.errors import NclabError
from nclab.utils.progress import progress

POOL_MIN_IMAGES = 2000  # below this a pool costs more to start than it saves
CHUNK = 500


def decode_one(data: bytes) -> np.ndarray:
    """Encoded image bytes -> uint8 (H, W, C) with C = 1 (grey) or 3 (RGB). Raises on undecodable input."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        mode = "L" if im.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB"
        a = np.asarray(im.convert(mode), dtype=np.uint8)
    return a[:, :, None] if a.ndim == 2 else a


def _decode_chunk(items: Sequence[bytes]) -> list:
    out = []
    for b in items:
        try:
            out.append(decode_one(b))
        except Exception as e:  # noqa: BLE001 - reported with the file name by the caller
            out.append(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    return out


def num_workers() -> int:
    """``$NCLAB_DATA_WORKERS`` (default 2), capped by the CPU count; <= 1 means decode in this process."""
    try:
        n = int(os.environ.get("NCLAB_DATA_WORKERS", "2"))
    except ValueError:
        n = 2
    return max(1, min(n, os.cpu_count() or 1))


def decode_images(blobs: Sequence[bytes], names: Sequence[str], desc: str = "decoding images") -> np.ndarray:
    """Decode all images into one uint8 (N, C, H, W) array. Every image must have the same size; grey images
    are expanded to RGB when the set mixes both. Errors name the offending file."""
    n = len(blobs)
    chunks = [blobs[i : i + CHUNK] for i in range(0, n, CHUNK)]
    workers = num_workers() if n >= POOL_MIN_IMAGES else 1
    out: np.ndarray | None = None
    grey = np.zeros(n, dtype=bool)
    bar = progress(total=n, desc=desc, unit="img")
    pool = None
    try:
        if workers > 1:
            import multiprocessing as mp

            pool = mp.get_context("spawn").Pool(workers)
            results = pool.imap(_decode_chunk, chunks)
        else:
            results = map(_decode_chunk, chunks)
        i = 0
        for res in results:
            for a in res:
                if isinstance(a, str):
                    raise NclabError(f"cannot decode image {names[i]} ({a}); remove or replace that file")
                if out is None:
                    h, w = a.shape[:2]
                    out = np.empty((n, 3, h, w), dtype=np.uint8)
                if a.shape[:2] != out.shape[2:]:
                    raise NclabError(f"image {names[i]} is {a.shape[1]}x{a.shape[0]} but {names[0]} is "
                                     f"{out.shape[3]}x{out.shape[2]}; resize all images to one size")
                if a.shape[2] == 1:
                    grey[i] = True
                    out[i] = a[:, :, 0][None]
                else:
                    out[i] = a.transpose(2, 0, 1)
                i += 1
            bar.update(len(res))
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
    if out is None:
        return np.empty((0, 3, 0, 0), dtype=np.uint8)
    if grey.all():
        return np.ascontiguousarray(out[:, :1])
    return out
