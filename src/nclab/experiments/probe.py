"""Probe any model: every NC metric (and optionally fine-label recovery) at named layers, streamed.

    res = probe("torchvision:resnet18", "cifar10", layers="layer3,layer4,avgpool", hierarchy="adjacent:5")
    res.to_frame()          # tidy rows: split, layer, depth, view, metric, value
    res.plot("depth.png")   # NC1 and recovery accuracy across depth

The data go through the model once per split; per layer a float64 :class:`ClassStats` (fine classes, one
within-class scatter per superclass) accumulates counts, means and scatter (never the N x D features).
A second pass runs only where it is needed — NC4 at the classifier's input (``--classifier``) and the exact
projected NC1 of layers wider than ``max_scatter_dim`` — from the first pass's features when they fit in
``max_cache_bytes``, else by a second forward pass. Recovery keeps at most ``max_samples`` rows per split
and layer (the first ones in data order) in memory. The forward passes run in eval mode under
``torch.inference_mode()`` at ``precision`` (``auto``: bf16 autocast + channels_last where the device computes
bf16 natively, else fp32; :mod:`nclab.utils.precision`); only they change, the statistics are float64.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from nclab.collapse.second_pass import SecondPass
from nclab.collapse.stats import ClassStats
from nclab.collapse.views import flatten, hierarchy_metrics
from nclab.data.hierarchy import Hierarchy
from nclab.models.hooks import INPUT_SUFFIX, LayerTaps, resolve_layers
from nclab.models.sources import LoadedModel, load_model
from nclab.utils.errors import NclabError, RunPaused
from nclab.utils.io import json_clean
from nclab.utils.precision import DEFAULT_PRECISION, resolve_precision

WEIGHT_METRICS = ("equinorm_weights", "equiangular_weights", "maxangle_weights", "etf_error_weights",
                  "of_error_weights", "self_duality", "ncc_mismatch", "classifier_acc")
DEPTH_METRICS = ("nc1", "nc1_quotient", "cdnv")


@dataclass
class ProbeResult:
    """Per split, layer and view the NC metrics; per layer the recovery report (``recover=True``).

    ``metrics[split][layer]`` = ``{"fine": {...}, "coarse": {...}, "fine_within_coarse": {...}}`` (coarse
    views only with a hierarchy); ``recovery[layer]`` = :func:`nclab.finegrain.evaluate.evaluate_recovery`'s
    report; ``reductions[layer]`` how the layer's output was made (N, D); ``dims[layer]`` = D.
    """

    model: str
    layers: list[str]
    reductions: dict[str, str]
    dims: dict[str, int]
    metrics: dict[str, dict[str, dict]]
    recovery: dict[str, dict] = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"model": self.model, "layers": self.layers, "reductions": self.reductions, "dims": self.dims,
                "metrics": self.metrics, "recovery": self.recovery, "info": self.info}

    @classmethod
    def from_dict(cls, d: dict) -> "ProbeResult":
        return cls(d["model"], list(d["layers"]), dict(d["reductions"]), dict(d["dims"]), dict(d["metrics"]),
                   dict(d.get("recovery") or {}), dict(d.get("info") or {}))

    def rows(self) -> list[dict]:
        """Tidy rows ``{split, layer, depth, view, metric, value}`` (recovery as split ``recovery``)."""
        out = []
        for split, per_layer in self.metrics.items():
            for depth, layer in enumerate(self.layers):
                for key, v in flatten(per_layer.get(layer, {})).items():
                    view, _, metric = key.partition(".")
                    out.append({"split": split, "layer": layer, "depth": depth, "view": view, "metric": metric,
                                "value": v})
        for depth, layer in enumerate(self.layers):
            rec = self.recovery.get(layer)
            if rec:
                for m in ("test_acc", "oracle_test_acc", "train_acc", "ari", "nmi"):
                    if m in rec:
                        out.append({"split": "recovery", "layer": layer, "depth": depth, "view": "fine",
                                    "metric": m, "value": rec[m]})
        return out

    def to_frame(self):
        """A pandas DataFrame of :meth:`rows` when pandas is installed, else the list of row dicts."""
        rows = self.rows()
        try:
            import pandas as pd
        except ImportError:
            return rows
        return pd.DataFrame(rows)

    def depth_series(self, split: str | None = None) -> dict[str, list[float | None]]:
        """Across-depth lines: ``"<view> <metric>"`` -> one value per layer (``None`` where undefined)."""
        split = split or next(iter(self.metrics), None)
        per = self.metrics.get(split, {})
        lines: dict[str, list] = {}
        for view, metric in (("coarse", "nc1"), ("fine", "nc1"), ("fine_within_coarse", "mean")):
            vals = [per.get(layer, {}).get(view, {}).get(metric) for layer in self.layers]
            if any(v is not None for v in vals):
                lines[f"{view} {'nc1' if view == 'fine_within_coarse' else metric}"] = vals
        if self.recovery:
            lines["recovery test_acc"] = [self.recovery.get(layer, {}).get("test_acc") for layer in self.layers]
        return lines

    def plot(self, path: str | Path | None = None, split: str | None = None):
        """NC1 (log scale, per view) and recovery accuracy across depth; saved to ``path`` when given."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        lines = self.depth_series(split)
        rec = {k: v for k, v in lines.items() if k.startswith("recovery")}
        fig, axes = plt.subplots(1, 2 if rec else 1, figsize=(10 if rec else 5.5, 3.6), squeeze=False)
        x = np.arange(len(self.layers))
        ax = axes[0, 0]
        for name, vals in lines.items():
            if name in rec:
                continue
            y = np.array([np.nan if v is None else v for v in vals], dtype=float)
            ax.plot(x, y, marker="o", label=name)
        ax.set_yscale("log")
        ax.set_ylabel("NC1 = tr(Σ_W Σ_B†)/K")
        ax.set_title("collapse across depth")
        for a in axes[0]:
            a.set_xticks(x)
            a.set_xticklabels(self.layers, rotation=45, ha="right", fontsize=8)
        ax.legend(fontsize=8)
        if rec:
            ax2 = axes[0, 1]
            for name, vals in rec.items():
                ax2.plot(x, [np.nan if v is None else v for v in vals], marker="o", label=name)
            ax2.set_ylim(0, 1)
            ax2.set_ylabel("fine-label recovery accuracy")
            ax2.set_title("fine structure across depth")
            ax2.legend(fontsize=8)
        fig.tight_layout()
        if path is not None:
            from nclab.utils.io import atomic_write_bytes
            import io

            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=110)
            atomic_write_bytes(path, buf.getvalue())
        return fig


