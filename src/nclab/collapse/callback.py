"""Trainer callback that logs NC metrics into metrics.jsonl, and the measuring loop it (and the CLI) use.

Keys (docs/architecture.md): ``nc.<split>.<labels>.<metric>`` (labels = ``fine`` / ``coarse``),
``nc.<split>.fine_within_coarse.<c>`` and ``.mean``, per tap ``nc.<split>.<labels>.<tap>.<metric>``,
plus ``nc.<split>.time_s``. Undefined values are written as ``null``.

Config::

    callbacks:
      nc_metrics: {epochs: log, splits: [train, test], taps: [head.0, head.1], views: [coarse, fine]}
"""

from __future__ import annotations

import contextlib
import time
from typing import Iterable, Sequence

import torch

from nclab.collapse.metrics import compute_metrics
from nclab.collapse.second_pass import SecondPass
from nclab.collapse.stats import ClassStats
from nclab.collapse.views import fine_within_coarse, flatten
from nclab.data.hierarchy import Hierarchy
from nclab.train.callbacks import Callback, log_epochs, parse_epochs  # noqa: F401 (log_epochs re-exported)
from nclab.utils.errors import NclabError

VIEWS = ("coarse", "fine")
SPLITS = ("train", "test")


def _views(hierarchy: Hierarchy | None, views: Sequence[str] | None) -> list[str]:
    if hierarchy is None:
        return ["fine"]
    return list(views) if views else list(VIEWS)


