"""The run directory: the one on-disk format every command reads and writes.

Layout of ``runs/<name>/`` (all writes atomic)::

    config.yaml        resolved config (every key, defaults filled in)
    run.json           what was run (:class:`RunInfo`): command line, nclab/torch/python versions, device, git
                       commit, dataset source + checksum, hierarchy, start time
    status.json        {"status": "running"|"complete"|"paused"|"stopped_nan"|"interrupted"|"failed",
                        "message": str, "epoch": int, "wall_time_s": float, "resumed": bool}
    metrics.jsonl      one JSON object per epoch (keys: docs/architecture.md, "metrics.jsonl")
    checkpoints/       last.pt (+ epoch_XXXX.pt); loaded with weights_only=True
    results.json       final summary written by experiments (:class:`Results`: recovery accuracy, baselines, ...)
    features/          optional saved features (.npy) for plots
    baseline/          an experiment's fine-label baseline run (a run directory of its own)
    report.html        written by nclab.report (+ figures/*.png)

run.json and results.json carry a ``schema_version`` (:data:`RunInfo.SCHEMA_VERSION`,
:data:`Results.SCHEMA_VERSION`); ``RunInfo.from_dict`` / ``Results.from_dict`` (or :func:`read_run_info` /
:func:`read_results`) read every version up to the current one (a file without the key is version 0) and
refuse a newer one with one line.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping

import yaml

from nclab.utils.errors import NclabError
from nclab.utils.io import atomic_write_json, atomic_write_text, read_jsonl

if TYPE_CHECKING:
    from nclab.data.hierarchy import Hierarchy

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
    # sub-folders that experiments and the report add to a run directory (see the layout above)
    OUTPUT_DIRS = ("features", "figures", "baseline")

    def clear_outputs(self) -> None:
        """Delete what a run wrote (metrics, checkpoints, results, report and :attr:`OUTPUT_DIRS`) before the run
        starts over in the same folder; config.yaml, run.json and status.json are rewritten by the new run."""
        import shutil

        for p in [self.metrics_path, self.checkpoints / "last.pt", *self.checkpoints.glob("epoch_*.pt"),
                  self.results_path, self.report_path]:
            p.unlink(missing_ok=True)
        for sub in self.OUTPUT_DIRS:
            if (self.path / sub).is_dir():
                shutil.rmtree(self.path / sub)

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
        atomic_write_json(self.run_info_path, RunInfo.from_dict({"schema_version": RunInfo.SCHEMA_VERSION,
                                                                  **info}).to_dict())

    def write_status(self, status: str, message: str = "", **fields: Any) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        old = self.read_status()
        old.update(fields)
        old.update({"status": status, "message": message})
        atomic_write_json(self.status_path, old)

    def write_results(self, results: "dict | Results") -> None:
        """Write results.json: every key of ``results`` plus ``schema_version`` (the dict is not changed). A dict
        without ``schema_version`` holds current keys; one read from an older file goes through
        :func:`read_results` first (it upgrades it)."""
        res = results if isinstance(results, Results) else Results.from_dict(
            {"schema_version": Results.SCHEMA_VERSION, **results})
        atomic_write_json(self.results_path, res.to_dict())

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


# ---- schemas of run.json and results.json ---------------------------------------------------------------------


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_dict(v: Any) -> bool:
    return isinstance(v, dict)


def _is_list(v: Any) -> bool:
    return isinstance(v, list)


def _is_str_list(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _core(check: Callable[[Any], bool], *, parse: Callable[[Any], Any] | None = None,
          dump: Callable[[Any], Any] | None = None) -> Any:
    """A field of a file's typed core: ``check`` says whether a value has the documented type (``parse`` turns it
    into the field's value, ``dump`` back into JSON). None = absent."""
    return field(default=None, metadata={"check": check, "parse": parse, "dump": dump})


