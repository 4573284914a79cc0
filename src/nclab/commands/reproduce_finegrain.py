"""``nclab reproduce cifar10-coarse5 | cifar100-coarse20 | cifar10-finer``: the parsers of paper A's experiments.

The experiments themselves are :mod:`nclab.experiments.finegrain_runs` (``run_experiment``); this module only
parses the command line and calls them. ``add_common_args`` and ``time_limit_override`` are shared with
``nclab sweep``.
"""

from __future__ import annotations

import argparse
import json

from nclab.experiments import finegrain_runs
from nclab.experiments.finegrain_runs import EXPERIMENTS, default_out, summary_text
from nclab.utils.errors import NclabError


def add_experiments(sub) -> None:
    for name, spec in EXPERIMENTS.items():
        p = sub.add_parser(name, help=spec["help"],
                           description=spec["help"] + ". " + finegrain_runs.__doc__.split("\n\n")[2])
        add_common_args(p, spec)
        p.set_defaults(func=lambda args, name=name: _cli(name, args))


def add_common_args(p: argparse.ArgumentParser, spec: dict) -> None:
    p.add_argument("--recipe", default="fast",
                   help="paper (ResNet-18, 350 epochs, GPU; paper A's recipe), fast (the 2-core CPU recipe; "
                        "the default), gpu-fast (a wider, deeper fastnet for one GPU), or any config name/YAML path")
    sweep = spec.get("sweep", False)  # sweep cells never train the baselines and always resume

    def default(key: str) -> str:  # a sweep runs any experiment: name each one's default
        if not sweep:
            return spec[key] or "the recipe's"
        return "the experiment's: " + ", ".join(f"{s[key] or 'the recipe' + chr(39) + 's'} for {n}"
                                                for n, s in EXPERIMENTS.items())

    p.add_argument("--data", default=None, help=f"dataset source spec (default: {default('data')})")
    p.add_argument("--hierarchy", default=spec["hierarchy"], help=f"hierarchy spec (default {default('hierarchy')}; "
                   "mod:K, adjacent:K, random:SEED, file:PATH, ...)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. --set optim.epochs=20 (repeatable)")
    p.add_argument("--epochs", type=int, default=None, help="same as --set optim.epochs=N")
    p.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="same as --set train.time_limit_s=SECONDS: pause each training run cleanly before it would "
                        "pass SECONDS (exit code 75), continue with --resume (for GPU time in slices)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                   help="same as --set train.device=...; default: the recipe's (auto = CUDA when present)")
    p.add_argument("--no-baseline", action="store_true",
                   help="(sweep cells never train it; accepted for symmetry)" if sweep else
                   "skip training the fine-label baseline sub-run")
    p.add_argument("--no-random-init", action="store_true",
                   help="(sweep cells never compute it; accepted for symmetry)" if sweep else
                   "skip the random-init-network baseline")
    p.add_argument("--no-probe", action="store_true",
                   help="skip the supervised linear probe inside each superclass (nclab.finegrain.probe)")
    p.add_argument("--max-train", type=int, default=None,
                   help="cluster at most this many train samples in the final recovery (default: all)")
    p.add_argument("--out", default=None, help="sweep folder, one sub-folder per cell (default runs/sweep-<experiment>-"
                   "<recipe>)" if sweep else "experiment/run directory (default runs/<experiment>-<recipe>)")
    p.add_argument("--resume", action="store_true",
                   help="(a sweep always skips complete cells and continues interrupted ones)" if sweep else
                   "continue an interrupted experiment")
    p.add_argument("--force", action="store_true",
                   help="retrain every cell, complete ones too" if sweep else "overwrite an existing run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--json", action="store_true", help="print results.json on stdout")


def time_limit_override(args) -> list[str]:
    """``args.overrides`` plus ``train.time_limit_s`` when ``--time-limit`` was given."""
    extra = [] if args.time_limit is None else [f"train.time_limit_s={args.time_limit}"]
    return list(args.overrides) + extra


def _cli(name: str, args) -> int:
    if args.resume and args.force:
        raise NclabError("--resume continues the experiment and --force retrains it; pass one of them")
    args.run_dir = str(default_out(name, args.recipe, args.out))  # where the CLI writes the report
    res = finegrain_runs.run_experiment(
        name, recipe=args.recipe, data=args.data, hierarchy=args.hierarchy, overrides=time_limit_override(args),
        epochs=args.epochs, device=args.device, baseline=not args.no_baseline,
        random_init=not args.no_random_init, probe=not args.no_probe, max_train=args.max_train, out=args.out,
        resume=args.resume, force=args.force)
    from nclab.train import distributed as ddp

    if not ddp.is_main():  # under torchrun rank 0 prints (every rank holds its results)
        return 0
    if args.json:
        print(json.dumps(res))
    else:
        print(summary_text(res))
    return 0
