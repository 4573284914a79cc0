"""``nclab recover``: fine-label recovery for a trained run or for arrays on disk.

    nclab recover --run runs/NAME [--json]
    nclab recover --features-train F.npy --coarse-train c.npy --fine-train y.npy \\
                  --features-test G.npy --coarse-pred p.npy --fine-test z.npy [--hierarchy SPEC|H.json] [--json]
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nclab.utils.errors import NclabError
from nclab.utils.io import json_clean

METHODS = ("kmeans", "pursuit", "gmm", "spectral", "agglomerative")  # no heavy import at parser build time

ARRAY_HELP = {  # the six .npy inputs of arrays mode, in argument order
    "features_train": "arrays mode: train features, (N, D) float",
    "coarse_train": "arrays mode: true coarse labels of the train rows, (N,) int",
    "fine_train": "arrays mode: fine labels of the train rows, (N,) int (used only to name the clusters)",
    "features_test": "arrays mode: test features, (M, D) float",
    "coarse_pred": "arrays mode: the network's predicted coarse labels of the test rows, (M,) int (routing; "
                   "not needed with --oracle)",
    "fine_test": "arrays mode: true fine labels of the test rows, (M,) int (scoring)",
}
ARRAYS = tuple(ARRAY_HELP)


def add_parser(sub) -> None:
    p = sub.add_parser("recover", help="recover fine labels by clustering features (a run, or .npy arrays)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default=None, help="a run directory written by nclab train/reproduce")
    for a in ARRAYS:
        p.add_argument("--" + a.replace("_", "-"), default=None, metavar="NPY", help=ARRAY_HELP[a])
    p.add_argument("--hierarchy", default=None,
                   help="arrays mode: mod:K / adjacent:K / file:PATH / a .json Hierarchy dict; default: inferred "
                        "from the train (coarse, fine) pairs")
    p.add_argument("--method", default="kmeans", choices=METHODS,  # = nclab.finegrain.recovery.METHODS (a test checks)
                   help="kmeans (paper A's protocol), pursuit (two-class superclasses: the most bimodal of the "
                        "k-means split and minimum-kurtosis splits), gmm, spectral, agglomerative")
    p.add_argument("--normalize", default="whiten", choices=("none", "center", "l2", "center+l2", "whiten"),
                   help="feature normalisation inside each superclass before clustering (default whiten: PCA "
                        "axes holding 95 %% of the variance, each scaled to unit variance; docs/recovery.md)")
    p.add_argument("--clustering", default="per_coarse", choices=("per_coarse", "global"),
                   help="per_coarse (paper A: k_c clusters inside each superclass, test rows routed by "
                        "--coarse-pred) or global (one clustering into all fine classes, no routing)")
    p.add_argument("--fit-on", default="train", choices=("train", "test"),
                   help="split the clusters are fitted and named on (default train; test = transductive)")
    p.add_argument("--oracle", action="store_true", help="route test samples by their true coarse label")
    p.add_argument("--n-init", type=int, default=10, help="k-means restarts (default 10)")
    p.add_argument("--seed", type=int, default=0, help="seed of the clustering restarts (default 0)")
    p.add_argument("--tap", default=None, help="run mode: cluster this tap instead of the penultimate features")
    p.add_argument("--max-train", type=int, default=None, help="run mode: cluster at most this many train samples")
    p.add_argument("--save", action="store_true", help="run mode: write features/ and add 'recovery' to results.json")
    p.add_argument("--confusion", action="store_true", help="include the confusion matrix in --json output")
    p.add_argument("--probe", action="store_true",
                   help="also fit a supervised linear probe inside each superclass (an upper bound, not the protocol)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.set_defaults(func=run)


def _load(path: str, what: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise NclabError(f"--{what.replace('_', '-')} {p} does not exist; pass a .npy file")
    try:
        return np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise NclabError(f"--{what.replace('_', '-')} {p} is not a readable .npy array ({e}); save it with numpy.save")


def _hierarchy(spec: str | None, n_fine: int):
    if spec is None:
        return None
    from nclab.data.builders import hierarchy_from_arg

    return hierarchy_from_arg(spec, n_fine)


def run(args) -> int:
    opts = {"method": args.method, "normalize": args.normalize, "clustering": args.clustering,
            "n_init": args.n_init, "seed": args.seed}
    given = [a for a in ARRAYS if getattr(args, a)]
    if args.run and given:
        raise NclabError("pass either --run or the --features-*/--*-train/--*-test arrays, not both")
    if args.run:
        rep = _from_run(args, opts)
    elif given:
        missing = [a for a in ARRAYS if a not in given and not (a == "coarse_pred" and args.oracle)]
        if missing:
            raise NclabError(f"arrays mode needs --{' --'.join(m.replace('_', '-') for m in missing)}")
        rep = _from_arrays(args, opts)
    else:
        raise NclabError("nothing to recover; pass --run runs/NAME or the six --features-*/--*-train/--*-test arrays")
    if not args.confusion:
        rep.pop("confusion", None)
    if args.json:
        print(json.dumps(json_clean(rep)))  # strict JSON: NaN (e.g. a superclass without test rows) -> null
    else:
        print(f"fine-label recovery: test {rep['test_acc']:.4f} (true-coarse routing {rep['oracle_test_acc']:.4f}), "
              f"train clustering {rep['train_acc']:.4f}, coarse test {rep['coarse_test_acc']:.4f}, "
              f"ARI {rep['ari']:.3f}, NMI {rep['nmi']:.3f}")
        probe = {q["coarse"]: q for q in rep.get("probe", {}).get("per_superclass", [])}
        for p in rep["per_superclass"]:
            extra = f"  probe test {probe[p['coarse']]['test_acc']:.4f}" if p["coarse"] in probe else ""
            print(f"  {p['coarse']:>3} {p['name'][:30]:<30} train {p['train_acc']:.4f}  test {p['test_acc']:.4f}{extra}")
        if "probe" in rep:
            print(f"linear probe (supervised): test {rep['probe']['test_acc']:.4f} "
                  f"(true-coarse routing {rep['probe']['oracle_test_acc']:.4f})")
    return 0


def _from_arrays(args, opts) -> dict:
    from nclab.finegrain.evaluate import as_hierarchy, evaluate_recovery
    from nclab.finegrain.probe import linear_probe

    ignored = [f"--{k.replace('_', '-')}" for k in ("tap", "max_train", "save") if getattr(args, k)]
    if ignored:
        raise NclabError(f"{', '.join(ignored)} apply to --run mode only; drop them in arrays mode")
    a = {k: _load(getattr(args, k), k) for k in ARRAYS if getattr(args, k)}
    for k, v in a.items():
        if v.size == 0:
            raise NclabError(f"--{k.replace('_', '-')} {getattr(args, k)} is empty; pass the arrays of a non-empty split")
    fine_all = np.concatenate([a["fine_train"].ravel(), a["fine_test"].ravel()])
    if not np.issubdtype(fine_all.dtype, np.integer) and not (
            np.issubdtype(fine_all.dtype, np.floating) and np.all(fine_all == np.round(fine_all))):
        raise NclabError("--fine-train/--fine-test must hold integer labels")
    h = _hierarchy(args.hierarchy, int(fine_all.max()) + 1)
    pred = None if args.oracle else a["coarse_pred"]
    rep = evaluate_recovery(a["features_train"], a["coarse_train"], a["fine_train"], a["features_test"], pred,
                            a["fine_test"], h, fit_on=args.fit_on, **opts)
    if args.probe:
        h = as_hierarchy(h, a["fine_train"], a["coarse_train"])
        rep["probe"] = linear_probe(a["features_train"], a["coarse_train"], a["fine_train"], a["features_test"],
                                    pred, a["fine_test"], h)
    return rep


def _from_run(args, opts) -> dict:
    from nclab.finegrain.experiments import check_max_train
    from nclab.finegrain.pipeline import recover_trainer, save_arrays
    from nclab.rundir import RunDir
    from nclab.train import Trainer, load_config

    run = RunDir(args.run).require()
    if not run.config_path.exists() or not (run.checkpoints / "last.pt").exists():
        raise NclabError(f"{run.path} has no config.yaml or checkpoints/last.pt; pass a trained run directory")
    check_max_train(args.max_train)
    if args.fit_on != "train" or args.oracle:
        raise NclabError("--fit-on test / --oracle apply to arrays mode; a run report always has both routings")
    cfg = load_config(str(run.config_path))
    cfg["callbacks"] = {}  # measuring only: no callbacks run
    tr = Trainer(cfg, run.path)
    tr.load_checkpoint()
    rep = recover_trainer(tr, tap=args.tap, max_train=args.max_train, keep_arrays=args.save or args.probe, **opts)
    arrays = rep.pop("_arrays", None)
    if args.probe:
        from nclab.finegrain.pipeline import setup_for
        from nclab.finegrain.probe import probe_saved_arrays

        rep["probe"] = probe_saved_arrays(arrays, setup_for(tr).hierarchy)
    if args.save:
        save_arrays(run, arrays)
        res = run.read_results()
        res["recovery"] = {k: v for k, v in rep.items() if k not in ("coarse_test_acc", "net_test_acc", "probe")}
        res["coarse_test_acc"] = rep["coarse_test_acc"]
        if "probe" in rep:
            res["probe"] = rep["probe"]
        run.write_results(res)
    return rep