# results.json "ratios": (key, numerator, denominator), each a dotted results.json key (same recipe, same budget)
RATIOS = (
    ("recovered_over_fine_trained", "recovery.test_acc", "baselines.fine_trained.test_acc"),
    ("pursuit_over_fine_trained", "recovery_pursuit.test_acc", "baselines.fine_trained.test_acc"),
    ("recovered_over_probe", "recovery.test_acc", "probe.test_acc"),
    ("oracle_recovered_over_oracle_probe", "recovery.oracle_test_acc", "probe.oracle_test_acc"),
)


def recovery_ratios(res: dict) -> dict[str, float]:
    """Recovered fine-label test accuracy relative to its supervised references (paper A's claim is relative:
    recovery "nearly matches" the same network trained on the fine labels). Keys of :data:`RATIOS` whose two
    accuracies are both in ``res`` (and the denominator > 0): ``recovered_over_fine_trained`` = recovery (predicted
    routing) / the fine-trained baseline's test accuracy; ``pursuit_over_fine_trained`` the same for the
    projection-pursuit split; ``recovered_over_probe`` = recovery / supervised linear probe, both with predicted
    routing; ``oracle_recovered_over_oracle_probe`` = both routed by the true superclass. Split runs: none."""
    if res.get("recovery", {}).get("kind") == "split":
        return {}

    def get(key: str):
        v: Any = res
        for part in key.split("."):
            v = v.get(part) if isinstance(v, dict) else None
        return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    out = {}
    for name, num, den in RATIOS:
        a, b = get(num), get(den)
        if a is not None and b is not None and b > 0:
            out[name] = float(a) / float(b)
    return out


def _ratios_of_v0(d: dict) -> dict | None:
    """results.json written before it had ``ratios``: the ratios from the accuracies it holds."""
    if "ratios" in d or not isinstance(d.get("recovery"), dict):
        return None
    return recovery_ratios(d) or None


# What a version-0 file (no ``schema_version``) needs to read as the current version: per file, (current key,
# its value made from the old file, or None where there is nothing to add). The one place old key names live;
# the report and the other readers see current keys only. Version 0 run.json and results.json used the current
# key names throughout (the git history of every writer shows no rename), so the table holds what version 0
# lacks: results.json ``ratios`` (derived from the accuracies). run.json ``hierarchy`` dicts without ``kind``
# (a split one carried ``meta.split``) are read by :meth:`Hierarchy.from_dict`.
_LEGACY_KEYS: dict[str, tuple[tuple[str, Callable[[dict], Any]], ...]] = {
    "run.json": (),
    "results.json": (("ratios", _ratios_of_v0),),
}


class _Schema:
    """Shared ``from_dict`` / ``to_dict`` of the typed file schemas: core fields (``_core``) plus ``extra``."""

    SCHEMA_VERSION: ClassVar[int]
    FILE: ClassVar[str]

    @classmethod
    def _core_fields(cls):
        return [f for f in fields(cls) if "check" in f.metadata]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        """Read a file's dict: any version up to :attr:`SCHEMA_VERSION` (none = version 0, upgraded through
        ``_LEGACY_KEYS``); a newer version raises :class:`NclabError` (one line). A core key whose value is null
        or not of the documented type stays verbatim in ``extra`` (its field None), as does every other key, so
        ``to_dict`` gives every key back."""
        if not isinstance(d, Mapping):
            raise NclabError(f"{cls.FILE} holds a JSON {type(d).__name__}, not an object")
        d = dict(d)
        version = d.pop("schema_version", 0)
        if not _is_int(version) or version < 0:
            raise NclabError(f"{cls.FILE}: schema_version is {version!r}, expected an integer >= 0")
        if version > cls.SCHEMA_VERSION:
            raise NclabError(f"{cls.FILE} has schema_version {version}, newer than this nclab reads "
                             f"({cls.SCHEMA_VERSION}); upgrade nclab to read it")
        if version == 0:
            for key, make in _LEGACY_KEYS[cls.FILE]:
                if key not in d and (v := make(d)) is not None:
                    d[key] = v
        kw: dict[str, Any] = {}
        for f in cls._core_fields():
            if f.name in d and d[f.name] is not None and f.metadata["check"](d[f.name]):
                v = d.pop(f.name)
                kw[f.name] = f.metadata["parse"](v) if f.metadata["parse"] else v
        return cls(**kw, extra=d, file_version=version)

    def to_dict(self) -> dict[str, Any]:
        """The file's JSON object, current version: ``schema_version``, the core keys set, then ``extra``."""
        out: dict[str, Any] = {"schema_version": self.SCHEMA_VERSION}
        for f in self._core_fields():
            v = getattr(self, f.name)
            if v is not None:
                out[f.name] = f.metadata["dump"](v) if f.metadata["dump"] else v
        out.update(self.extra)
        return out

    def __eq__(self, other: object) -> bool:  # by content (a Hierarchy holds an array); file_version aside
        return type(other) is type(self) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]


