"""nclab — Neural Collapse Lab.

Train on coarse (or finer) labels, measure neural-collapse metrics during training, recover fine labels from
features, and solve the deep linear unconstrained-features model against closed-form theory.

Public API (each name is importable from ``nclab`` and loaded on first use)::

    load_dataset(spec)                  a Dataset from a source spec (cifar10:PATH, imagefolder:PATH, digits, ...)
    build_hierarchy(spec, names)        a Hierarchy (fine -> coarse): mod:K, adjacent:K, random:SEED, file:PATH, ...
    load_config(path_or_dict, overrides) the validated training config: a frozen Config (every default filled in)
    Trainer(cfg, run_dir)               trains and writes a run directory; .fit(resume=False)
    metrics_from_arrays(H, y, W, b)     every NC metric of features H (N, D) with labels y (N,)
    ClassStats, SecondPass              the streaming statistics behind them (mergeable across ranks)
    FineLabelRecovery(hierarchy)        cluster inside each superclass, name clusters, predict fine labels
    evaluate_recovery(...)              one recovery run -> the report dict written to results.json
    RecoverySpec                        a run's recovery settings (one table: nclab.contracts.recovery)
    predict_ufm(...), solve_ufm(...)    the deep linear UFM: closed form and numerical solver
    write_report(run_dir)               the HTML report of a run directory
    run_demo(out)                       the demo: coarse training on CIFAR-10, recovery vs baselines
    probe(model, data, layers=...)      NC metrics and recovery of any model at named layers -> ProbeResult

Subpackages, also available as attributes (``nclab.collapse``): ``data``, ``models``, ``train``, ``collapse``,
``finegrain``, ``theory``, ``experiments``, ``report``, ``contracts``. The command line (``nclab --help``) calls
the same API.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> module that defines it; imported on first access so `import nclab` stays light (no torch)
_API = {
    "load_dataset": "nclab.data",
    "build_hierarchy": "nclab.data",
    "Hierarchy": "nclab.data",
    "load_config": "nclab.train",
    "Config": "nclab.train",
    "Trainer": "nclab.train",
    "metrics_from_arrays": "nclab.collapse",
    "ClassStats": "nclab.collapse",
    "SecondPass": "nclab.collapse",
    "FineLabelRecovery": "nclab.finegrain",
    "evaluate_recovery": "nclab.finegrain",
    "RecoverySpec": "nclab.contracts.recovery",
    "predict_ufm": "nclab.theory",
    "solve_ufm": "nclab.theory",
    "write_report": "nclab.report",
    "run_demo": "nclab.experiments.demo",
    "probe": "nclab.experiments.probe",
    "ProbeResult": "nclab.experiments.probe",
}
_SUBPACKAGES = ("data", "models", "train", "collapse", "finegrain", "theory", "experiments", "report", "contracts")

__all__ = ["__version__", *_API, *_SUBPACKAGES]


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f"nclab.{name}")
    raise AttributeError(f"module 'nclab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
