"""Export metrics rows to TensorBoard, MLflow and Weights & Biases (each an optional extra, imported lazily).

Every logger has ``log_metrics({key: float}, step)`` and ``close()``; :class:`~nclab.track.CollapseTracker`
(``loggers=[...]``) and nclab's own trainer (config ``train.loggers``, :mod:`nclab.train.trainer`) call them
once per metrics row.

* :class:`TensorBoardLogger` (``pip install nclab[tensorboard]``): scalars with ``torch.utils.tensorboard``,
  and at ``close()`` the across-epoch NC1 figure (``nc/nc1_across_epochs``) of every ``nc.*.nc1`` key;
* :class:`MLflowLogger` (``pip install nclab[mlflow]``): one MLflow run; ``tracking_uri`` such as
  ``file:/path/mlruns`` keeps it in MLflow's local file store (MLflow 3 wants ``MLFLOW_ALLOW_FILE_STORE=true``
  for it: set for the process when a ``file:`` URI is given) and ``sqlite:///mlflow.db`` in a database;
* :class:`WandbLogger` (``pip install nclab[wandb]``): one wandb run, ``mode="offline"`` by default (no network).

Config (nclab's trainer)::

    train:
      loggers: {tensorboard: {log_dir: null}, mlflow: {tracking_uri: null, experiment: nclab}}

``null`` paths default to ``<run_dir>/tensorboard`` and ``file:<run_dir>/mlruns``.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

from nclab.utils.extras import require
from nclab.utils.errors import NclabError


def _finite(metrics: dict) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if math.isfinite(float(v)):
            out[str(k)] = float(v)
    return out


class TensorBoardLogger:
    """Scalars into TensorBoard event files under ``log_dir``; the NC1 curves as a figure at :meth:`close`."""

    def __init__(self, log_dir: str | Path, *, figures: bool = True):
        tb = require("torch.utils.tensorboard")
        self.log_dir = Path(log_dir)
        self.writer = tb.SummaryWriter(log_dir=str(self.log_dir))
        self.figures = figures
        self.history: dict[str, list[tuple[int, float]]] = {}

    def log_metrics(self, metrics: dict, step: int) -> None:
        for k, v in _finite(metrics).items():
            self.writer.add_scalar(k, v, global_step=int(step))
            if k.startswith("nc.") and k.endswith(".nc1"):
                self.history.setdefault(k, []).append((int(step), v))
        self.writer.flush()

    def figure(self):
        """Matplotlib figure of every ``nc.*.nc1`` series against the step (log scale), or None."""
        if not self.history:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.6))
        for k, pts in sorted(self.history.items()):
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=k)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("NC1")
        ax.set_title("NC1 across epochs")
        ax.legend(fontsize=7)
        fig.tight_layout()
        return fig

    def close(self) -> None:
        if self.figures:
            fig = self.figure()
            if fig is not None:
                last = max(p[0] for pts in self.history.values() for p in pts)
                self.writer.add_figure("nc/nc1_across_epochs", fig, global_step=last, close=True)
        self.writer.close()


# MLflow keys allow letters, digits, _ - . space / ; anything else (the ':' of fc:input) becomes '_'
_MLFLOW_BAD = re.compile(r"[^\w\-. /]")


class MLflowLogger:
    """One MLflow run: ``log_metrics`` at each step. ``tracking_uri`` (e.g. ``file:/tmp/mlruns``) selects the
    store (default: MLflow's own setting); ``run_id`` after construction."""

    def __init__(self, tracking_uri: str | None = None, experiment: str = "nclab", run_name: str | None = None,
                 params: dict | None = None):
        self.mlflow = require("mlflow")
        if tracking_uri is not None and str(tracking_uri).startswith("file:"):
            # a file: URI is an explicit choice of MLflow's local file store, which MLflow 3 keeps behind this opt-in
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = self.mlflow.tracking.MlflowClient(tracking_uri=tracking_uri)
        exp = self.client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(experiment)
        self.run_id = self.client.create_run(exp_id, run_name=run_name).info.run_id
        for k, v in (params or {}).items():
            self.client.log_param(self.run_id, mlflow_key(k), str(v)[:500])

    def log_metrics(self, metrics: dict, step: int) -> None:
        from mlflow.entities import Metric
        import time

        ts = int(time.time() * 1000)
        batch = [Metric(mlflow_key(k), v, ts, int(step)) for k, v in _finite(metrics).items()]
        for i in range(0, len(batch), 1000):  # MLflow's batch limit
            self.client.log_batch(self.run_id, metrics=batch[i : i + 1000])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


def mlflow_key(key: str) -> str:
    """The MLflow metric name for an nclab key (``:`` and other disallowed characters -> ``_``)."""
    return _MLFLOW_BAD.sub("_", str(key))


class WandbLogger:
    """One wandb run (``mode="offline"`` by default: written under ``dir``, synced later with ``wandb sync``)."""

    def __init__(self, project: str = "nclab", *, dir: str | Path | None = None, mode: str = "offline",
                 name: str | None = None, config: dict | None = None):
        wandb = require("wandb")
        if mode not in ("offline", "online", "disabled"):
            raise NclabError(f"wandb mode must be offline, online or disabled, got {mode!r}")
        self.run = wandb.init(project=project, dir=None if dir is None else str(dir), mode=mode, name=name,
                              config=config or {}, reinit=True)

    def log_metrics(self, metrics: dict, step: int) -> None:
        self.run.log(_finite(metrics), step=int(step))

    def close(self) -> None:
        self.run.finish()


KINDS = {"tensorboard": TensorBoardLogger, "mlflow": MLflowLogger, "wandb": WandbLogger}
MODULES = {"tensorboard": "torch.utils.tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


def _normalise(spec: Any) -> dict:
    if spec is None:
        return {}
    if isinstance(spec, (list, tuple)):
        spec = {k: None for k in spec}
    if not isinstance(spec, dict):
        raise NclabError(f"train.loggers must be a list of kinds or a mapping {{kind: {{options}}}} "
                         f"({', '.join(KINDS)}), got {spec!r}")
    for kind, kw in spec.items():
        if kind not in KINDS:
            raise NclabError(f"unknown logger {kind!r} in train.loggers; use {', '.join(KINDS)}")
        if kw is not None and kw is not False and not isinstance(kw, dict):
            raise NclabError(f"train.loggers.{kind} must be a mapping of options or null, got {kw!r}")
    return {k: v for k, v in spec.items() if v is not False}


def check_loggers(spec: Any) -> None:
    """Validate ``train.loggers`` and import each framework (:class:`MissingExtra` names the pip extra)."""
    for kind in _normalise(spec):
        require(MODULES[kind])


def build_loggers(spec: Any, run_dir: str | Path | None = None, name: str | None = None) -> list[Any]:
    """``train.loggers`` -> logger objects. ``spec``: ``{kind: {kwargs} | null | false}`` or a list of kinds;
    kinds ``tensorboard`` / ``mlflow`` / ``wandb``. Paths left out go under ``run_dir``."""
    out = []
    for kind, kw in _normalise(spec).items():
        kw = dict(kw or {})
        base = Path(run_dir) if run_dir is not None else Path(".")
        if kind == "tensorboard" and kw.get("log_dir") is None:
            kw["log_dir"] = base / "tensorboard"
        if kind == "mlflow":
            if kw.get("tracking_uri") is None:
                kw["tracking_uri"] = (base / "mlruns").resolve().as_uri()
            kw.setdefault("run_name", name)
        if kind == "wandb":
            if kw.get("dir") is None:
                kw["dir"] = base
            kw.setdefault("name", name)
        try:
            out.append(KINDS[kind](**kw))
        except TypeError as e:
            raise NclabError(f"train.loggers.{kind}: bad options ({e}); see nclab.integrations.loggers") from None
    return out


__all__ = ["TensorBoardLogger", "MLflowLogger", "WandbLogger", "build_loggers", "check_loggers", "mlflow_key"]
