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
    out = []
    for name, kwargs in (spec or {}).items():
        if kwargs is False:
            continue
        target = REGISTRY.get(name, name)
        if ":" not in target:
            close = difflib.get_close_matches(name, list(REGISTRY), n=2)
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            raise NclabError(f"unknown callback {name!r}{hint}; use one of {', '.join(REGISTRY)} or module.path:ClassName")
        mod_name, cls_name = target.split(":", 1)
        try:
            cls = getattr(importlib.import_module(mod_name), cls_name)
        except (ImportError, AttributeError) as e:
            raise NclabError(f"callback {name!r} ({target}) cannot be loaded ({e}); check the name or install the module")
        if kwargs is not None and not isinstance(kwargs, dict):
            raise NclabError(f"callbacks.{name} must be a mapping of keyword arguments, got {kwargs!r}")
        try:
            out.append(cls(**(kwargs or {})))
        except TypeError as e:
            raise NclabError(f"callbacks.{name}: bad arguments ({e}); see the callback's docstring")
    return out
