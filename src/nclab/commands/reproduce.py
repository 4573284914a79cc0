"""``nclab reproduce <experiment>``: one command per paper experiment.

Experiments register themselves from the modules listed in ``EXPERIMENT_MODULES``; each module has
``add_experiments(subparsers)`` that adds one parser per experiment (with ``set_defaults(func=...)``).
"""

from __future__ import annotations

import importlib

EXPERIMENT_MODULES = [
    "nclab.finegrain.experiments",  # cifar10-coarse5, cifar100-coarse20, cifar10-finer
    "nclab.theory.experiments",  # dln-synthetic, dln-cifar10-imbalanced, hierarchy-synthetic
]


def add_parser(sub) -> None:
    p = sub.add_parser("reproduce", help="run one paper experiment end to end (see `nclab reproduce --help`)")
    exp = p.add_subparsers(dest="experiment", metavar="EXPERIMENT")
    for name in EXPERIMENT_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:
                continue
            raise
        mod.add_experiments(exp)
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])