def _parse_hierarchy(v: Any) -> "Hierarchy | str":
    if isinstance(v, str):
        return v
    from nclab.data.hierarchy import Hierarchy

    try:
        return Hierarchy.from_dict(v)
    except (KeyError, TypeError, ValueError, NclabError) as e:
        raise NclabError(f"run.json: hierarchy is not a valid hierarchy ({type(e).__name__}: {e})") from None


def _dump_hierarchy(v: "Hierarchy | str") -> Any:
    return v if isinstance(v, str) else v.to_dict()


def _is_hierarchy(v: Any) -> bool:
    return isinstance(v, str) or (isinstance(v, dict) and "fine_to_coarse" in v)


@dataclass(frozen=True, eq=False)
class RunInfo(_Schema):
    """run.json: what was run (written by :meth:`RunDir.write_run_info`: the environment, then the command's own
    keys). ``hierarchy``: a training run's whole label hierarchy (:class:`Hierarchy`, with its ``kind``); a sweep
    folder, which trains nothing itself, records the spec string it passed on. Keys not listed are in ``extra``."""

    SCHEMA_VERSION: ClassVar[int] = 1
    FILE: ClassVar[str] = "run.json"

    # environment (every run.json)
    nclab_version: str | None = _core(_is_str)
    torch_version: str | None = _core(_is_str)
    python_version: str | None = _core(_is_str)
    platform: str | None = _core(_is_str)
    cuda_device: str | None = _core(_is_str)
    cpu_threads: int | None = _core(_is_int)
    git_commit: str | None = _core(_is_str)
    argv: list[str] | None = _core(_is_str_list)
    started: str | None = _core(_is_str)
    first_argv: list[str] | None = _core(_is_str_list)  # a resumed run: the first call's
    first_started: str | None = _core(_is_str)
    # what the command ran (training runs: the trainer; theory / sweep folders: experiment)
    experiment: str | None = _core(_is_str)
    device: str | None = _core(_is_str)
    dataset: str | None = _core(_is_str)  # the dataset's name
    source: str | None = _core(_is_str)  # the data source it was loaded from (config data.source resolved)
    checksum: str | None = _core(_is_str)
    num_classes: int | None = _core(_is_int)
    hierarchy: "Hierarchy | str | None" = _core(_is_hierarchy, parse=_parse_hierarchy, dump=_dump_hierarchy)
    labels: str | None = _core(_is_str)  # the labels trained on: "coarse" | "fine"
    n_train: int | None = _core(_is_int)
    n_test: int | None = _core(_is_int)
    resumed_from_epoch: int | None = _core(_is_int)
    extra: dict[str, Any] = field(default_factory=dict)
    file_version: int = field(default=SCHEMA_VERSION, compare=False)  # the version the file was written in

    @property
    def hierarchy_spec(self) -> str | None:
        """The hierarchy's spec string (``mod:5``, ``split:2``, ...), None without one."""
        h = self.hierarchy
        return h if isinstance(h, str) else (h.spec or None) if h is not None else None