# inputs -----------------------------------------------------------------------------------------
def sample_indices(n: int, k: int | None, seed: int = 0) -> torch.Tensor | None:
    """``k`` of ``n`` positions chosen uniformly with ``seed``, in increasing order (``None``: all of them).
    Datasets are often stored class by class, so "the first k" would hold only a few classes."""
    if k is None or k >= n:
        return None
    g = torch.Generator().manual_seed(int(seed))
    return torch.sort(torch.randperm(n, generator=g)[:k]).values



def _as_loaded(model, weights=None) -> LoadedModel:
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, str):
        return load_model(model, weights=weights)
    if isinstance(model, nn.Module):
        if weights is not None:
            from nclab.models.sources import load_weights

            load_weights(model, weights)
        return LoadedModel(model.eval(), type(model).__name__, "module",
                           preprocess="none (0..1 scale for uint8 images)")
    raise NclabError(f"model must be a spec string (torchvision:resnet18, hf:PATH, ...) or an nn.Module, "
                     f"got {type(model).__name__}")


class _SourceBatches:
    """Re-iterable ``(x_float, y)`` batches of one split of an nclab dataset, preprocessed for ``lm``."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, lm: LoadedModel, batch_size: int, device,
                 image_size: int | None, mean, std):
        self.x, self.y, self.bs, self.device = x, y, int(batch_size), torch.device(device)
        self.size = image_size
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        shape = lm.input_shape
        self.channels = int(shape[0]) if shape is not None and len(shape) == 3 else None

    def __len__(self) -> int:
        return (len(self.y) + self.bs - 1) // self.bs

    def batch(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        xb = self.x[i * self.bs : (i + 1) * self.bs]
        yb = self.y[i * self.bs : (i + 1) * self.bs]
        if xb.dtype == torch.uint8:
            xb = xb.to(self.device, torch.float32).mul_(1.0 / 255.0)
            if self.channels == 3 and xb.shape[1] == 1:
                xb = xb.expand(-1, 3, -1, -1)
            if self.size is not None and tuple(xb.shape[2:]) != (self.size, self.size):
                xb = torch.nn.functional.interpolate(xb, size=(self.size, self.size), mode="bilinear",
                                                     align_corners=False, antialias=False)
            if self.mean is not None:
                xb = (xb - self.mean.to(xb.device)) / self.std.to(xb.device)
        else:
            xb = xb.to(self.device, torch.float32)
        return xb, yb

    def __iter__(self):
        for i in range(len(self)):
            yield self.batch(i)


def _data_splits(data, lm: LoadedModel, splits: Sequence[str], batch_size: int, device, image_size, mean, std,
                 max_samples_total: int | None = None):
    """``({split: re-iterable batches}, class_names or None, dataset or None)``."""
    if isinstance(data, str):
        from nclab.data import load_dataset

        ds = load_dataset(data)
        size = image_size if image_size is not None else (lm.image_size if lm.kind == "vision" else None)
        m = mean if mean is not None else lm.mean
        s = std if std is not None else lm.std
        out = {}
        for sp in splits:
            if sp not in ("train", "test"):
                raise NclabError(f"--split takes train and/or test, got {sp!r}")
            part = getattr(ds, sp)
            x, y = part.x, part.y
            sel = sample_indices(len(y), max_samples_total)
            if sel is not None:
                x, y = x[sel], y[sel]
            out[sp] = _SourceBatches(x, y, lm, batch_size, device, size if ds.is_image else None, m, s)
        return out, list(ds.class_names), ds
    if isinstance(data, dict):
        return dict(data), None, None
    if isinstance(data, Iterable):
        return {"data": data}, None, None
    raise NclabError(f"data must be an nclab source spec (cifar10, imagefolder:PATH, ...), a DataLoader yielding "
                     f"(x, y), or an iterable of (x, y) batches; got {type(data).__name__}")


def _hierarchy(hierarchy, class_names, dataset, num_fine: int | None) -> Hierarchy | None:
    if hierarchy is None or isinstance(hierarchy, Hierarchy):
        return hierarchy
    if isinstance(hierarchy, str):
        if class_names is not None:
            from nclab.data import build_hierarchy

            return build_hierarchy(hierarchy, class_names, dataset)
        if num_fine is None:
            raise NclabError("a hierarchy spec with a DataLoader needs num_classes= (the number of fine classes)")
        from nclab.data.builders import hierarchy_from_arg

        return hierarchy_from_arg(hierarchy, num_fine)
    f2c = np.asarray(hierarchy, dtype=np.int64)
    return Hierarchy.from_mapping(f2c, [str(i) for i in range(len(f2c))], spec="array")


def _classifier(module: nn.Module, name: str | None) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    if name is None:
        return None
    mods = dict(module.named_modules())
    if name not in mods:
        raise NclabError(f"--classifier {name!r} is not a module of this model; name its final nn.Linear "
                         "(see --list-layers)")
    lin = mods[name]
    if not isinstance(lin, nn.Linear):
        raise NclabError(f"--classifier {name!r} is a {type(lin).__name__}, not an nn.Linear; name the final "
                         "linear layer")
    W = lin.weight.detach().to(torch.float64)
    b = None if lin.bias is None else lin.bias.detach().to(torch.float64)
    return W, b


# the streamed engine ----------------------------------------------------------------------------
class _Accumulators:
    """First-pass statistics of one split: a fine-label ClassStats per layer, routing predictions and the
    rows kept for recovery."""

    def __init__(self, layers: list[str], k: int, f2c, max_scatter_dim: int, device, keep: int,
                 total: int | None = None):
        self.layers, self.k, self.f2c, self.msd, self.device, self.keep = layers, k, f2c, max_scatter_dim, device, keep
        # rows kept for recovery: a seeded uniform subset when the split's length is known, else the first ones
        self.keep_mask = None
        sel = sample_indices(total, keep) if (total is not None and keep > 0) else None
        if sel is not None:
            self.keep_mask = torch.zeros(total, dtype=torch.bool)
            self.keep_mask[sel] = True
        self.pos = 0
        self.stats: dict[str, ClassStats] = {}
        self.kept: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
        self.kept_y: list[torch.Tensor] = []
        self.pred: list[torch.Tensor] = []
        self.n_kept = 0
        self.batches = 0

    def update(self, feats: dict[str, torch.Tensor], y: torch.Tensor, logits: torch.Tensor | None) -> None:
        for name in self.layers:
            h = feats[name]
            if name not in self.stats:
                d = int(h.shape[1])
                wide = d > self.msd
                self.stats[name] = ClassStats(self.k, d, scatter=not wide, traces=not wide, device=self.device,
                                              groups=None if (wide or self.f2c is None) else self.f2c)
            self.stats[name].update(h, y)
        b = int(y.shape[0])
        if self.keep_mask is not None:
            rows = torch.nonzero(self.keep_mask[self.pos : self.pos + b]).flatten().to(y.device)
        else:
            rows = torch.arange(min(max(self.keep - self.n_kept, 0), b), device=y.device)
        if rows.numel():
            for name in self.layers:
                self.kept[name].append(feats[name].index_select(0, rows).float().cpu())
            self.kept_y.append(y.index_select(0, rows).cpu())
            if logits is not None:
                self.pred.append(logits.index_select(0, rows).argmax(1).cpu())
            self.n_kept += int(rows.numel())
        self.pos += b
        self.batches += 1

    def kept_arrays(self, name: str) -> np.ndarray:
        return torch.cat(self.kept[name]).numpy() if self.kept[name] else np.zeros((0, 0), np.float32)

    def state_dict(self) -> dict:
        return {"stats": {n: s.state_dict() for n, s in self.stats.items()}, "batches": self.batches, "pos": self.pos,
                "kept": {n: v for n, v in self.kept.items()}, "kept_y": self.kept_y, "pred": self.pred,
                "n_kept": self.n_kept}

    def load_state_dict(self, d: dict) -> None:
        self.stats = {n: ClassStats.from_state_dict(s, self.device) for n, s in d["stats"].items()}
        self.batches, self.kept, self.kept_y = int(d["batches"]), dict(d["kept"]), list(d["kept_y"])
        self.pred, self.n_kept, self.pos = list(d["pred"]), int(d["n_kept"]), int(d["pos"])


def _labelled(batches, device):
    for item in batches:
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise NclabError("each batch must be (x, y): inputs and integer labels")
        x, y = item[0], item[1]
        x = torch.as_tensor(x).to(device)
        y = torch.as_tensor(y).to(device).reshape(-1)
        if y.shape[0] != x.shape[0]:
            raise NclabError(f"a batch has {x.shape[0]} inputs but {y.shape[0]} labels")
        yield x, y.to(torch.int64)


class _Runner:
    """The probe's forward pass at a resolved precision (``"fp32"`` or ``"bf16"``), always under
    ``torch.inference_mode()``. ``bf16``: autocast to bfloat16 on the batch's device and, for 4-D inputs,
    channels_last: inside the ``with`` block the model's 4-D parameters and buffers hold channels_last copies
    (``.data`` swapped), the originals are put back on exit, so the caller's model keeps its memory format.
    A model whose forward cannot take channels_last maps (``.view`` on them) is run contiguous instead."""

    def __init__(self, net: nn.Module, precision: str):
        self.net, self.precision = net, precision
        self.bf16 = precision == "bf16"
        self.channels_last = self.bf16
        self._saved: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __enter__(self) -> "_Runner":
        if self.channels_last:
            for t in [*self.net.parameters(), *self.net.buffers()]:
                if t.dim() == 4 and not t.is_contiguous(memory_format=torch.channels_last):
                    self._saved.append((t, t.data))
                    t.data = t.data.contiguous(memory_format=torch.channels_last)
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

    def _restore(self) -> None:
        for t, data in self._saved:
            t.data = data
        self._saved = []

    def __call__(self, taps: LayerTaps, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self.bf16:
            with torch.inference_mode():
                return taps(x)
        try:
            return self._bf16(taps, x, self.channels_last)
        except RuntimeError:
            if not (self.channels_last and x.dim() == 4):
                raise
        self.channels_last = False  # e.g. x.view(n, -1) on a channels_last map: run contiguous from now on
        self._restore()
        return self._bf16(taps, x, False)

    def _bf16(self, taps, x, channels_last: bool):
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast(x.device.type, dtype=torch.bfloat16):
            return taps(x)


def _forward(run: _Runner, taps: LayerTaps, x: torch.Tensor, clf_layer: str | None):
    try:
        feats = run(taps, x)
    except (RuntimeError, ValueError, TypeError, IndexError) as e:  # the data do not fit the model
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise NclabError(f"the model's forward pass failed on a batch of shape {tuple(x.shape)} ({first}); "
                         "pass data of the input the model expects (images for image models)") from None
    if clf_layer is None:
        return feats, None
    return feats, (feats[clf_layer] if clf_layer in taps.requested else feats.pop(clf_layer))


@contextmanager
def _kept_as_given(net: nn.Module | None):
    """Puts every module's training flag back on exit (the probe runs the model in eval mode)."""
    modes = [] if net is None else [(m, m.training) for m in net.modules()]
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


