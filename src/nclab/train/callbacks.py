"""Trainer callbacks and the registry of config-built ones (found by dotted path, imported lazily)."""

from __future__ import annotations

import difflib
import importlib

from nclab.utils.errors import NclabError

REGISTRY = {
    "nc_metrics": "nclab.collapse.callback:NCMetricsCallback",
    "recovery": "nclab.finegrain.callback:RecoveryCallback",
}


class Callback:
    """Hooks called by :class:`nclab.train.Trainer`. Must not consume the global RNG (use own generators),
    so a resumed run equals an uninterrupted one. ``on_epoch_end`` adds keys to ``logs`` (1-based ``epoch``);
    the trainer writes ``logs`` as one metrics.jsonl line after all callbacks ran."""

    def on_train_start(self, trainer) -> None:
        pass

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        pass

    def on_train_end(self, trainer) -> None:
        pass


def build_callbacks(spec: dict) -> list[Callback]:
    """``{name_or_dotted_path: kwargs}`` -> callback instances (``None`` kwargs = defaults; ``false`` = off)."""
    if spec is not None and not isinstance(spec, dict):  # a list of names ended in "no attribute 'items'"
        raise NclabError(f"callbacks must be a mapping {{name: kwargs}}, e.g. {{'nc_metrics': {{'epochs': 'log'}}}} "
                         f"(None or {{}} for defaults), got {type(spec).__name__} {spec!r}")
    out = []
    for name, kwargs in (spec or {}).items():
        if not isinstance(name, str):
            raise NclabError(f"callback names must be strings ({', '.join(REGISTRY)} or module.path:ClassName), "
                             f"got {name!r}")
        if kwargs is False:
            continue
        target = REGISTRY.get(name, name)
        if ":" not in target:
            close = difflib.get_close_matches(name, list(REGISTRY), n=2)
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            raise NclabError(f"unknown callback {name!r}{hint}; "
                             f"use one of {', '.join(REGISTRY)} or module.path:ClassName")
        mod_name, cls_name = target.split(":", 1)
        try:
            cls = getattr(importlib.import_module(mod_name), cls_name)
        except (ImportError, AttributeError) as e:
            raise NclabError(f"callback {name!r} ({target}) cannot be loaded ({e}); "
                             "check the name or install the module")
        if kwargs is not None and not isinstance(kwargs, dict):
            raise NclabError(f"callbacks.{name} must be a mapping of keyword arguments, got {kwargs!r}")
        try:
            out.append(cls(**(kwargs or {})))
        except TypeError as e:
            raise NclabError(f"callbacks.{name}: bad arguments ({e}); see the callback's docstring")
    return out


def log_epochs(total: int, points: int = 50) -> list[int]:
    """About ``points`` log-spaced 1-based epochs in 1..total, always including 1 and ``total``
    (the sampling of Papyan, Han & Donoho 2020: dense early, sparse late)."""
    import numpy as np

    if total < 1:
        return []
    e = np.unique(np.round(np.geomspace(1, total, num=max(2, points))).astype(int))
    return sorted(set(int(v) for v in e) | {1, int(total)})


def parse_epochs(epochs, option: str, words: tuple[str, ...]):
    """Validate an ``epochs`` option of a callback: one of ``words`` or a list of epochs (sorted, unique)."""
    allowed = ", ".join(repr(w) for w in words)
    if isinstance(epochs, str):
        if epochs not in words:
            raise NclabError(f"{option} must be {allowed} or a list of epochs, got {epochs!r}")
        return epochs
    try:
        return sorted({int(e) for e in epochs})
    except (TypeError, ValueError):
        raise NclabError(f"{option} must be {allowed} or a list of integers, got {epochs!r}") from None

