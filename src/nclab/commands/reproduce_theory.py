"""``nclab reproduce dln-synthetic | hierarchy-synthetic | dln-cifar10-imbalanced``: the parsers of the theory
experiments. The experiments themselves are :mod:`nclab.experiments.theory_runs`; this module only checks the
command line, calls them and prints their tables (or, with ``--json``, results.json).
"""

from __future__ import annotations

import json
import math

from nclab.experiments import theory_runs
from nclab.experiments.theory_runs import CIFAR_COUNTS, validate_predictions
from nclab.utils.errors import NclabError
from nclab.utils.io import json_clean as _clean
from nclab.utils.seed import check_seed


def _print_tables(results: dict) -> None:
    for t in results.get("tables", []):
        print(f"\n{t['title']}")
        print(" | ".join(str(c) for c in t["columns"]))
        for r in t["rows"]:
            print(" | ".join("-" if v is None else str(v) for v in r))
    if results.get("notes"):
        print("\nCells where gradient descent does not reach the closed form:")
        for n in results["notes"]:
            print(f"  {n}")


def _common_args(p) -> None:
    p.add_argument("--seed", type=int, default=0, help="seed of data and initialisation (default 0)")
    p.add_argument("--force", action="store_true", help="overwrite a run already in --out")
    p.add_argument("--json", action="store_true", help="print results.json on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def add_experiments(sub) -> None:
    p = sub.add_parser("dln-synthetic", help="deep linear UFM: GD vs closed form, K=4, M in {1,3,6,9}, MSE and CE")
    p.add_argument("--out", default="runs/dln-synthetic", help="run directory (default runs/dln-synthetic)")
    p.add_argument("--quick", action="store_true", help="M in {1,3}, 2000 steps (about half a minute on 2 CPU cores)")
    p.add_argument("--iters", type=int, default=None, help="GD steps (default 20000; quick 2000)")
    p.add_argument("--lambda", dest="lam", type=float, default=5e-4, help="λ_W = λ_H (default 5e-4)")
    p.add_argument("--width", type=int, default=32, help="feature and hidden width d (default 32)")
    _common_args(p)
    p.set_defaults(func=_cmd_dln)

    p = sub.add_parser("hierarchy-synthetic", help="paper A's synthetic hierarchy: coarse training vs fine structure")
    p.add_argument("--out", default="runs/hierarchy-synthetic", help="run directory (default runs/hierarchy-synthetic)")
    p.add_argument("--quick", action="store_true",
                   help="fine separations {1, 3}, noise 1, 300 steps (seconds) instead of the full grid")
    p.add_argument("--steps", type=int, default=None, help="GD steps (default 2000; quick 300)")
    _common_args(p)
    p.set_defaults(func=_cmd_hier)

    p = sub.add_parser("dln-cifar10-imbalanced", help="MLP + M bias-free linear layers on imbalanced CIFAR-10 (MSE)")
    p.add_argument("--out", default="runs/dln-cifar10-imbalanced",
                   help="run directory (default runs/dln-cifar10-imbalanced)")
    p.add_argument("--quick", action="store_true", help="M in {1,3}, width 64, 30 epochs")
    p.add_argument("--data", default=None,
                   help="dataset spec (default imagefolder:$NCLAB_DATA/cifar10-jpeg.tar.gz)")
    p.add_argument("--depths", default=None, help="comma list of M (default 1,3,6)")
    p.add_argument("--epochs", type=int, default=None, help="full-batch epochs (default 600; quick 30)")
    p.add_argument("--width", type=int, default=None, help="MLP and head width (default 256; quick 64)")
    p.add_argument("--lambda-w", type=float, default=5e-4, help="weight decay λ_W of every layer (default 5e-4)")
    p.add_argument("--lambda-h", type=float, default=5e-4, help="trainer normalisation: λ_H/2 · mean_i ‖h_i‖²")
    p.add_argument("--lr", type=float, default=0.05, help="learning rate (default 0.05)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="default auto (CUDA when present)")
    _common_args(p)
    p.set_defaults(func=_cmd_cifar)


def _emit(results: dict, args) -> int:
    if getattr(args, "json", False):
        print(json.dumps(_clean(results)))
    else:
        _print_tables(results)  # the reproduce command then prints the results and report paths
    return 0


def _cmd_dln(args) -> int:
    if not (math.isfinite(args.lam) and args.lam > 0):
        raise NclabError(f"--lambda must be a positive number (weight and feature decay), got {args.lam}")
    if args.width < 4:
        raise NclabError(f"--width must be >= 4 (the number of classes), got {args.width}")
    if args.iters is not None and args.iters < 1:
        raise NclabError(f"--iters must be >= 1, got {args.iters}")
    check_seed(args.seed, "--seed")
    validate_predictions([([100] * 4, M, args.lam, args.lam) for M in (1, 3, 6, 9)])
    return _emit(theory_runs.run_dln_synthetic(args.out, quick=args.quick, iters=args.iters, lam=args.lam,
                                               width=args.width, seed=args.seed, force=args.force), args)


def _cmd_hier(args) -> int:
    if args.steps is not None and args.steps < 1:
        raise NclabError("--steps must be >= 1")
    check_seed(args.seed, "--seed")
    return _emit(theory_runs.run_hierarchy_synthetic(args.out, quick=args.quick, steps=args.steps, seed=args.seed,
                                                     force=args.force), args)


def _cmd_cifar(args) -> int:
    if args.epochs is not None and args.epochs < 1:
        raise NclabError("--epochs must be >= 1")
    depths = None
    if args.depths:
        bad = NclabError(f"--depths must be a comma list of integers >= 1 (e.g. 1,3,6), got {args.depths!r}")
        try:
            depths = [int(v) for v in args.depths.split(",")]
        except ValueError:
            raise bad from None
        if min(depths) < 1:
            raise bad
    if args.width is not None and args.width < len(CIFAR_COUNTS):
        raise NclabError(f"--width must be >= {len(CIFAR_COUNTS)} (the number of classes: a narrower head cannot "
                         f"reach the closed form), got {args.width}")
    check_seed(args.seed, "--seed")
    N = sum(CIFAR_COUNTS)
    validate_predictions([(CIFAR_COUNTS, M, args.lambda_w, args.lambda_h / N) for M in (depths or [1, 3, 6])])
    return _emit(theory_runs.run_dln_cifar10_imbalanced(args.out, quick=args.quick, source=args.data, depths=depths,
                                                        epochs=args.epochs, width=args.width, lambda_w=args.lambda_w,
                                                        lambda_h=args.lambda_h, lr=args.lr, device=args.device,
                                                        seed=args.seed, force=args.force), args)