class _Taps(LayerTaps):
    """LayerTaps that also captures the classifier output (for routing) without reporting it as a layer."""

    def __init__(self, model, layers, extra: list[str], **kw):
        super().__init__(model, list(layers) + [e for e in extra if e not in layers], **kw)
        self.requested = list(layers)


@torch.no_grad()
def probe(model, data, *, layers: str | Sequence[str], hierarchy=None, classifier: str | None = None,
          recover: bool = False, device: str | torch.device = "cpu", batch_size: int = 256,
          max_samples: int = 10000, splits: Sequence[str] = ("train",), reduce: str = "auto",
          weights: str | None = None, num_classes: int | None = None, image_size: int | None = None,
          mean: Sequence[float] | None = None, std: Sequence[float] | None = None, max_scatter_dim: int = 4096,
          max_cache_bytes: int = 256 << 20, limit: int | None = None, recovery_options: dict | None = None,
          time_limit: float | None = None, state_path: str | Path | None = None, progress=None,
          precision: str = DEFAULT_PRECISION) -> ProbeResult:
    """Probe ``model`` on ``data`` at ``layers``; see the module docstring and docs/probe.md.

    ``model``: a spec (``torchvision:resnet18``, ``hf:PATH``, ``python:F.py:FN``, ``run:DIR``, ...), an
    ``nn.Module`` or a :class:`LoadedModel`. ``data``: an nclab source spec (``splits`` picks train/test), a
    DataLoader / iterable of ``(x, y)`` batches (one split, ``"data"``), or ``{split: iterable}``.
    ``hierarchy``: a spec (``adjacent:5``, ``file:H.json``, ...), a Hierarchy, a fine->coarse array, or None
    (then only the ``fine`` view, labels as given). ``classifier``: the name of the final ``nn.Linear``; its
    W, b give the weight metrics and NC4 at its input (``<classifier>:input`` is probed automatically) and,
    when its outputs are the coarse (or fine) classes, the routing of recovery; without it those metrics are
    listed in ``info["not_applicable"]``. ``recover``: fit the recovery protocol per layer on ``max_samples``
    rows of the first split, score on the last split (the same split when only one: then transductive,
    recorded in the report's options); the rows are a seeded uniform subset (:func:`sample_indices`) for
    nclab sources, the first ones for other iterables. ``limit``: use a seeded uniform subset of this many
    samples per split (nclab sources; storage order kept).
    ``time_limit``/``state_path``: pause with :class:`RunPaused` between batches once ``time_limit`` seconds
    have passed, saving the first-pass state to ``state_path`` (read back by a later call with the same path).
    ``precision``: the forward pass's, one of :data:`nclab.utils.precision.PRECISIONS` — ``"auto"`` (bf16 where
    the device computes it natively, else fp32), ``"fp32"`` or ``"bf16"`` (autocast, channels_last for 4-D
    inputs); the statistics are float64 either way. The resolved one is ``info["precision"]``. The model is
    run in eval mode under ``torch.inference_mode()``; its training flags and memory format are put back after.
    """
    t0 = time.perf_counter()
    used = resolve_precision(precision, device)
    given = model.module if isinstance(model, LoadedModel) else model
    with _kept_as_given(given if isinstance(given, nn.Module) else None):
        return _probe(model, data, layers, used, t0, hierarchy=hierarchy, classifier=classifier, recover=recover,
                      device=device, batch_size=batch_size, max_samples=max_samples, splits=splits, reduce=reduce,
                      weights=weights, num_classes=num_classes, image_size=image_size, mean=mean, std=std,
                      max_scatter_dim=max_scatter_dim, max_cache_bytes=max_cache_bytes, limit=limit,
                      recovery_options=recovery_options, time_limit=time_limit, state_path=state_path,
                      progress=progress, requested=precision)


