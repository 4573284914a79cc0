"""The clock ``train.time_limit_s`` counts on: from the start of the ``nclab`` command when the CLI runs (so
one limit bounds every training run of e.g. ``reproduce``: coarse run and baseline together), else from
each Trainer's construction (Python API)."""

from __future__ import annotations

import time

_command_start: float | None = None


def mark_command_start() -> None:
    """Called by ``nclab.cli.main`` as its first step."""
    global _command_start
    _command_start = time.perf_counter()


def clear_command_start() -> None:
    global _command_start
    _command_start = None


def command_start() -> float | None:
    """``time.perf_counter()`` at the start of the current CLI command, or None outside the CLI."""
    return _command_start
