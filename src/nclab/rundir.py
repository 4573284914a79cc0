"""The run directory: the one on-disk format every command reads and writes.

Layout of ``runs/<name>/`` (all writes atomic)::

    config.yaml        resolved config (every key, defaults filled in)
    run.json           what was run: command line, nclab/torch/python versions, device, git commit,
                       dataset source + checksum, hierarchy spec, start time
    status.json        {"status": "running"|"complete"|"paused"|"stopped_nan"|"interrupted"|"failed",
                        "message": str, "epoch": int, "wall_time_s": float, "resumed": bool}
    metrics.jsonl      one JSON object per epoch (keys: docs/architecture.md, "metrics.jsonl")
    checkpoints/       last.pt (+ epoch_XXXX.pt); loaded with weights_only=True
    results.json       final summary written by experiments (recovery accuracy, baselines, ...)
    features/          optional saved features (.npy) for plots
    report.html        written by nclab.report (+ figures/*.png)
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from nclab.utils.errors import NclabError
from nclab.utils.io import atomic_write_json, atomic_write_text, read_jsonl

STATUSES = ("running", "complete", "paused", "stopped_nan", "interrupted", "failed")


class RunDir:
    """Paths and small readers/writers for one run directory."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    # paths -------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def run_info_path(self) -> Path:
        return self.path / "run.json"

    @property
    def status_path(self) -> Path:
        return self.path / "status.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def results_path(self) -> Path:
        return self.path / "results.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def report_path(self) -> Path:
        return self.path / "report.html"

    def exists(self) -> bool:
        return self.path.is_dir()

    def is_run(self) -> bool:
        """Whether the folder holds any file a run writes (config.yaml, status.json, metrics.jsonl, results.json)."""
        return self.path.is_dir() and any(p.is_file() for p in (self.config_path, self.status_path,
                                                                  self.metrics_path, self.results_path))

    def require(self, *, run: bool = False) -> "RunDir":
        """The folder must exist (``run=True``: and be a run directory, see :meth:`is_run`)."""
        if self.path.is_file():
            raise NclabError(f"{self.path} is a file; pass a run directory (the folder a train/reproduce run wrote)")
        if not self.path.is_dir():
            raise NclabError(f"run directory {self.path} does not exist; pass the folder a train/reproduce run wrote")
        if run and not self.is_run():
            raise NclabError(f"{self.path} is not a run directory (no config.yaml, status.json, metrics.jsonl or "
                             "results.json); pass a folder that nclab train/reproduce/sweep wrote")
        return self

    # writers -----------------------------------------------------------------------------
    def write_config(self, config) -> None:
        """config.yaml: a mapping, or a typed config (anything with ``to_dict()``, e.g. nclab.train.Config)."""
        d = config.to_dict() if hasattr(config, "to_dict") else config
        atomic_write_text(self.config_path, yaml.safe_dump(d, sort_keys=False))

    def write_run_info(self, extra: dict | None = None, *, resumed: bool = False) -> None:
        """Write run.json; on a resume the first call's command line and start time are kept as
        ``first_argv`` / ``first_started`` (``argv`` / ``started`` describe the latest call)."""
        info = environment_info()
        info["argv"] = sys.argv
        info["started"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        old = self.read_run_info() if resumed else {}
        if old:
            info["first_argv"] = old.get("first_argv", old.get("argv"))
            info["first_started"] = old.get("first_started", old.get("started"))
        if extra:
            info.update(extra)
        atomic_write_json(self.run_info_path, info)

    def write_status(self, status: str, message: str = "", **fields: Any) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        old = self.read_status()
        old.update(fields)
        old.update({"status": status, "message": message})
        atomic_write_json(self.status_path, old)

    def write_results(self, results: dict) -> None:
        atomic_write_json(self.results_path, results)

    # readers -----------------------------------------------------------------------------
    def read_config(self) -> dict:
        if not self.config_path.exists():
            return {}
        return yaml.safe_load(self.config_path.read_text()) or {}

    def read_run_info(self) -> dict:
        return _read_json(self.run_info_path)

    def read_status(self) -> dict:
        return _read_json(self.status_path)

    def read_metrics(self) -> list[dict]:
        return read_jsonl(self.metrics_path)

    def read_results(self) -> dict:
        return _read_json(self.results_path)

    def check_metrics(self) -> tuple[list[dict], list[str]]:
        """metrics.jsonl read and checked: ``(good rows, problems)`` (see :func:`check_jsonl`)."""
        return check_jsonl(self.metrics_path)


def _kind(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(type(v), type(v).__name__)


def check_jsonl(path: str | os.PathLike) -> tuple[list[dict], list[str]]:
    """Read a metrics series (JSON lines) and check it against its documented form: every row an object whose
    values are numbers or null, with an integer ``epoch`` (or ``step``, theory series) >= 1 that increases from
    row to row. Returns ``(rows, problems)``: the rows that pass (a wrong-typed value is dropped from its row)
    and one line per damage, naming the file and line (NUL bytes, a line that is not JSON with lines after
    it, a non-object row, a wrong type, an epoch out of order or repeated). A torn last line (the writer was
    killed mid-line) is not damage and is skipped. A missing file gives ``([], [])``."""
    p = Path(path)
    if not p.exists():
        return [], []
    raw = p.read_bytes()
    text = raw.decode("utf-8", errors="replace")
    lines = [(i, ln) for i, ln in enumerate(text.splitlines(), 1) if ln.strip(" \t\r")]
    rows: list[tuple[int, dict]] = []
    problems: list[str] = []
    for j, (i, line) in enumerate(lines):
        where = f"{p.name} line {i}"
        if "\x00" in line:
            problems.append(f"{where}: {line.count(chr(0))} NUL bytes (the file was damaged, e.g. by a power cut)")
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if j < len(lines) - 1:  # not the torn last line of a killed writer
                problems.append(f"{where}: not valid JSON ({e.msg})")
            continue
        if not isinstance(row, dict):
            problems.append(f"{where}: {_kind(row)}, not an object")
            continue
        for k, v in list(row.items()):
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                problems.append(f"{where}: {k!r} is {_kind(v)}, expected a number or null")
                del row[k]
        rows.append((i, row))
    xkey = next((k for k in ("epoch", "step") if any(k in r for _, r in rows)), None)
    good: list[dict] = []
    seen: dict[int, int] = {}
    for i, row in rows:
        where = f"{p.name} line {i}"
        if xkey is None:
            good.append(row)
            continue
        x = row.get(xkey)
        if not isinstance(x, int) or isinstance(x, bool) or x < 1:
            problems.append(f"{where}: {xkey} is {x!r}, expected an integer >= 1")
            continue
        if x in seen:
            problems.append(f"{where}: {xkey} {x} repeats line {seen[x]}")
            continue
        if good and x < good[-1][xkey]:
            problems.append(f"{where}: {xkey} {x} comes after {xkey} {good[-1][xkey]} (out of order)")
            continue
        seen[x] = i
        good.append(row)
    return good, problems


def _read_json(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise NclabError(f"{path} is not valid JSON ({e}); delete it or rerun the command that writes it")
    if not isinstance(d, dict):
        raise NclabError(f"{path} holds a JSON {type(d).__name__}, not an object; delete it or rerun the command "
                         "that writes it")
    return d


def git_commit() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except Exception:
        return None


def environment_info() -> dict:
    import torch

    import nclab

    return {
        "nclab_version": nclab.__version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu_threads": torch.get_num_threads(),
        "git_commit": git_commit(),
    }