def _features(model, x: torch.Tensor, taps: list[str], feat_tap: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    if not taps:
        return model.features(x).flatten(1), {}
    out = model.forward_taps(x, list(dict.fromkeys(taps + [feat_tap])))
    return out[feat_tap], {t: out[t] for t in taps}


@torch.no_grad()
def measure(model, batches: Iterable, *, hierarchy: Hierarchy | None = None, num_classes: int | None = None,
            taps: Sequence[str] = (), views: Sequence[str] | None = None, device: str | torch.device = "cpu",
            max_scatter_dim: int = 4096, fine_labels=None, max_cache_bytes: int = 2**30,
            autocast=None, all_reduce: bool = False) -> dict[str, dict]:
    """Two streaming passes of ``model`` over ``batches`` (an iterable of ``(x, y_fine)``, re-iterable).

    Returns ``{view: metrics, "fine_within_coarse": {...}, "taps": {tap: {view: metrics}}}``.
    Labels: ``y`` are the fine labels of ``hierarchy`` (or plain labels when there is none);
    ``fine_labels`` (N,) overrides them by position (for loaders that yield other labels).
    The classifier W, b is used for the view whose class count equals its number of rows.
    A feature space wider than ``max_scatter_dim`` keeps no D x D scatter: its nc1 comes from the
    projected scatter of the second pass.
    ``max_cache_bytes``: features up to this size are kept from the first pass for the second (one forward
    pass instead of two); 0 always recomputes them.
    ``autocast``: optional context-manager factory around the forward passes (the trainer's bf16 autocast:
    features as the model computes them in training and evaluation; statistics stay float64).
    ``all_reduce``: ``batches`` is this rank's shard of the data (torch.distributed); the statistics of both
    passes are merged over all ranks (:meth:`ClassStats.all_reduce`, :meth:`SecondPass.all_reduce`), so every
    rank returns the metrics of all the data. Every rank must yield the same number of batches (shards of the
    same global batches; empty ones allowed).
    """
    fwd_ctx = autocast if autocast is not None else contextlib.nullcontext
    device = torch.device(device)
    vs = _views(hierarchy, views)
    k_fine = hierarchy.num_fine if hierarchy is not None else num_classes
    feat_tap = f"head.{len(model.head_layers) - 1}"
    taps = [t for t in taps if t != feat_tap] if taps else []
    W = model.classifier.weight.detach().to(device, torch.float64)
    b = None if model.classifier.bias is None else model.classifier.bias.detach().to(device, torch.float64)
    f2c = hierarchy.fine_to_coarse if hierarchy is not None else None
    fl = None if fine_labels is None else torch.as_tensor(fine_labels).to(device, torch.int64)

    def labelled():
        pos = 0
        for x, y in batches:
            x = x.to(device)
            y = y.to(device) if fl is None else fl[pos : pos + x.shape[0]]
            pos += x.shape[0]
            if y.shape[0] != x.shape[0]:
                raise NclabError(f"the loader yielded more samples than the {fl.shape[0]} fine labels given")
            yield (x, y.to(torch.int64))
        if fl is not None and pos != fl.shape[0]:
            raise NclabError(f"the loader yielded {pos} samples but {fl.shape[0]} fine labels were given")

    stats: dict[str, ClassStats] = {}
    # Keep the first pass's features (when they fit in max_cache_bytes) so the second pass needs no second
    # forward pass: eval forwards dominate the cost of this callback on a CPU. Same numbers either way.
    cache: list | None = [] if max_cache_bytes > 0 else None
    cached = 0
    for x, y in labelled():
        if k_fine is None:
            raise NclabError("measure() needs num_classes when there is no hierarchy")
        with fwd_ctx():
            feats, tapped = _features(model, x, taps, feat_tap)
            feats, tapped = feats.float(), {t: v.float() for t, v in tapped.items()}
        if cache is not None:
            cached += sum(t.numel() * t.element_size() for t in [feats, *tapped.values()])
            if cached <= max_cache_bytes:
                cache.append((feats, tapped, y))
            else:
                cache = None
        for name, h in [("", feats)] + list(tapped.items()):
            if name not in stats:
                d = int(h.shape[1])
                stats[name] = ClassStats(k_fine, d, scatter=d <= max_scatter_dim, traces=d <= max_scatter_dim,
                                         device=device,
                                         groups=f2c if (name == "" and d <= max_scatter_dim) else None)
            stats[name].update(h, y)
    if not stats:
        raise NclabError("the data loader yielded no batches; check the split")
    if all_reduce:
        for st in stats.values():  # same keys in the same order on every rank (same model and taps)
            st.all_reduce()

    # per source and view: the statistics, W if it belongs to the view, and whether a 2nd pass is needed
    plan: dict[tuple[str, str], tuple[ClassStats, object, object]] = {}
    for name, st in stats.items():
        for v in vs:
            s = st if v == "fine" else st.coarsen(f2c)
            w_ok = name == "" and W.shape[0] == s.num_classes
            plan[(name, v)] = (s, W if w_ok else None, b if w_ok else None)
    seconds = {key: SecondPass(s, w, bb) for key, (s, w, bb) in plan.items() if w is not None or s.scatter is None}
    if seconds:
        def recompute():
            for x, y in labelled():
                with fwd_ctx():
                    f, t = _features(model, x, taps, feat_tap)
                yield f.float(), {k: v.float() for k, v in t.items()}, y

        again = cache if cache is not None else recompute()
        for feats, tapped, y in again:
            srcs = {"": feats, **tapped}
            for (name, v), sp in seconds.items():
                sp.update(srcs[name], y if v == "fine" else torch.as_tensor(f2c, device=device)[y])
        if all_reduce:
            for sp in seconds.values():
                sp.all_reduce()

    out: dict[str, dict] = {}
    per_tap: dict[str, dict] = {t: {} for t in taps}
    for (name, v), (s, w, bb) in plan.items():
        m = compute_metrics(s, w, bb, second=seconds.get((name, v)))
        if name == "":
            out[v] = m
        else:
            per_tap[name][v] = m
    main = stats[""]
    if hierarchy is not None and main.scatter is not None and "fine" in vs:
        out["fine_within_coarse"] = fine_within_coarse(main, hierarchy)
    out["taps"] = per_tap
    return out


def to_log_keys(result: dict[str, dict], split: str) -> dict[str, float | None]:
    """``measure()`` output -> flat metrics.jsonl keys ``nc.<split>.<view>[.<tap>].<metric>``."""
    logs: dict[str, float | None] = {}
    for key, val in result.items():
        if key == "taps":
            for tap, per_view in val.items():
                for v, m in per_view.items():
                    logs.update(flatten(m, f"nc.{split}.{v}.{tap}"))
        else:
            logs.update(flatten(val, f"nc.{split}.{key}"))
    return logs


class NCMetricsCallback(Callback):
    """Log neural-collapse metrics at chosen epochs.

    ``epochs``: ``"log"`` (≈``log_points`` log-spaced epochs incl. the first and last), ``"all"``, or a
    list of 1-based epochs. ``splits``: subset of ``[train, test]``. ``taps``: tap names for per-layer
    metrics (default: the head layers' inputs ``head.0..head.{M-2}`` when the head has M > 1 layers;
    ``[]`` for none). ``views``: ``[coarse, fine]`` (default both when the trainer has a hierarchy).
    Uses no global RNG (evaluation is deterministic; the global RNG state is forked anyway).
    """

    def __init__(self, epochs: str | Sequence[int] = "log", splits: Sequence[str] = ("train",),
                 taps: Sequence[str] | None = None, views: Sequence[str] | None = None,
                 log_points: int = 50, max_scatter_dim: int = 4096):
        epochs = parse_epochs(epochs, "nc_metrics.epochs", ("log", "all"))
        bad = [s for s in splits if s not in SPLITS]
        if bad or not splits:
            raise NclabError(f"nc_metrics.splits must be a non-empty subset of {list(SPLITS)}, got {list(splits)}")
        if views is not None and (not views or any(v not in VIEWS for v in views)):
            raise NclabError(f"nc_metrics.views must be a non-empty subset of {list(VIEWS)}, got {views}")
        self.epochs = epochs
        self.splits = list(splits)
        self.taps = None if taps is None else list(taps)
        self.views = None if views is None else list(views)
        self.log_points = int(log_points)
        self.max_scatter_dim = int(max_scatter_dim)
        self._schedule: set[int] | None = None

    # which epochs -------------------------------------------------------------------------------
    def _total_epochs(self, trainer) -> int | None:
        cfg = getattr(trainer, "cfg", None) or getattr(trainer, "config", None) or {}
        try:  # nclab's Trainer holds a Config; other trainers may hold a mapping
            return int(cfg.optim.epochs if hasattr(cfg, "optim") else cfg["optim"]["epochs"])
        except (KeyError, TypeError, ValueError, AttributeError):
            return None

    def should_log(self, trainer, epoch: int) -> bool:
        if self.epochs == "all":
            return True
        if self.epochs == "log":
            if self._schedule is None:
                total = self._total_epochs(trainer)
                self._schedule = set(log_epochs(total, self.log_points)) if total else None
            if self._schedule is None:  # unknown length: log-spaced on an open horizon
                return epoch in set(log_epochs(max(epoch, 1) * 1000, self.log_points * 3)) or epoch <= 10
            return epoch in self._schedule
        return epoch in self.epochs

    def _taps(self, model) -> list[str]:
        if self.taps is not None:
            return self.taps
        m = len(model.head_layers)
        return [f"head.{i}" for i in range(m - 1)] if m > 1 else []

    # hooks --------------------------------------------------------------------------------------
    def on_train_start(self, trainer) -> None:
        self._schedule = None
        taps = self._taps(trainer.model)
        valid = trainer.model.tap_names() if hasattr(trainer.model, "tap_names") else []
        bad = [t for t in taps if valid and t not in valid]
        if bad:
            raise NclabError(f"nc_metrics.taps: unknown tap(s) {bad}; this model has {valid}")

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        if self.should_log(trainer, epoch):
            logs.update(self.compute(trainer))

    def compute(self, trainer) -> dict[str, float | None]:
        """Measure now (all configured splits) and return the flat ``nc.*`` keys."""
        model = trainer.model
        was_training = model.training
        model.eval()
        dev = torch.device(trainer.device)
        fork = [dev] if dev.type == "cuda" else []
        # under torchrun each rank measures its shard of every batch and the statistics are merged
        shard = _shards(trainer)
        logs: dict[str, float | None] = {}
        try:
            with torch.random.fork_rng(devices=fork):
                for split in self.splits:
                    t0 = time.perf_counter()
                    fl = fine_labels(trainer, split)
                    if shard:
                        fl = fl[trainer.eval_loader(split, shard=True).local_order()]
                    res = measure(model, _Reiterable(trainer, split, shard), hierarchy=trainer.hierarchy,
                                  num_classes=_num_classes(trainer), taps=self._taps(model), views=self.views,
                                  device=dev, max_scatter_dim=self.max_scatter_dim, fine_labels=fl,
                                  autocast=getattr(trainer, "autocast", None), all_reduce=shard)
                    logs.update(to_log_keys(res, split))
                    logs[f"nc.{split}.time_s"] = time.perf_counter() - t0
        finally:
            model.train(was_training)
        return logs


def _num_classes(trainer) -> int | None:
    k = getattr(trainer, "num_classes", None)
    return int(k) if k is not None else getattr(getattr(trainer, "dataset", None), "num_classes", None)


def fine_labels(trainer, split: str) -> torch.Tensor:
    """Fine labels of ``split`` in storage order (``eval_loader`` yields the *training* targets, which
    are coarse under ``data.labels=coarse``). For a ``split:M`` hierarchy the fine level is the pseudo
    classes the net trains on (before any ``data.label_noise``); otherwise it is the dataset's own labels."""
    h = getattr(trainer, "hierarchy", None)
    if h is not None and h.kind == "split":
        return getattr(trainer, "clean_targets", trainer.train_targets)(split)
    return getattr(trainer.dataset, split).y


def _shards(trainer) -> bool:
    """Whether to measure this rank's shard and merge: a process group is up and the trainer shards."""
    from nclab.train import distributed as ddp

    return ddp.active() and bool(getattr(trainer, "distributed", False))


class _Reiterable:
    """Calls ``trainer.eval_loader(split)`` (this rank's shard with ``shard``) afresh for each pass."""

    def __init__(self, trainer, split: str, shard: bool = False):
        self.trainer, self.split, self.shard = trainer, split, shard

    def __iter__(self):
        if self.shard:
            return iter(self.trainer.eval_loader(self.split, shard=True))
        return iter(self.trainer.eval_loader(self.split))
