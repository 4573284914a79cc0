"""Atomic writes: temp file in the same folder + ``os.replace``, so a crash never leaves half a file."""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

from nclab.utils.errors import NclabError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _atomic(path: str | os.PathLike, write: Callable[[Any], None], mode: str) -> Path:
    """Write through a temp file in the same folder, then rename; an OSError names ``path`` (the file being
    written), never the hidden temp file, and a disk-full error from a write/fsync (which has no file name)
    gets it too."""
    path = Path(path)
    try:
        return _atomic_write(path, write, mode)
    except OSError as e:
        if e.errno is None:
            raise
        raise type(e)(e.errno, e.strerror or str(e), str(path)) from None


def _atomic_write(path: Path, write: Callable[[Any], None], mode: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


_TEMP_NAME = re.compile(r"\..+\.[A-Za-z0-9_]{8}\.tmp")  # what _atomic's mkstemp names look like


def remove_stale_temps(folder: str | os.PathLike) -> int:
    """Delete the temp files that atomic writes under ``folder`` (recursively) left when their process was
    killed mid-write; they are never read and a checkpoint's can be ~100 MB. Only for folders no other process
    is writing to (a run being resumed or overwritten). Returns how many were removed."""
    n = 0
    for p in Path(folder).rglob(".*.tmp"):
        if p.is_file() and _TEMP_NAME.fullmatch(p.name):
            try:
                p.unlink()
                n += 1
            except OSError:
                pass
    return n


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return _atomic(path, lambda f: f.write(data), "wb")


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return _atomic(path, lambda f: f.write(text), "w")


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, sort_keys=False, default=_json_default) + "\n")


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


def atomic_save_npy(path: str | os.PathLike, array) -> Path:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return atomic_write_bytes(path, buf.getvalue())


def torch_load(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True`` (never unpickle arbitrary objects)."""
    import warnings

    import torch

    # torch warns (pickle protocol, legacy format) before it raises on a file that is no checkpoint; the caller
    # turns the exception into one error line, which the warnings would otherwise precede
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.load(path, map_location=map_location, weights_only=True)


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSON-lines file; a torn last line (crash mid-write) is ignored, a bad line with rows after it is
    damage (not a crash) and raises :class:`NclabError` rather than silently dropping the later rows."""
    rows = []
    p = Path(path)
    if not p.exists():
        return rows
    lines = [(i, ln.strip()) for i, ln in enumerate(p.read_text().splitlines(), 1) if ln.strip()]
    for j, (i, line) in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if j == len(lines) - 1:  # torn last line: the writer died mid-line
                break
            raise NclabError(f"{p} line {i} is not valid JSON ({e}) and later lines follow: the file is damaged; "
                             "restore it or rerun the run") from None
    return rows


def json_clean(obj: Any) -> Any:
    """JSON-safe copy: numpy -> python, non-finite floats -> None (JSON has no NaN/inf)."""
    import math

    import numpy as np

    if isinstance(obj, dict):
        return {k: json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_clean(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
