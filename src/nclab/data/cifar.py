"""CIFAR-10 / CIFAR-100 from the official python archives (``cifar-10-python.tar.gz``, ``cifar-100-python.tar.gz``)
or their extracted folders, verified by the official MD5s (archive, or each extracted file).

Without a path, the archive is looked for in ``<cache>/downloads/`` and downloaded there from the official
location when missing (``download=True`` and online). The pickles are read with a restricted unpickler that
only rebuilds numpy arrays, and straight from the tarfile (nothing is extracted).
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from nclab.data import cifar_meta
from nclab.data.cache import cached, file_digests, listing_checksum
from nclab.data.hierarchy import Hierarchy
from nclab.data.imagefolder import safe_member_name
from nclab.data.types import Dataset
from nclab.utils.errors import NclabError
from nclab.utils.progress import progress, say


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles dicts/lists/bytes and numpy arrays only (the CIFAR pickles need nothing else)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"), ("codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.startswith("numpy.core"):
            module = "numpy._core" + module[len("numpy.core"):] if hasattr(np, "_core") else module
        return super().find_class(module, name)


def _unpickle(data: bytes, where: str) -> dict:
    try:
        obj = _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 - any failure means a bad file
        raise NclabError(f"{where} is not a readable CIFAR pickle ({type(e).__name__}: {e}); re-download it") from None
    if not isinstance(obj, dict):
        raise NclabError(f"{where} is not a CIFAR pickle (a {type(obj).__name__}, expected a dict); re-download it")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _field(d: dict, key: str, where: str):
    if key not in d:
        raise NclabError(f"{where} has no '{key}' entry; is it the official {where.split('/')[-1]} file?")
    return d[key]


def _names(meta: dict, key: str, where: str) -> list[str]:
    return [n.decode() if isinstance(n, bytes) else str(n) for n in _field(meta, key, where)]


def _batch(d: dict, label_keys: tuple[str, ...], where: str) -> tuple[np.ndarray, list[np.ndarray]]:
    x = np.asarray(_field(d, "data", where))
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        raise NclabError(f"{where}: data is {x.dtype} {x.shape}, expected uint8 (N, 3072); re-download it")
    labels = [np.asarray(_field(d, k, where), dtype=np.int64) for k in label_keys]
    for k, y in zip(label_keys, labels):
        if y.shape != (x.shape[0],):
            raise NclabError(f"{where}: {len(y)} {k} for {x.shape[0]} images; re-download it")
    return x.reshape(-1, 3, 32, 32), labels


def _download(url: str, dest: Path, md5: str) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with urllib.request.urlopen(url, timeout=30) as r, os.fdopen(fd, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0) or None
            bar = progress(total=total, desc=f"downloading {dest.name}", unit="B", unit_scale=True)
            while block := r.read(1 << 20):
                f.write(block)
                bar.update(len(block))
            bar.close()
        got = file_digests(tmp, ("md5",))["md5"]
        if got != md5:
            raise NclabError(f"downloaded {dest.name} has MD5 {got}, expected {md5}; try again later")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _find_or_download(name: str, cache_dir: Path, download: bool) -> Path:
    info = cifar_meta.CIFAR_FILES[name]
    dl = cache_dir / "downloads"
    for cand in (dl / info["archive"], dl / info["folder"]):
        if cand.exists():
            return cand
    dest = dl / info["archive"]
    hint = f"put the official {info['archive']} at {dest} (or pass {name}:PATH)"
    if not download:
        raise NclabError(f"{info['archive']} not found and downloads are off; {hint}")
    url = cifar_meta.BASE_URL + info["archive"]
    say(f"downloading {url}")
    try:
        _download(url, dest, info["md5"])
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        reason = getattr(e, "reason", None) or e
        raise NclabError(f"cannot download {url} ({reason}); {hint}") from None
    return dest


def _read_members(archive: Path, folder: str, wanted: list[str]) -> dict[str, bytes]:
    """The wanted files of ``folder`` inside the tar, read without extracting (unsafe names refused)."""
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, mode="r|*") as tf:
            for m in tf:
                parts = safe_member_name(archive, m.name).parts
                if m.isfile() and len(parts) >= 2 and parts[-2] == folder and parts[-1] in wanted:
                    f = tf.extractfile(m)
                    out[parts[-1]] = f.read() if f is not None else b""
    except NclabError:
        raise
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        raise NclabError(f"archive {archive} is corrupt or truncated ({type(e).__name__}: {e}); "
                         "re-download it") from None
    missing = [w for w in wanted if w not in out]
    if missing:
        raise NclabError(f"archive {archive} has no {folder}/{missing[0]}; is it the official archive?")
    return out


def _folder_root(path: Path, folder: str, wanted: list[str]) -> Path:
    root = path / folder if (path / folder).is_dir() else path
    for w in wanted:
        if not (root / w).is_file():
            raise NclabError(f"{root} has no file '{w}'; give the official extracted {folder}/ folder or the archive")
    return root


def load_cifar(name: str, arg: str | None, cache_dir: Path, download: bool = True) -> Dataset:
    info = cifar_meta.CIFAR_FILES[name]
    wanted = [*info["train"], *info["test"], info["meta"]]
    path = Path(arg).expanduser() if arg else _find_or_download(name, cache_dir, download)
    if not path.exists():
        raise NclabError(f"{path} not found; give {name}:PATH to the official {info['archive']} "
                         "or its extracted folder")
    if path.is_file():
        digests = file_digests(path, ("sha256", "md5"))
        if digests["md5"] != info["md5"]:
            raise NclabError(f"{path} has MD5 {digests['md5']}, not the official {info['md5']} of {info['archive']}; "
                             f"re-download it")
        checksum = digests["sha256"]
        root = None
    else:
        root = _folder_root(path, info["folder"], wanted)
        checksum = listing_checksum(root, wanted)

    def build():
        if root is None:
            blobs = _read_members(path, info["folder"], wanted)
            where = {w: f"{path}:{info['folder']}/{w}" for w in wanted}
        else:
            blobs = {}
            for w in wanted:  # the cache key is the listing, so verify the bytes here, once
                data = (root / w).read_bytes()
                got = hashlib.md5(data).hexdigest()
                if got != info["file_md5"][w]:
                    raise NclabError(f"{root / w} has MD5 {got}, not the official {info['file_md5'][w]}; "
                                     "re-download it")
                blobs[w] = data
            where = {w: str(root / w) for w in wanted}
        return _decode_cifar(name, blobs, where, info)

    arrays, meta = cached(cache_dir, name, checksum, build)
    hier = None
    if "fine_to_coarse" in meta:
        hier = Hierarchy(np.asarray(meta["fine_to_coarse"]), meta["class_names"], meta["coarse_names"], spec="cifar100")
    return Dataset.from_arrays(name, arrays, meta["class_names"], source=f"{name}:{path}", checksum=checksum,
                               path=path, hierarchy=hier)


def _decode_cifar(name: str, blobs: dict[str, bytes], where: dict[str, str], info: dict):
    meta_d = _unpickle(blobs[info["meta"]], where[info["meta"]])
    keys = ("labels",) if name == "cifar10" else ("fine_labels", "coarse_labels")
    if name == "cifar10":
        class_names = _names(meta_d, "label_names", where[info["meta"]])
        coarse_names: list[str] = []
    else:
        class_names = _names(meta_d, "fine_label_names", where[info["meta"]])
        coarse_names = _names(meta_d, "coarse_label_names", where[info["meta"]])
    arrays: dict[str, np.ndarray] = {}
    pairs = set()
    for split in ("train", "test"):
        xs, ys = [], []
        for f in info[split]:
            x, labels = _batch(_unpickle(blobs[f], where[f]), keys, where[f])
            y = labels[0]
            if y.size and (y.min() < 0 or y.max() >= len(class_names)):
                raise NclabError(f"{where[f]}: label {int(y.max())} outside 0..{len(class_names) - 1}; re-download it")
            if name == "cifar100":
                pairs |= set(zip(y.tolist(), labels[1].tolist()))
            xs.append(x)
            ys.append(y)
        arrays[f"{split}_x"] = np.concatenate(xs)
        arrays[f"{split}_y"] = np.concatenate(ys)
    meta = {"class_names": class_names}
    if name == "cifar100":
        f2c = {}
        for f, c in sorted(pairs):
            if f in f2c and f2c[f] != c:
                raise NclabError(f"{where[info['train'][0]]}: fine class {f} ({class_names[f]}) has two coarse labels")
            f2c[f] = c
        if len(f2c) != len(class_names):
            missing = sorted(set(range(len(class_names))) - set(f2c))[0]
            raise NclabError(f"CIFAR-100 data has no image of fine class {missing} ({class_names[missing]}); "
                             "re-download it")
        meta["fine_to_coarse"] = [f2c[f] for f in range(len(class_names))]
        meta["coarse_names"] = coarse_names
    return arrays, meta
