"""Progress bars that respect ``--quiet`` / ``--json`` (both silence them)."""

from __future__ import annotations

import os
import sys
from typing import Iterable, TypeVar

T = TypeVar("T")

_QUIET = os.environ.get("NCLAB_QUIET", "") not in ("", "0")


def set_quiet(quiet: bool) -> None:
    global _QUIET
    _QUIET = bool(quiet)


def is_quiet() -> bool:
    return _QUIET


def bars_enabled(stream=None) -> bool:
    """Bars redraw one line with carriage returns: only a terminal shows that; a log file or pipe would collect
    every redraw, so there the commands' one line per epoch or stage stands alone."""
    stream = sys.stderr if stream is None else stream
    try:
        return not _QUIET and stream.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


def progress(iterable: Iterable[T] | None = None, **kwargs) -> "tqdm":  # noqa: F821
    """A tqdm bar on stderr, disabled when quiet or when stderr is not a terminal (:func:`bars_enabled`)."""
    from tqdm.auto import tqdm

    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("leave", False)
    return tqdm(iterable, disable=not bars_enabled(kwargs["file"]), **kwargs)


def say(msg: str) -> None:
    """One status line on stderr unless quiet (stdout stays clean for --json)."""
    if not _QUIET:
        print(msg, file=sys.stderr, flush=True)


def close_bars() -> None:
    """Close every open bar (an error message must start on its own line, not after a half-drawn bar)."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return
    for bar in list(getattr(tqdm, "_instances", ())):
        try:
            bar.close()
        except Exception:  # pragma: no cover - closing is best effort
            pass
