"""Reading user arrays from disk: ``.npy`` files, or one array of an ``.npz`` archive.

An ``.npz`` holding one array is read as that array; one holding several needs its name, as ``PATH.npz:NAME``
or with ``key``. Nothing is unpickled (``allow_pickle=False``).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from nclab.utils.errors import NclabError


def split_key(spec: str) -> tuple[Path, str | None]:
    """``"a.npz:feats"`` -> (Path("a.npz"), "feats"); any other path -> (Path(spec), None)."""
    head, sep, tail = str(spec).rpartition(":")
    if sep and head.lower().endswith(".npz") and tail and "/" not in tail:
        return Path(head), tail
    return Path(spec), None


def load_array(spec: str, what: str, key: str | None = None) -> np.ndarray:
    """The array at ``spec`` (``.npy``, ``.npz`` or ``.npz:NAME``); ``what`` names the option in errors
    (e.g. "--features"). Any unreadable input raises one NclabError line naming the file and the fix."""
    path, inline = split_key(spec)
    key = inline or key
    if not path.is_file():
        raise NclabError(f"{what} {path} does not exist; pass a .npy file (or .npz / .npz:NAME)")
    try:
        data = np.load(path, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise NclabError(f"{what} {path} holds Python objects (pickled); save plain numeric arrays with "
                             "numpy.save") from None
        raise NclabError(f"{what} {path} is not a readable .npy/.npz array ({e}); save it with numpy.save") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise NclabError(f"{what} {path} is not a readable .npy/.npz array ({type(e).__name__}); save it with "
                         "numpy.save") from None
    if isinstance(data, np.ndarray):
        if key is not None:
            raise NclabError(f"{what} {path} is a single .npy array; drop the key {key!r}")
        return data
    with data:  # an NpzFile
        names = list(data.files)
        if key is None:
            if len(names) != 1:
                raise NclabError(f"{what} {path} holds {len(names)} arrays ({', '.join(names[:8]) or 'none'}); "
                                 f"name one as {path}:NAME")
            key = names[0]
        if key not in names:
            raise NclabError(f"{what} {path} has no array {key!r}; it holds {', '.join(names[:8]) or 'none'}")
        try:
            return np.asarray(data[key])
        except ValueError as e:
            raise NclabError(f"{what} {path}:{key} cannot be read without unpickling ({e}); save plain numeric "
                             "arrays with numpy.savez") from None