def _probe(model, data, layers, used: str, t0: float, *, hierarchy, classifier, recover, device, batch_size,
           max_samples, splits, reduce, weights, num_classes, image_size, mean, std, max_scatter_dim,
           max_cache_bytes, limit, recovery_options, time_limit, state_path, progress, requested) -> ProbeResult:
    lm = _as_loaded(model, weights)
    if lm.kind == "causal_lm":
        raise NclabError(f"{lm.spec} is a causal language model: probe it at token level with --text FILE "
                         "(nclab.experiments.tokens.probe_text)")
    net = lm.module.to(device).eval()
    dev = torch.device(device)
    names = resolve_layers(net, layers)
    clf = _classifier(net, classifier)
    clf_input = f"{classifier}{INPUT_SUFFIX}" if classifier is not None else None
    if clf_input is not None and clf_input not in names:
        names.append(clf_input)
    split_data, class_names, ds = _data_splits(data, lm, list(splits), batch_size, dev, image_size, mean, std, limit)
    hier = _hierarchy(hierarchy, class_names, ds, num_classes)
    k = hier.num_fine if hier is not None else (num_classes or (len(class_names) if class_names else None))
    if k is None:
        raise NclabError("pass num_classes= (or a hierarchy) when data is a DataLoader or an iterable of batches")
    f2c = hier.fine_to_coarse if hier is not None else None
    route_k = None if clf is None else int(clf[0].shape[0])
    want_logits = recover and clf is not None and hier is not None and route_k in (hier.num_coarse, hier.num_fine)
    state = _load_state(state_path)
    if state and state.get("precision", "fp32") != used:  # a state from before --precision is an fp32 one
        raise NclabError(f"the paused probe in {state_path} ran at precision {state.get('precision', 'fp32')}, "
                         f"this one resolves to {used}; resume with --precision {state.get('precision', 'fp32')}")
    results: dict[str, dict] = dict(state.get("metrics", {}))
    accs: dict[str, _Accumulators] = {}
    reductions: dict[str, str] = dict(state.get("reductions", {}))
    dims: dict[str, int] = dict(state.get("dims", {}))
    keep = int(max_samples) if recover else 0
    with _Runner(net, used) as run, _Taps(net, names, [classifier] if want_logits else [], reduce=reduce,
                                           upcast=True) as taps:
        for sp, batches in split_data.items():
            total = len(batches.y) if isinstance(batches, _SourceBatches) else None
            acc = _Accumulators(names, k, f2c, max_scatter_dim, dev, keep, total)
            accs[sp] = acc
            if sp in results and sp in state.get("accs", {}):
                acc.load_state_dict(state["accs"][sp])
                continue  # this split is finished
            if state.get("current") == sp:
                acc.load_state_dict(state["accs_partial"])
            cache: list | None = [] if max_cache_bytes > 0 and acc.batches == 0 else None
            cached = 0
            it = _labelled(batches if acc.batches == 0 else _skip(batches, acc.batches), dev)
            for x, y in (progress(it, desc=f"probe {sp}") if progress else it):
                if y.numel() and (int(y.min()) < 0 or int(y.max()) >= k):
                    raise NclabError(f"label {int(y.max()) if int(y.max()) >= k else int(y.min())} outside "
                                     f"0..{k - 1}; pass num_classes= or a hierarchy that covers every label")
                feats, logits = _forward(run, taps, x, classifier if want_logits else None)
                reductions.update({n: taps.reductions[n] for n in names})
                acc.update(feats, y, logits)
                if cache is not None and clf is None and all(f.shape[1] <= max_scatter_dim for f in feats.values()):
                    cache = None  # one pass suffices (no classifier, no wide layer): keep no features at all
                if cache is not None:
                    cached += sum(t.numel() * t.element_size() for t in feats.values())
                    if cached <= max_cache_bytes:
                        cache.append((feats, y))
                    else:
                        cache = None
                if time_limit is not None and time.perf_counter() - t0 > time_limit:
                    _save_state(state_path, results, reductions, dims, accs, sp, used)
                    raise RunPaused(f"probe paused after {acc.batches} batches of split {sp} (time limit "
                                    f"{time_limit:g} s); rerun with --resume to continue")
            if not acc.stats:
                raise NclabError(f"split {sp!r} yielded no batches; check the data")
            dims.update({n: int(s.dim) for n, s in acc.stats.items()})
            results[sp] = _split_metrics(acc, hier, clf, clf_input, cache, batches, taps, dev,
                                         forward=lambda x: run(taps, x))
            _save_state(state_path, results, reductions, dims, accs, None, used)
    info: dict[str, Any] = {"family": lm.family, "kind": lm.kind, "preprocess": lm.preprocess,
                            "image_size": image_size or lm.image_size, "device": str(dev), "num_classes": k,
                            "hierarchy": None if hier is None else hier.spec, "classifier": classifier,
                            "max_scatter_dim": max_scatter_dim, "precision": used, "precision_requested": requested,
                            **lm.info}
    if clf is None:
        info["not_applicable"] = {"metrics": list(WEIGHT_METRICS), "reason": "no --classifier named"}
    rec: dict[str, dict] = {}
    if recover:
        rec = _recover(accs, names, hier, route_k, recovery_options or {})
        info["recovery_samples"] = {sp: a.n_kept for sp, a in accs.items()}
    info["time_s"] = time.perf_counter() - t0
    if state_path is not None and Path(state_path).exists():
        Path(state_path).unlink()
    return ProbeResult(lm.spec, [n for n in names], {n: reductions.get(n, "") for n in names},
                       {n: dims.get(n, 0) for n in names}, results, rec, info)


