"""``nclab reproduce <experiment>``: one command per paper experiment.

Each module in :func:`experiment_modules` has ``add_experiments(subparsers)`` that adds one parser per
experiment (with ``set_defaults(func=...)``); the experiments themselves are in ``nclab.experiments``
(``finegrain_runs``, ``theory_runs``).
"""

from __future__ import annotations

import os

from nclab.commands import missing_subcommand

def experiment_modules() -> list:
    from nclab.commands import reproduce_finegrain  # cifar10-coarse5, cifar100-coarse20, cifar10-finer
    from nclab.commands import reproduce_theory  # dln-synthetic, hierarchy-synthetic, dln-cifar10-imbalanced

    return [reproduce_finegrain, reproduce_theory]


def add_parser(sub) -> None:
    p = sub.add_parser("reproduce", help="run one paper experiment end to end (see `nclab reproduce --help`)")
    exp = p.add_subparsers(dest="experiment", metavar="EXPERIMENT")
    for mod in experiment_modules():
        mod.add_experiments(exp)
    for choice in exp.choices.values():  # every experiment ends with its HTML report
        choice.set_defaults(func=_with_report(choice.get_default("func")))
    p.set_defaults(func=lambda args: missing_subcommand(p))


def _with_report(func):
    def run(args) -> int:
        import contextlib

        from nclab.runlock import run_lock
        from nclab.train import distributed as ddp

        # the experiment's folder is locked for the whole command (the experiments also lock it themselves, and
        # a default --out is known only once the experiment resolves it); under torchrun rank 0 alone writes the
        # folder, so it alone locks it and writes the report
        out = getattr(args, "out", None)
        writer = ddp.env_rank() == 0
        with run_lock(out) if out and writer else contextlib.nullcontext():
            try:
                return func(args)
            finally:
                run_dir = getattr(args, "run_dir", None) or getattr(args, "out", None)
                if writer and run_dir and os.path.isdir(run_dir):
                    from nclab.report import try_write_report
                    from nclab.rundir import RunDir

                    if RunDir(run_dir).is_run():
                        report = try_write_report(run_dir)
                        _print_paths(args, RunDir(run_dir), report)

    return run


def _print_paths(args, run, report) -> None:
    """The last lines of every experiment: where its results and report are (stderr under --json, whose stdout
    is JSON only)."""
    import sys

    stream = sys.stderr if getattr(args, "json", False) else sys.stdout
    if run.results_path.exists():
        print(f"results: {run.results_path}", file=stream)
    if report:
        print(f"report: {report}", file=stream)
