"""One writer per run directory: an OS advisory lock on ``<run>/run.lock``.

``with run_lock(path):`` takes an exclusive ``flock`` on ``<path>/run.lock`` without waiting. A second writer
(``train``, ``--resume``, ``--force``, ``reproduce``, a sweep cell) in another process fails at once with
:class:`NclabError` naming the holder's pid and host; readers (``report``, ``metrics --run``) never take it. The
kernel drops the lock when the holding process exits, however it exits (SIGKILL included), so a killed run
never leaves a stale lock: the file may remain, but unlocked.

The lock belongs to the open file, not to the process: reading ``run.lock`` elsewhere in the holding process
does not drop it (as it would a POSIX record lock). Forked children would share it, so they close their copy
right after the fork (a decoder worker outliving a killed parent cannot keep the run locked), and the
descriptor is close-on-exec. On NFS Linux maps ``flock`` onto the server's byte-range locks; see
docs/architecture.md ("Run directory lock").

Within one process the lock is re-entrant: a command that holds it may call code that takes it again (the
command holds it across training and the report; :meth:`Trainer.fit` takes it for Python callers).

Distributed runs: only the writing rank (rank 0) should call :func:`run_lock`; the other ranks skip it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

from nclab.utils.errors import NclabError

LOCK_NAME = "run.lock"

_held: dict[str, list] = {}  # realpath of the lock file -> [fd, depth, folder created by the lock]
_guard = threading.Lock()


def _forget_in_child() -> None:
    """A forked child closes its copies of the lock descriptors: it neither holds nor keeps the lock."""
    for fd, *_ in _held.values():
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_forget_in_child)


def holder(path: str | os.PathLike) -> dict:
    """What ``<path>/run.lock`` says about its last holder (``pid``, ``host``, ``started``); {} if unreadable.
    Only informative: whether the lock is held is the kernel's answer, not this file's."""
    try:
        d = json.loads((Path(path) / LOCK_NAME).read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}


def _busy(path: Path) -> NclabError:
    h = holder(path)
    who = f"pid {h.get('pid', '?')} on host {h.get('host', '?')}"
    since = f" (since {h['started']})" if h.get("started") else ""
    return NclabError(f"run directory {path} is in use by another nclab process: {who}{since}; wait for it to "
                      "finish or stop it, or choose another run directory")


def _acquire(path: Path) -> int:
    lock = path / LOCK_NAME
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise NclabError(f"cannot create the run directory {path}: {e.strerror or e}; check that its parent is a "
                         "writable folder") from None
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as e:
            raise NclabError(f"cannot open the lock file {lock}: {e.strerror or e}; check that {path} is a "
                             "writable folder") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EACCES, errno.EAGAIN, errno.EWOULDBLOCK):
                raise _busy(path) from None
            raise NclabError(f"cannot lock {lock}: {e.strerror or e}; the file system may not support locks "
                             "(see docs/architecture.md, run directory lock)") from None
        # the file we locked must still be the one at the path (a releasing holder unlinks it)
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                       "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n"
    os.ftruncate(fd, 0)
    os.pwrite(fd, info.encode(), 0)
    return fd


@contextlib.contextmanager
def run_lock(path: str | os.PathLike) -> Iterator[Path]:
    """Hold the run directory's lock for the ``with`` block (created with the folder if missing); raise
    :class:`NclabError` at once if another process holds it. Yields the lock file's path."""
    path = Path(path)
    key = os.path.realpath(path / LOCK_NAME)
    with _guard:
        entry = _held.get(key)
        if entry is not None:
            entry[1] += 1
        else:
            created = not path.is_dir()
            entry = _held[key] = [_acquire(path), 1, created]
    try:
        yield path / LOCK_NAME
    finally:
        with _guard:
            entry[1] -= 1
            if entry[1] == 0:
                del _held[key]
                # unlink while still locked, then close: a process waiting on the old file finds it
                # replaced and retries on the new one (see the samestat check above)
                with contextlib.suppress(OSError):
                    os.unlink(key)
                os.close(entry[0])
                if entry[2]:  # a folder made only for the lock (the run failed before writing) goes too
                    with contextlib.suppress(OSError):
                        os.rmdir(path)


def holds_lock(path: str | os.PathLike) -> bool:
    """Whether this process holds the lock of run directory ``path``."""
    return os.path.realpath(Path(path) / LOCK_NAME) in _held