def _skip(batches, n: int):
    if isinstance(batches, _SourceBatches):
        return (batches.batch(i) for i in range(n, len(batches)))
    it = iter(batches)
    for _ in range(n):
        next(it, None)
    return it


def _split_metrics(acc: _Accumulators, hier, clf, clf_input, cache, batches, taps, dev,
                   again=None, forward=None) -> dict[str, dict]:
    """Every view of every layer, with a second pass where it is needed. ``again``: a callable yielding
    ``(features {layer: (N, D)}, y)`` afresh, for batches that are not plain ``(x, y)`` pairs; ``forward``:
    ``x -> features`` for a second forward pass over plain batches (default ``taps``), the first pass's own."""
    W = b = None
    if clf is not None:
        W, b = clf[0].to(dev), None if clf[1] is None else clf[1].to(dev)
    seconds: dict[tuple[str, str], SecondPass] = {}
    views = ("fine", "coarse") if hier is not None else ("fine",)
    for name, st in acc.stats.items():
        for v in views:
            s = st if v == "fine" else st.coarsen(hier.fine_to_coarse)
            use_w = name == clf_input and W is not None and int(W.shape[0]) == s.num_classes
            if use_w and int(W.shape[1]) != st.dim:
                raise NclabError(f"the classifier has {int(W.shape[1])} inputs but {clf_input} gives {st.dim} "
                                 "features; name the final linear layer")
            if use_w or s.scatter is None:
                seconds[(name, v)] = SecondPass(s, W if use_w else None, b if use_w else None)
    if seconds:
        if cache is None and again is None and iter(batches) is batches:
            raise NclabError("a second pass is needed (classifier metrics or a wide layer) but the data is a "
                             "one-shot iterator; pass a DataLoader or a list of batches")

        def _again():
            for x, y in _labelled(batches, dev):
                yield (forward or taps)(x), y

        f2c = None if hier is None else torch.as_tensor(hier.fine_to_coarse, device=dev)
        for feats, y in (cache if cache is not None else (again or _again)()):
            for (name, v), sp in seconds.items():
                sp.update(feats[name], y if v == "fine" else f2c[y])
    out: dict[str, dict] = {}
    for name, st in acc.stats.items():
        if hier is None:
            from nclab.collapse.metrics import compute_metrics

            w_ok = name == clf_input and W is not None and int(W.shape[0]) == st.num_classes
            out[name] = {"fine": compute_metrics(st, W if w_ok else None, b if w_ok else None,
                                                 second=seconds.get((name, "fine")))}
            continue
        w = W if name == clf_input else None
        res = hierarchy_metrics(st, hier, w, b if w is not None else None, second_fine=seconds.get((name, "fine")),
                                second_coarse=seconds.get((name, "coarse")))
        out[name] = res
    return json_clean(out)


