"""``load_dataset(spec)``: parse a source spec and dispatch to the right reader.

Spec syntax: ``NAME[:ARG]`` where NAME is one of ``cifar10, cifar100, imagefolder, mnist, fashion-mnist,
digits, synthetic``; ARG is a path (for file sources) or ``k=v,...`` (for ``synthetic``). A path may start with
``$NCLAB_DATA`` (or ``${NCLAB_DATA}``): the data folder, :func:`data_root` (the shipped configs name their data
that way, so they hold no machine's own path).
"""

from __future__ import annotations

import os
from pathlib import Path

from nclab.data.types import Dataset
from nclab.utils.errors import NclabError

SOURCES = ("cifar10", "cifar100", "imagefolder", "mnist", "fashion-mnist", "digits", "synthetic")


DATA_ENV = "NCLAB_DATA"


def data_root() -> Path:
    """The data folder: ``$NCLAB_DATA``, else ``data`` under the working directory."""
    env = os.environ.get(DATA_ENV, "").strip()
    return Path(env).expanduser() if env else Path("data")


def expand_data_path(arg: str) -> str:
    """``$NCLAB_DATA/x`` / ``${NCLAB_DATA}/x`` -> ``<data_root()>/x``; ``~`` expanded; other paths unchanged."""
    for var in ("${" + DATA_ENV + "}", "$" + DATA_ENV):
        if arg.startswith(var):
            rest = arg[len(var):].lstrip("/" + os.sep)
            return str(data_root() / rest) if rest else str(data_root())
    return os.path.expanduser(arg) if arg.startswith("~") else arg


# the CIFAR-10 copy the shipped configs, the demo and the theory runs read by default (docs/data.md)
CIFAR10_COPY = "imagefolder:$NCLAB_DATA/cifar10-jpeg.tar.gz"


def default_cifar10() -> str | None:
    """:data:`CIFAR10_COPY` when that file exists under :func:`data_root`, else None."""
    return CIFAR10_COPY if Path(expand_data_path(CIFAR10_COPY.partition(":")[2])).is_file() else None


def default_cache_dir() -> Path:
    """``$NCLAB_CACHE`` or ``~/.cache/nclab``."""
    env = os.environ.get("NCLAB_CACHE", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "nclab"


def parse_spec(spec: str) -> tuple[str, str]:
    """``'name:arg'`` -> ``(name, arg)``; the name is lower-cased, ``fashion_mnist`` accepted for ``fashion-mnist``."""
    if not isinstance(spec, str) or not spec.strip():
        raise NclabError(f"empty data source; use one of: {', '.join(SOURCES)} (e.g. imagefolder:PATH)")
    name, _, arg = spec.strip().partition(":")
    name = name.strip().lower().replace("_", "-")
    if name not in SOURCES:
        raise NclabError(f"unknown data source '{name}' in '{spec}'; use one of: {', '.join(SOURCES)}")
    return name, arg.strip()


def load_dataset(spec: str, *, cache_dir: str | os.PathLike | None = None, download: bool = True,
                 image_size: int | None = None) -> Dataset:
    """Load a dataset from a source spec (see docs/data.md). Decoded images are cached in ``cache_dir``
    (default ``$NCLAB_CACHE`` or ``~/.cache/nclab``) keyed by the source's checksum. ``image_size``
    (imagefolder only): resize every image's shorter side to it and centre-crop a square."""
    name, arg = parse_spec(spec)
    if image_size is not None and name != "imagefolder":
        raise NclabError(f"image_size resizes imagefolder sources only; {name} images have a fixed size "
                         "(drop data.image_size / --image-size)")
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if name not in ("synthetic", "digits") and arg:
        arg = expand_data_path(arg)
    if name == "synthetic":
        from nclab.data.synthetic import load_synthetic

        return load_synthetic(arg)
    if name == "digits":
        if arg:
            raise NclabError(f"'digits' takes no argument, got 'digits:{arg}'")
        from nclab.data.small import load_digits_dataset

        return load_digits_dataset()
    if name in ("cifar10", "cifar100"):
        from nclab.data.cifar import load_cifar

        return load_cifar(name, arg or None, cache, download=download)
    if name == "imagefolder":
        if not arg:
            raise NclabError("imagefolder needs a path: imagefolder:PATH (a folder or a .tar/.tar.gz archive)")
        from nclab.data.imagefolder import load_imagefolder

        return load_imagefolder(arg, cache, image_size)
    from nclab.data.idx import load_idx_dataset

    return load_idx_dataset(name, arg or None, cache)
