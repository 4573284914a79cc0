"""MNIST / Fashion-MNIST from the original IDX files (raw or .gz).

A folder holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte`` (each optionally ``.gz``). ``fashion-mnist`` without a path looks in
``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``) and ``<cache>/downloads/fashion-mnist``.
Decoding is a header check plus ``np.frombuffer``, so these sets are not cached.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np

from nclab.data.types import Dataset
from nclab.utils.errors import NclabError

FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
CLASS_NAMES = {
    "mnist": [str(i) for i in range(10)],
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"],
}
DEFAULT_DIRS = {"fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")], "mnist": []}


def _find(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise NclabError(f"{folder} has no {stem}[.gz]; it needs the four IDX files "
                     f"({', '.join(FILES.values())}, raw or .gz)")


def read_idx(path: Path) -> np.ndarray:
    """One IDX file -> uint8 array of its declared shape (magic 0x0000 08 NDIM; big-endian int32 dims)."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise NclabError(f"cannot read {path} ({type(e).__name__}: {e}); re-download it") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise NclabError(f"{path} is not an unsigned-byte IDX file (bad magic number); re-download it")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise NclabError(f"{path} is truncated (header incomplete); re-download it")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    n = int(np.prod(dims))
    if len(raw) != 4 + 4 * ndim + n:
        raise NclabError(f"{path} holds {len(raw) - 4 - 4 * ndim} data bytes but its header declares {dims} = {n}; "
                         f"re-download it")
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_idx_dataset(name: str, arg: str | None, cache_dir: Path) -> Dataset:
    if arg:
        folder = Path(arg).expanduser()
        if not folder.is_dir():
            raise NclabError(f"{name} folder {folder} not found; give {name}:PATH to a folder with the IDX files")
    else:
        cands = [*DEFAULT_DIRS[name], Path(cache_dir) / "downloads" / name]
        found = [c for c in cands if c.is_dir()]
        if not found:
            extra = " or `apt-get install dataset-fashion-mnist`" if name == "fashion-mnist" else ""
            raise NclabError(f"no {name} IDX files found; put them in {cands[-1]}{extra}, or pass {name}:PATH")
        folder = found[0]
    paths = {k: _find(folder, stem) for k, stem in FILES.items()}
    arrays = {k: read_idx(p) for k, p in paths.items()}
    for split in ("train", "test"):
        x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise NclabError(f"{paths[f'{split}_x']} ({x.shape}) and {paths[f'{split}_y']} ({y.shape}) do not match: "
                             f"expected (N, H, W) images and N labels")
        if y.size and y.max() >= 10:
            raise NclabError(f"{paths[f'{split}_y']} has label {int(y.max())}; {name} labels are 0..9")
    if arrays["train_x"].shape[0] == 0:
        raise NclabError(f"{paths['train_x']} holds no images; pass the full {name} IDX files")
    if arrays["train_x"].shape[1:] != arrays["test_x"].shape[1:]:
        raise NclabError(f"train images are {arrays['train_x'].shape[1:]} but test images {arrays['test_x'].shape[1:]} "
                         f"({paths['test_x']}); both splits must have one image size")
    h = hashlib.sha256()
    for k in FILES:
        h.update(paths[k].read_bytes())
    for split in ("train", "test"):  # (N, H, W) -> (N, 1, H, W)
        arrays[f"{split}_x"] = arrays[f"{split}_x"][:, None].copy()
    return Dataset.from_arrays(name, arrays, CLASS_NAMES[name], source=f"{name}:{folder}", checksum=h.hexdigest(),
                               path=folder)