def _recover(accs: dict[str, _Accumulators], names: list[str], hier, route_k, options: dict) -> dict[str, dict]:
    from nclab.finegrain.evaluate import evaluate_recovery

    if hier is None:
        raise NclabError("--recover needs --hierarchy (recovery clusters fine classes inside each coarse class)")
    sps = list(accs)
    fit, ev = accs[sps[0]], accs[sps[-1]]
    y_fit = torch.cat(fit.kept_y).numpy()
    y_ev = torch.cat(ev.kept_y).numpy()
    route = None
    if ev.pred:
        p = torch.cat(ev.pred).numpy()
        route = p if route_k == hier.num_coarse else hier.coarse_of(p)
    out = {}
    for name in names:
        rep = evaluate_recovery(fit.kept_arrays(name), hier.coarse_of(y_fit), y_fit, ev.kept_arrays(name), route,
                                y_ev, hier, **options)
        rep.pop("confusion", None)
        rep["options"]["fit_split"], rep["options"]["eval_split"] = sps[0], sps[-1]
        out[name] = rep
    return out


def _load_state(path) -> dict:
    if path is None or not Path(path).exists():
        return {}
    from nclab.utils.io import torch_load

    try:
        return torch_load(path)
    except Exception:
        raise NclabError(f"probe state {path} cannot be read; delete it (or drop --resume) and start over") from None


def _save_state(path, results, reductions, dims, accs, current, precision: str) -> None:
    if path is None:
        return
    from nclab.utils.io import atomic_torch_save

    st = {"metrics": results, "reductions": reductions, "dims": dims,
          "accs": {sp: a.state_dict() for sp, a in accs.items() if sp in results}, "current": current,
          "precision": precision}
    if current is not None:
        st["accs_partial"] = accs[current].state_dict()
    atomic_torch_save(path, st)


__all__ = ["probe", "ProbeResult"]
