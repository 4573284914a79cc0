"""On-disk cache of decoded datasets, keyed by the checksum of the source.

Layout: ``<cache_dir>/datasets/<kind>-<checksum[:32]>-v<FORMAT>/`` holding ``{train,test}_{x,y}.npy`` and
``meta.json``. An entry is written into a hidden temp folder next to it and renamed into place in one step,
so a crash never leaves a half-written entry that could be read back. ``meta.json`` also records the CRC-32 of
each array's bytes, checked on every load (~50 ms for CIFAR-10's 150 MB), so an entry whose data was damaged
after it was written (a zero-filled block after a power cut, a disk error, a stray write) is rebuilt, not served.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import zlib
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from nclab.utils.errors import NclabError
from nclab.utils.progress import say

FORMAT = 2  # 2: meta.json records "crc32" of each array (entries of format 1 are rebuilt once)
ARRAYS = ("train_x", "train_y", "test_x", "test_y")
STATS = {"hits": 0, "misses": 0}  # per process; tests use it to see hit/miss
_CHUNK = 1 << 20


def file_digests(path: str | os.PathLike, algos: Iterable[str] = ("sha256",)) -> dict[str, str]:
    """Hex digests of a file's bytes, all computed in one read pass."""
    hs = {a: hashlib.new(a) for a in algos}
    try:
        with open(path, "rb") as f:
            while block := f.read(_CHUNK):
                for h in hs.values():
                    h.update(block)
    except OSError as e:
        raise NclabError(f"cannot read {path}: {e.strerror or e}") from None
    return {a: h.hexdigest() for a, h in hs.items()}


def listing_checksum(root: str | os.PathLike, files: Iterable[str | os.PathLike]) -> str:
    """sha256 over the sorted (relative path, size, mtime_ns) of ``files`` under ``root``: a cheap folder checksum
    that changes whenever a file is added, removed, resized or rewritten."""
    root = Path(root)
    h = hashlib.sha256()
    for rel in sorted(str(Path(f).relative_to(root)) if Path(f).is_absolute() else str(f) for f in files):
        st = (root / rel).stat()
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def entry_dir(cache_dir: str | os.PathLike, kind: str, checksum: str) -> Path:
    return Path(cache_dir) / "datasets" / f"{kind}-{checksum[:32]}-v{FORMAT}"


def _load_entry(d: Path) -> tuple[dict[str, np.ndarray], dict] | None:
    meta_path = d / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        arrays = {k: np.load(d / f"{k}.npy", allow_pickle=False) for k in ARRAYS}
        if not isinstance(meta, dict) or not isinstance(meta.get("class_names", []), list):
            raise ValueError("meta.json is not a mapping with a class_names list")
        for split in ("train", "test"):
            if len(arrays[f"{split}_x"]) != len(arrays[f"{split}_y"]):
                raise ValueError(f"{split}_x and {split}_y differ in length")
        crcs = meta.get("crc32")
        if not isinstance(crcs, dict):
            raise ValueError("meta.json has no crc32 checksums")
        for k in ARRAYS:
            if crcs.get(k) != _crc32(arrays[k]):
                raise ValueError(f"{k}.npy does not match its checksum (damaged on disk)")
        meta = {k: v for k, v in meta.items() if k != "crc32"}  # the same meta a fresh build returns
    except (OSError, ValueError, EOFError) as e:  # EOFError: an empty .npy
        say(f"cache entry {d} is unreadable ({e}); rebuilding it")
        shutil.rmtree(d, ignore_errors=True)
        return None
    return arrays, meta


def _crc32(a: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(a).view(np.uint8).reshape(-1))


BUILDING = ".building"  # inside a temp folder: flock-ed by the process writing it, for as long as it lives


def _clean_stale_temps(parent: Path, name: str, max_age_s: float = 24 * 3600) -> None:
    """Remove temp folders left by a process killed mid-write (never read, only take space): those of entry
    ``name`` whose writer is gone (its lock on ``.building`` is free) at once, any other after ``max_age_s``."""
    now = time.time()
    for p in parent.glob(".tmp-*"):
        try:
            if p.name.startswith(f".tmp-{name}-") and _writer_gone(p):
                shutil.rmtree(p, ignore_errors=True)
            elif now - p.stat().st_mtime > max_age_s:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def _writer_gone(tmp: Path) -> bool:
    """Whether the process that made temp folder ``tmp`` has exited (the kernel dropped its lock)."""
    import fcntl

    try:
        fd = os.open(tmp / BUILDING, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:  # made but not yet locked (a split second) or an old format: wait for the age rule
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False  # a live writer holds it
    finally:
        os.close(fd)
    return True


def _hold_temp(tmp: Path) -> int:
    """Lock ``tmp/.building`` for this process (released by the kernel if it is killed)."""
    import fcntl

    # locked under another name, then renamed: a cleaner never finds ``.building`` unlocked while we live
    fd = os.open(tmp / (BUILDING + ".new"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.rename(tmp / (BUILDING + ".new"), tmp / BUILDING)
    return fd


def cached(cache_dir: str | os.PathLike, kind: str, checksum: str,
           build: Callable[[], tuple[dict[str, np.ndarray], dict]]) -> tuple[dict[str, np.ndarray], dict]:
    """Arrays and meta for ``(kind, checksum)``: from the cache if present, else ``build()`` and store them."""
    d = entry_dir(cache_dir, kind, checksum)
    hit = _load_entry(d)
    if hit is not None:
        STATS["hits"] += 1
        return hit
    STATS["misses"] += 1
    arrays, meta = build()
    missing = set(ARRAYS) - set(arrays)
    if missing:  # pragma: no cover - programming error in a reader
        raise ValueError(f"cache build for {kind} is missing {sorted(missing)}")
    try:
        d.parent.mkdir(parents=True, exist_ok=True)
        _clean_stale_temps(d.parent, d.name)
        for old in range(1, FORMAT):  # the same data in an older entry format is never read again
            shutil.rmtree(d.with_name(f"{kind}-{checksum[:32]}-v{old}"), ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{d.name}-", dir=d.parent))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; a cache entry is readable like any other file
        held = _hold_temp(tmp)
    except OSError as e:
        say(f"note: cannot write the data cache in {d.parent} ({e.strerror or e}); continuing without it")
        return arrays, meta
    meta_on_disk = {**meta, "crc32": {k: _crc32(arrays[k]) for k in ARRAYS}}
    try:
        for k in ARRAYS:
            with open(tmp / f"{k}.npy", "wb") as f:
                np.save(f, np.ascontiguousarray(arrays[k]), allow_pickle=False)
                f.flush()
                os.fsync(f.fileno())  # on disk before the rename publishes the entry
        with open(tmp / "meta.json", "w") as f:
            f.write(json.dumps(meta_on_disk, indent=1))
            f.flush()
            os.fsync(f.fileno())
        os.unlink(tmp / BUILDING)  # not part of the entry (the descriptor keeps the lock until the rename)
        try:
            os.rename(tmp, d)  # atomic: the entry appears complete or not at all
        except OSError:
            if not (d / "meta.json").is_file():  # a concurrent writer did not win the race either
                raise
    except OSError as e:
        say(f"note: could not store the data cache entry {d} ({e.strerror or e})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        os.close(held)
    return arrays, meta
