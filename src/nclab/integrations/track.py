"""``CollapseTracker``: neural-collapse metrics of named layers inside any training loop (no framework needed).

    tracker = CollapseTracker(model, ["layer3", "fc:input"], hierarchy="adjacent:5", num_classes=10,
                              loader=val_loader, every_n_epochs=1, run_dir="runs/mine")
    for epoch in range(1, epochs + 1):
        train_one_epoch(model)
        tracker.track(epoch=epoch, logs={"train_loss": loss})   # measures when the schedule says so
    tracker.close()                                              # status "complete"; `nclab report runs/mine`

Measuring hooks the layers with :class:`nclab.models.hooks.LayerTaps`, streams the loader once (a second
pass only for classifier metrics or layers wider than ``max_scatter_dim``, from cached features when they fit)
and accumulates float64 :class:`~nclab.collapse.stats.ClassStats` per layer, exactly as ``nclab probe``.

Keys (the names of nclab's own metrics.jsonl): the *main* layer (``<classifier>:input`` when ``classifier`` is
named, else the last layer) gives ``nc.<split>.<view>.<metric>`` and ``nc.<split>.fine_within_coarse.<c>``;
every other layer ``nc.<split>.<view>.<layer>.<metric>``; ``view`` is ``fine`` (the labels; the fine classes
of the hierarchy) and, with a hierarchy, ``coarse``. ``recover=True`` adds ``recovery.test_acc`` /
``recovery.oracle_test_acc`` / ``recovery.train_acc`` (main layer) and ``recovery.<layer>.<key>``; the split
is both fit and scored (transductive). ``nc.<split>.time_s`` is the measuring time.

With ``run_dir`` the tracker writes an nclab run directory (config.yaml, run.json, status.json,
metrics.jsonl; every write atomic), so ``nclab report`` / ``nclab compare`` read a run trained anywhere.
Under ``torch.distributed`` with several ranks the statistics are those of each rank's own batches
(rank-local, a warning says so); only rank 0 writes the run directory and calls the loggers.
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import nn

from nclab.collapse.views import flatten
from nclab.experiments.probe import _Accumulators, _classifier, _hierarchy, _recover, _split_metrics, _Taps
from nclab.models.hooks import INPUT_SUFFIX, resolve_layers
from nclab.rundir import RunDir
from nclab.utils.errors import NclabError
from nclab.utils.io import atomic_write_text, json_clean

RANK_LOCAL_WARNING = ("nclab: torch.distributed runs with {n} ranks; the collapse statistics are rank-local "
                      "(each rank measures only its own batches and rank 0 logs its numbers); give the callback "
                      "an unsharded loader (or run the measurement on one process) for whole-set numbers")


def split_batch(item: Any, label_key: str = "labels") -> tuple[Any, torch.Tensor]:
    """A loader item -> ``(inputs, y)``: ``(x, y, ...)`` tuples/lists, or dicts holding ``label_key`` (Hugging
    Face style; the other keys are the forward's keyword inputs)."""
    if isinstance(item, Mapping):
        if label_key not in item:
            raise NclabError(f"a dict batch has no {label_key!r} key (keys: {sorted(item)}); pass label_key= "
                             "naming the labels")
        return {k: v for k, v in item.items() if k != label_key}, torch.as_tensor(item[label_key])
    if isinstance(item, (tuple, list)) and len(item) >= 2:
        return item[0], torch.as_tensor(item[1])
    raise NclabError(f"each batch must be (x, y) or a dict with a {label_key!r} key, got {type(item).__name__}")


def _to(x: Any, device: torch.device) -> Any:
    if isinstance(x, Mapping):
        return {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in x.items()}
    return torch.as_tensor(x).to(device)


def world_size() -> int:
    """Ranks of the initialised default process group (1 without one)."""
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class CollapseTracker:
    """Measure NC metrics of ``layers`` of ``model`` on a loader at scheduled epochs/steps (see module docstring).

    ``layers``: names as for ``nclab probe`` (``fc:input``, ``blocks.*``, ``all-blocks``). ``hierarchy``: a spec
    (``adjacent:5``), a Hierarchy, a fine->coarse array, or None; ``num_classes``: the number of (fine) classes
    when there is no Hierarchy object. ``metrics``: metric names to keep (``nc1``, ``cdnv``, ...; None = all).
    When: ``every_n_epochs`` (default 1), or explicit 1-based ``epochs``, or ``steps``. ``loader``: re-iterable
    batches ``(x, y)`` or dicts with ``label_key``; ``fine_labels`` (N,) override the loader's labels by
    position (a loader that yields coarse training targets). ``loggers``: objects with
    ``log_metrics(dict, step)`` / ``close()`` (:mod:`nclab.integrations.loggers`).
    """

    def __init__(self, model: nn.Module, layers: str | Sequence[str], *, hierarchy=None,
                 num_classes: int | None = None, metrics: Sequence[str] | None = None,
                 every_n_epochs: int | None = 1, epochs: Sequence[int] | None = None,
                 steps: Sequence[int] | None = None, loader: Iterable | None = None, split: str = "val",
                 classifier: str | None = None, recover: bool = False, fine_labels=None,
                 label_key: str = "labels", reduce: str = "auto", device: str | torch.device | None = None,
                 run_dir: str | Path | None = None, overwrite: bool = False, loggers: Sequence[Any] = (),
                 config: dict | None = None, max_scatter_dim: int = 4096, max_samples: int = 10000,
                 max_cache_bytes: int = 256 << 20, recovery_options: dict | None = None):
        if not isinstance(model, nn.Module):
            raise NclabError(f"model must be a torch nn.Module, got {type(model).__name__}")
        if not isinstance(split, str) or not split or "." in split:
            raise NclabError(f"split must be a name without dots (train, val, test), got {split!r}")
        self.model = model
        self.layers = resolve_layers(model, layers)
        self.classifier = classifier
        _classifier(model, classifier)  # a bad classifier name fails here, not at the first measurement
        self.clf_input = f"{classifier}{INPUT_SUFFIX}" if classifier else None
        if self.clf_input and self.clf_input not in self.layers:
            self.layers.append(self.clf_input)
        self.main = self.clf_input or self.layers[-1]
        self.hierarchy = _hierarchy(hierarchy, None, None, num_classes)
        self.num_classes = self.hierarchy.num_fine if self.hierarchy is not None else num_classes
        if self.num_classes is None or int(self.num_classes) < 2:
            raise NclabError("pass num_classes= (at least 2) or a hierarchy: the tracker needs the class count")
        self.num_classes = int(self.num_classes)
        if recover and self.hierarchy is None:
            raise NclabError("recover=True needs a hierarchy (recovery clusters fine classes inside each coarse class)")
        self.metrics = None if metrics is None else [str(m) for m in metrics]
        self.schedule = _schedule(every_n_epochs, epochs, steps)
        self.loader, self.split, self.recover = loader, split, bool(recover)
        self.fine_labels = None if fine_labels is None else torch.as_tensor(fine_labels).reshape(-1).to(torch.int64)
        self.label_key, self.reduce = label_key, reduce
        self.device = torch.device(device) if device is not None else _model_device(model)
        self.max_scatter_dim, self.max_samples = int(max_scatter_dim), int(max_samples)
        self.max_cache_bytes, self.recovery_options = int(max_cache_bytes), dict(recovery_options or {})
        self.loggers = list(loggers)
        self.rows: list[dict] = []
        self.last: dict[str, float | None] = {}
        self._warned = False
        self._t0 = time.perf_counter()
        self.run = RunDir(run_dir) if run_dir is not None else None
        if self.run is not None and rank() == 0:
            self._start_run(overwrite, config)

    # schedule ------------------------------------------------------------------------------------
    def should_measure(self, epoch: int | None = None, step: int | None = None) -> bool:
        """Whether the schedule asks for a measurement at 1-based ``epoch`` / global ``step``."""
        kind, value = self.schedule
        if kind == "steps":
            return step is not None and int(step) in value
        if epoch is None:
            return False
        return int(epoch) in value if kind == "epochs" else int(epoch) % value == 0

    # measuring -----------------------------------------------------------------------------------
    def measure(self, batches: Iterable | None = None) -> dict[str, float | None]:
        """Measure now on ``batches`` (default: the tracker's loader); the flat ``nc.*`` / ``recovery.*`` keys.
        The model is put in eval mode (restored after), gradients are off, the global RNG is left as it was."""
        data = batches if batches is not None else self.loader
        if data is None:
            raise NclabError("no data to measure on: give CollapseTracker(loader=...) or pass the batches")
        n = world_size()
        if n > 1 and not self._warned:
            warnings.warn(RANK_LOCAL_WARNING.format(n=n), stacklevel=2)
            self._warned = True
        t0 = time.perf_counter()
        was_training = self.model.training
        self.model.eval()
        fork = [self.device] if self.device.type == "cuda" else []
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=fork):
                res, rec = self._measure(data)
        finally:
            self.model.train(was_training)
        out = self._keys(res, rec)
        out[f"nc.{self.split}.time_s"] = time.perf_counter() - t0
        self.last = out
        return out

    def _measure(self, data: Iterable) -> tuple[dict, dict]:
        hier, dev, k = self.hierarchy, self.device, self.num_classes
        clf = _classifier(self.model, self.classifier)
        route_k = None if clf is None else int(clf[0].shape[0])
        want_logits = (self.recover and clf is not None and hier is not None
                       and route_k in (hier.num_coarse, hier.num_fine))
        f2c = hier.fine_to_coarse if hier is not None else None
        acc = _Accumulators(self.layers, k, f2c, self.max_scatter_dim, dev, self.max_samples if self.recover else 0)
        with _Taps(self.model, self.layers, [self.classifier] if want_logits else [], reduce=self.reduce) as taps:
            def forward(x):
                feats = taps(**x) if isinstance(x, Mapping) else taps(x)
                logits = None
                if want_logits:
                    logits = feats[self.classifier] if self.classifier in taps.requested else feats.pop(self.classifier)
                return feats, logits

            cache: list | None = [] if self.max_cache_bytes > 0 else None
            cached = 0
            for x, y in self._labelled(data):
                feats, logits = forward(x)
                acc.update(feats, y, logits)
                if cache is not None and clf is None and all(f.shape[1] <= self.max_scatter_dim
                                                             for f in feats.values()):
                    cache = None  # one pass suffices
                if cache is not None:
                    cached += sum(t.numel() * t.element_size() for t in feats.values())
                    if cached <= self.max_cache_bytes:
                        cache.append((feats, y))
                    else:
                        cache = None
            if not acc.stats:
                raise NclabError("the loader yielded no batches; check the data the tracker measures on")

            def again():
                for x, y in self._labelled(data):
                    yield forward(x)[0], y

            res = _split_metrics(acc, hier, clf, self.clf_input, cache, data, taps, dev, again=again)
        rec = _recover({self.split: acc}, self.layers, hier, route_k, self.recovery_options) if self.recover else {}
        return res, rec

    def _labelled(self, data: Iterable):
        pos = 0
        fl = self.fine_labels
        for item in data:
            x, y = split_batch(item, self.label_key)
            x = _to(x, self.device)
            n = int(y.reshape(-1).shape[0])
            if fl is not None:
                if pos + n > fl.shape[0]:
                    raise NclabError(f"the loader yielded more samples than the {fl.shape[0]} fine labels given")
                y = fl[pos : pos + n]
            pos += n
            y = y.reshape(-1).to(self.device, torch.int64)
            if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                bad = int(y.max()) if int(y.max()) >= self.num_classes else int(y.min())
                raise NclabError(f"label {bad} outside 0..{self.num_classes - 1}; pass num_classes= or a hierarchy "
                                 "that covers every label")
            yield x, y
        if fl is not None and pos != fl.shape[0]:
            raise NclabError(f"the loader yielded {pos} samples but {fl.shape[0]} fine labels were given")

    def _keys(self, res: dict[str, dict], rec: dict[str, dict]) -> dict[str, float | None]:
        sp = self.split
        out: dict[str, float | None] = {}
        for layer in self.layers:
            for view, m in res[layer].items():
                if layer == self.main:
                    out.update(flatten(m, f"nc.{sp}.{view}"))
                elif view != "fine_within_coarse":
                    out.update(flatten(m, f"nc.{sp}.{view}.{layer}"))
        for layer, r in rec.items():
            base = "recovery" if layer == self.main else f"recovery.{layer}"
            for key in ("test_acc", "oracle_test_acc", "train_acc"):
                if key in r:
                    v = float(r[key])
                    out[f"{base}.{key}"] = v if math.isfinite(v) else None
        if self.metrics is not None:
            keep = set(self.metrics)
            have = {_metric_of(k) for k in out}
            missing = sorted(keep - have)
            if missing:
                raise NclabError(f"unknown metric(s) {missing}; choose from {sorted(have)}")
            out = {k: v for k, v in out.items() if _metric_of(k) in keep}
        return out

    # logging -------------------------------------------------------------------------------------
    def track(self, epoch: int | None = None, step: int | None = None, batches: Iterable | None = None,
              logs: dict | None = None, force: bool = False) -> dict[str, float | None]:
        """At a scheduled ``epoch``/``step`` (or ``force``): measure, write one metrics.jsonl row (``epoch``,
        ``step``, the user's ``logs`` and the NC keys) and send it to the loggers. Returns the NC keys (``{}``
        when nothing was scheduled)."""
        if not (force or self.should_measure(epoch, step)):
            return {}
        keys = self.measure(batches)
        self.log(keys, epoch=epoch, step=step, logs=logs)
        return keys

    def log(self, keys: dict, *, epoch: int | None = None, step: int | None = None, logs: dict | None = None) -> None:
        """Write ``keys`` (+ ``logs``) as one row of the run directory and send them to the loggers (rank 0)."""
        if rank() != 0:
            return
        row: dict[str, Any] = {}
        if epoch is not None:
            row["epoch"] = int(epoch)
        if step is not None:
            row["step"] = int(step)
        row.update(logs or {})
        row.update(keys)
        row["time_s"] = time.perf_counter() - self._t0
        self.rows.append(row)
        if self.run is not None:
            import json

            atomic_write_text(self.run.metrics_path, "".join(json.dumps(json_clean(r)) + "\n" for r in self.rows))
            self.run.write_status("running", "", epoch=row.get("epoch"), wall_time_s=row["time_s"])
        x = step if step is not None else epoch
        scalars = {k: float(v) for k, v in row.items()
                   if k not in ("epoch", "step") and isinstance(v, (int, float)) and not isinstance(v, bool)
                   and math.isfinite(float(v))}
        for lg in self.loggers:
            lg.log_metrics(scalars, step=int(x) if x is not None else len(self.rows))

    def close(self, status: str = "complete", message: str = "") -> None:
        """Finish: status.json ``status`` (rank 0) and close the loggers."""
        if rank() != 0:
            return
        if self.run is not None:
            epoch = next((r["epoch"] for r in reversed(self.rows) if "epoch" in r), None)
            self.run.write_status(status, message, epoch=epoch, wall_time_s=time.perf_counter() - self._t0)
        for lg in self.loggers:
            lg.close()

    def __enter__(self) -> "CollapseTracker":
        return self

    def __exit__(self, typ, exc, tb) -> None:
        if typ is None:
            self.close()
        else:
            self.close("interrupted" if typ is KeyboardInterrupt else "failed",
                       f"{typ.__name__}: {exc}".splitlines()[0])

    # run directory -------------------------------------------------------------------------------
    def _start_run(self, overwrite: bool, config: dict | None) -> None:
        run = self.run
        if run.path.is_file():
            raise NclabError(f"run_dir {run.path} is a file; pass a folder for the run directory")
        if run.metrics_path.exists() and not overwrite:
            raise NclabError(f"{run.path} already holds a run (metrics.jsonl); pass a new run_dir or overwrite=True")
        run.path.mkdir(parents=True, exist_ok=True)
        if run.metrics_path.exists():
            run.metrics_path.unlink()
        h = self.hierarchy
        cfg = {"name": run.name,
               "model": {"name": type(self.model).__name__},
               "data": {"hierarchy": None if h is None else h.spec},
               "track": {"layers": list(self.layers), "main": self.main, "split": self.split,
                         "num_classes": self.num_classes, "classifier": self.classifier, "recover": self.recover,
                         "metrics": self.metrics, "schedule": {self.schedule[0]: _plain(self.schedule[1])},
                         "reduce": self.reduce, "max_scatter_dim": self.max_scatter_dim}}
        if config:
            cfg["user"] = json_clean(dict(config))
        run.write_config(cfg)
        run.write_run_info({"command": "CollapseTracker", "device": str(self.device)})
        run.write_status("running", "", epoch=0, wall_time_s=0.0)


def _plain(v):
    return sorted(v) if isinstance(v, (set, frozenset)) else v


def _metric_of(key: str) -> str:
    parts = key.split(".")
    if len(parts) >= 3 and parts[2] == "fine_within_coarse":
        return "fine_within_coarse"
    return parts[-1]


def _schedule(every_n_epochs, epochs, steps) -> tuple[str, Any]:
    if steps is not None:
        try:
            return "steps", {int(s) for s in steps}
        except (TypeError, ValueError):
            raise NclabError(f"steps must be a list of integers, got {steps!r}") from None
    if epochs is not None:
        try:
            return "epochs", {int(e) for e in epochs}
        except (TypeError, ValueError):
            raise NclabError(f"epochs must be a list of 1-based integers, got {epochs!r}") from None
    if isinstance(every_n_epochs, bool) or not isinstance(every_n_epochs, int) or every_n_epochs < 1:
        raise NclabError(f"every_n_epochs must be an integer >= 1, got {every_n_epochs!r}")
    return "every", int(every_n_epochs)


def _model_device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


__all__ = ["CollapseTracker", "split_batch", "world_size", "rank", "RANK_LOCAL_WARNING"]
