"""Read a run directory for the report, tolerating anything missing or unreadable.

Everything here is best effort: a file that is absent gives an empty value and a file that cannot be
parsed is recorded in ``RunData.problems`` (shown in the report) instead of raising, so a report can
always be written for a run that crashed, stopped on NaN or was interrupted.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from nclab.rundir import Results, RunDir, RunInfo, check_jsonl

# Keys of metrics.jsonl that are bookkeeping, not curves.
X_KEYS = ("epoch", "step")


@dataclass
class Series:
    """Curves of one run: ``x`` (n,) and ``values[key]`` (n,) float arrays (NaN where a row lacks the key)."""

    xkey: str
    x: np.ndarray
    values: dict[str, np.ndarray]

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def last(self, key: str) -> float | None:
        """Last finite value of ``key`` (None if it never had one)."""
        v = self.values.get(key)
        if v is None:
            return None
        finite = np.flatnonzero(np.isfinite(v))
        return float(v[finite[-1]]) if finite.size else None


@dataclass
class RunData:
    """Everything the report reads from one run directory."""

    path: Path
    name: str
    config: dict = field(default_factory=dict)
    info: RunInfo = field(default_factory=RunInfo)  # run.json, typed (rundir.RunInfo)
    res: Results = field(default_factory=Results)  # results.json, typed (rundir.Results)
    status: dict = field(default_factory=dict)
    series: Series | None = None
    extra_series: dict[str, Series] = field(default_factory=dict)  # other *.jsonl files (e.g. theory `step` series)
    checkpoints: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    damage: list[str] = field(default_factory=list)  # of problems, those that are damaged data files

    # run.json / results.json in their current form (``to_dict``; {} where the file is absent or unreadable): what
    # the sections look dotted keys up in
    run_info: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)

    @property
    def features_dir(self) -> Path:
        return self.path / "features"

    @property
    def recorded_status(self) -> str:
        """The status status.json records ("unknown" without one)."""
        return str(self.status.get("status") or "unknown")

    @property
    def status_name(self) -> str:
        """``recorded_status``, or "damaged" where a data file of the run is damaged (see ``damage``)."""
        return "damaged" if self.damage else self.recorded_status

    @property
    def title(self) -> str:
        return str(self.res.experiment or self.config.get("name") or self.name)


def _try(problems: list[str], what: str, fn, default):
    try:
        return fn()
    except Exception as e:  # a report never dies on one bad file
        problems.append(f"{what}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        return default


def _as_float(v: Any) -> float:
    if isinstance(v, bool) or v is None:
        return math.nan
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str) and v.lower() in ("nan", "inf", "-inf", "infinity", "-infinity"):
        return float(v.lower().replace("infinity", "inf"))
    return math.nan


def to_series(rows: list[dict]) -> Series | None:
    """Turn metrics rows into arrays; keys are every numeric key seen in any row, x is ``epoch`` or ``step``."""
    rows = [r for r in rows if isinstance(r, dict)]
    if not rows:
        return None
    xkey = next((k for k in X_KEYS if any(k in r for r in rows)), "")
    keys: list[str] = []
    seen = set()
    for r in rows:
        for k, v in r.items():
            if k in seen or k in X_KEYS:
                continue
            if (isinstance(v, (int, float)) and not isinstance(v, bool)) or v is None or (
                isinstance(v, str) and not math.isnan(_as_float(v))
            ):
                seen.add(k)
                keys.append(k)
    if xkey:
        x = np.array([_as_float(r.get(xkey)) for r in rows])
    else:
        xkey, x = "row", np.arange(1, len(rows) + 1, dtype=float)
    values = {k: np.array([_as_float(r.get(k)) for r in rows]) for k in keys}
    values = {k: v for k, v in values.items() if (~np.isnan(v)).any()}  # drop keys that never had a number
    return Series(xkey, x, values)


def _read_yaml(path: Path) -> dict:
    if not path.exists():
        return {}
    data = yaml.safe_load(path.read_text())
    return data if isinstance(data, dict) else {}


def _read_json(path: Path) -> dict:
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return data if isinstance(data, dict) else {}


def _checkpoint_names(path: Path) -> list[str]:
    if not path.is_dir():
        return []
    names = sorted(p.name for p in path.iterdir() if p.suffix == ".pt")
    return names


def last_good_checkpoint(checkpoints: list[str]) -> str | None:
    """Newest numbered checkpoint (``epoch_XXXX.pt``), else ``last.pt``, else None."""
    numbered = sorted((int(m.group(1)), n) for n in checkpoints if (m := re.match(r"epoch_(\d+)\.pt$", n)))
    if numbered:
        return numbered[-1][1]
    return "last.pt" if "last.pt" in checkpoints else None


def load_run(path: str | Path, *, missing_ok: bool = False) -> RunData:
    """Read one run directory (never raises on missing or corrupt files inside it; see ``RunData.problems``).

    ``path`` must be a run directory (:meth:`RunDir.require`): a mistyped path read as a run with no results.
    ``missing_ok=True`` (sub-runs listed in results.json) reads whatever is there, possibly nothing.
    """
    rd = RunDir(path) if missing_ok else RunDir(path).require(run=True)
    data = RunData(path=rd.path, name=rd.name or str(rd.path))
    p = data.problems
    data.config = _try(p, "config.yaml", lambda: _read_yaml(rd.config_path), {})
    data.info, data.run_info = _typed(p, rd.run_info_path, RunInfo)
    data.status = _try(p, "status.json", lambda: _read_json(rd.status_path), {})
    n0 = len(p)
    data.res, data.results = _typed(p, rd.results_path, Results)
    newer = [x for x in p[n0:] if "newer than this nclab reads" in x]  # not damage: an nclab upgrade reads it
    p += check_results(data.results)
    data.series = _try(p, "metrics.jsonl", lambda: to_series(_checked(rd.metrics_path, p)), None)
    if rd.path.is_dir():
        for f in sorted(rd.path.glob("*.jsonl")):
            if f.name != "metrics.jsonl":
                s = _try(p, f.name, lambda f=f: to_series(_checked(f, p)), None)
                if s is not None and len(s):
                    data.extra_series[f.stem] = s
    data.damage = [x for x in p[n0:] if x not in newer]
    data.checkpoints = _try(p, "checkpoints/", lambda: _checkpoint_names(rd.checkpoints), [])
    fdir = rd.path / "features"
    if fdir.is_dir():  # the feature plots skip what they cannot read: say so here (headers only, cheap)
        for f in sorted(fdir.glob("*.npy")):
            _try(p, f"features/{f.name}", lambda f=f: np.load(f, mmap_mode="r", allow_pickle=False), None)
        if (fdir / "centroids.npz").exists():
            _try(p, "features/centroids.npz", lambda: np.load(fdir / "centroids.npz", allow_pickle=False).close(), None)
    return data


def _typed(problems: list[str], path: Path, schema):
    """``(typed, its current-form dict)`` of run.json / results.json (``schema``: RunInfo / Results); an absent,
    unreadable or too new file gives ``(schema(), {})``, the last two with a line in ``problems``."""
    raw = _try(problems, path.name, lambda: _read_json(path), {})
    obj = _try(problems, path.name, lambda: schema.from_dict(raw), None) if raw else None
    return (obj, obj.to_dict()) if obj is not None else (schema(), {})


def _checked(path: Path, problems: list[str]) -> list[dict]:
    rows, found = check_jsonl(path)
    problems += found
    return rows


def _number_or_null(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def check_results(res: dict) -> list[str]:
    """Problems with the sections of results.json the report draws (docs/architecture.md, "results.json"): each
    names the key. An absent section is no problem; one of the wrong shape is, since the report leaves it out."""
    out: list[str] = []

    def bad(key: str, what: str) -> None:
        out.append(f"results.json: {key} {what}")

    from nclab.report.rows import RESULT_ROWS, SPLIT_ROWS  # the numbers the results table shows

    for key in dict.fromkeys(k for k, _, _ in RESULT_ROWS + SPLIT_ROWS):
        v = lookup(res, key)
        if isinstance(v, dict) and "test_acc" in v:
            v, key = v["test_acc"], f"{key}.test_acc"
        if not isinstance(v, dict) and not _number_or_null(v):
            bad(f"'{key}'", f"is {type(v).__name__}, expected a number or null")
    for key in ("recovery", "probe", "baselines", "paper"):
        if key in res and not isinstance(res[key], dict):
            bad(f"'{key}'", f"is {type(res[key]).__name__}, expected an object")
    if "tables" in res:
        t = res["tables"]
        if not isinstance(t, list):
            bad("'tables'", f"is {type(t).__name__}, expected a list of tables")
        else:
            for i, tab in enumerate(t):
                if not isinstance(tab, dict) or not isinstance(tab.get("rows"), list) or not isinstance(
                        tab.get("columns", []), list):
                    bad(f"'tables' item {i + 1}", "is not an object with 'columns' and 'rows' lists")
                elif any(not isinstance(r, list) for r in tab["rows"]):
                    bad(f"'tables' item {i + 1}", "has a row that is not a list")
    if "grid" in res:
        g = res["grid"]
        if (not isinstance(g, dict) or not isinstance(g.get("cells", []), list)
                or not isinstance(g.get("axes", {}), dict)):
            bad("'grid'", "is not an object with an 'axes' object and a 'cells' list")
        elif any(not isinstance(c, dict) for c in g.get("cells", [])):
            bad("'grid'.'cells'", "holds an item that is not an object")
    if "subruns" in res:
        sr = res["subruns"]
        if not isinstance(sr, list) or any(not isinstance(x, str) for x in sr):
            bad("'subruns'", "is not a list of folder names")
    if "recovery" in res and isinstance(res["recovery"], dict):
        per = res["recovery"].get("per_superclass")
        if per is not None and (not isinstance(per, list) or any(not isinstance(x, dict) for x in per)):
            bad("'recovery.per_superclass'", "is not a list of objects")
    return out


def lookup(d: Any, dotted: str) -> Any:
    """``lookup(results, "recovery.test_acc")``; None where any part is missing."""
    cur = d
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def scalar(v: Any) -> float | None:
    """A number from a results value (a number, or a dict holding ``test_acc``); None otherwise."""
    if isinstance(v, dict) and "test_acc" in v:
        v = v["test_acc"]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)