@dataclass(frozen=True, eq=False)
class Results(_Schema):
    """results.json: the common typed core of what experiments write (keys: docs/architecture.md,
    "results.json"); the nested blocks (``recovery``, ``baselines``, ...) stay mappings. ``hierarchy`` and
    ``source`` are the spec strings of the experiment's config. Other keys (theory settings, ...) are in
    ``extra``."""

    SCHEMA_VERSION: ClassVar[int] = 1
    FILE: ClassVar[str] = "results.json"

    experiment: str | None = _core(_is_str)
    recipe: str | None = _core(_is_str)
    hierarchy: str | None = _core(_is_str)
    source: str | None = _core(_is_str)
    paper: dict | None = _core(_is_dict)  # the paper's numbers, keyed as the results table
    coarse_test_acc: float | None = _core(_is_num)
    net_test_acc: float | None = _core(_is_num)  # on the labels the net was trained on
    true_class_test_acc: float | None = _core(_is_num)  # split runs
    recovery: dict | None = _core(_is_dict)
    pseudo_recovery: dict | None = _core(_is_dict)
    recovery_pursuit: dict | None = _core(_is_dict)
    probe: dict | None = _core(_is_dict)
    baselines: dict | None = _core(_is_dict)
    ratios: dict | None = _core(_is_dict)
    final_metrics: dict | None = _core(_is_dict)
    tables: list | None = _core(_is_list)
    grid: dict | None = _core(_is_dict)
    subruns: list | None = _core(_is_list)
    analysis_of: dict | None = _core(_is_dict)
    train_time_s: float | None = _core(_is_num)
    wall_time_s: float | None = _core(_is_num)  # the experiment's last write adds it
    extra: dict[str, Any] = field(default_factory=dict)
    file_version: int = field(default=SCHEMA_VERSION, compare=False)

    def recovery_groups(self) -> "Hierarchy | None":
        """The fine -> coarse grouping the recovery recorded (``recovery.per_superclass`` with
        ``recovery.fine_names``), None where it recorded none or it is not a valid hierarchy."""
        from nclab.data.hierarchy import Hierarchy

        per = (self.recovery or {}).get("per_superclass")
        if not isinstance(per, list) or not per or not all(isinstance(s, dict) for s in per):
            return None
        try:
            f2c = {int(f): int(s.get("coarse", i)) for i, s in enumerate(per) for f in s.get("fine") or []}
            nf, nc = max(f2c) + 1, max(f2c.values()) + 1
            names = {int(s.get("coarse", i)): str(s.get("name") or "") for i, s in enumerate(per)}
            fine_names = [str(n) for n in (self.recovery or {}).get("fine_names") or []]
            fine_names += [str(f) for f in range(len(fine_names), nf)]
            return Hierarchy([f2c.get(f, -1) for f in range(nf)], fine_names[:nf],
                             [names.get(c) or f"coarse {c}" for c in range(nc)])
        except (TypeError, ValueError, NclabError):
            return None


def recovery_hierarchy(info: RunInfo, results: Results) -> "Hierarchy | None":
    """The fine -> coarse grouping of the labels a run's recovery used: run.json's hierarchy (a ``split`` one:
    its true classes, the coarse level, recovered in one group); a run with no hierarchy recorded (trained on
    its own labels, or an older folder without run.json): the grouping results.json's recovery recorded."""
    h = info.hierarchy
    if h is not None and not isinstance(h, str):
        if h.kind == "split":
            import numpy as np

            from nclab.data.hierarchy import Hierarchy

            return Hierarchy(np.zeros(h.num_coarse, np.int64), list(h.coarse_names), ["all"], spec="global")
        return h
    return results.recovery_groups()


def _schema_file(path: str | os.PathLike, name: str) -> Path:
    p = Path(path)
    return p / name if p.is_dir() else p


def read_run_info(path: str | os.PathLike) -> RunInfo:
    """run.json of the run directory ``path`` (or the file itself) as :class:`RunInfo`; no file gives an empty one."""
    return RunInfo.from_dict(_read_json(_schema_file(path, "run.json")))


def read_results(path: str | os.PathLike) -> Results:
    """results.json of the run directory ``path`` (or the file itself) as :class:`Results`; no file: empty."""
    return Results.from_dict(_read_json(_schema_file(path, "results.json")))
