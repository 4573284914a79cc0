"""``nclab recover``: fine-label recovery for a trained run or for arrays on disk.

    nclab recover --run runs/NAME [--json]
    nclab recover --features-train F.npy --coarse-train c.npy --fine-train y.npy \\
                  --features-test G.npy --coarse-pred p.npy --fine-test z.npy [--hierarchy SPEC|H.json] [--json]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from nclab.contracts.recovery import METHODS, PARAMS, RecoverySpec, spec_from_options  # noqa: F401 (METHODS: re-exported for the CLI)
from nclab.utils.errors import NclabError
from nclab.utils.io import json_clean

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
    for prm in PARAMS:  # choices, types and help from the one table (nclab.contracts.recovery)
        if prm.name == "max_train":
            continue
        flag = "--" + prm.name.replace("_", "-")
        extra = {"action": argparse.BooleanOptionalAction} if prm.kind is bool else {"type": prm.kind}
        p.add_argument(flag, default=None, choices=prm.choices, **extra,
                       help=f"{prm.help} (default: the run's recorded setting; arrays mode: {_show(prm.default)})")
    p.add_argument("--fit-on", default="train", choices=("train", "test"),
                   help="split the clusters are fitted and named on (default train; test = transductive)")
    p.add_argument("--oracle", action="store_true", help="route test samples by their true coarse label")
    p.add_argument("--tap", default=None, help="run mode: cluster this tap instead of the penultimate features")
    p.add_argument("--max-train", type=int, default=None,
                   help="run mode: cluster at most this many train samples (default: the run's recorded setting)")
    p.add_argument("--save", action="store_true", help="run mode: write features/ and add 'recovery' to results.json")
    p.add_argument("--confusion", action="store_true", help="include the confusion matrix in --json output")
    p.add_argument("--probe", action="store_true",
                   help="also fit a supervised linear probe inside each superclass (an upper bound, not the protocol)")
    p.add_argument("--compare-methods", action="store_true",
                   help="run every candidate method/normalisation (nclab.finegrain.select) and print its train-split "
                        "selection score next to its test accuracy; the choice uses train labels only (run mode: "
                        "the run's saved features/ when present)")
    p.add_argument("--candidates", default=None, metavar="A,B,...",
                   help="with --compare-methods: only these candidates (default all)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.set_defaults(func=run)


def _load(path: str, what: str) -> np.ndarray:
    from nclab.utils.arrays import load_array

    return load_array(path, "--" + what.replace("_", "-"))


def _hierarchy(spec: str | None, n_fine: int):
    if spec is None:
        return None
    from nclab.data.builders import hierarchy_from_arg

    return hierarchy_from_arg(spec, n_fine)


def _show(v) -> str:
    return {True: "on", False: "off", None: "all"}.get(v, str(v)) if isinstance(v, (bool, type(None))) else str(v)


def cli_changes(args) -> dict:
    """The recovery settings given on the command line (None = not given, keep the run's)."""
    return {prm.name: getattr(args, prm.name, None) for prm in PARAMS}


def run(args) -> int:
    opts = cli_changes(args)
    given = [a for a in ARRAYS if getattr(args, a)]
    if args.run and given:
        raise NclabError("pass either --run or the --features-*/--*-train/--*-test arrays, not both")
    if args.candidates and not args.compare_methods:
        raise NclabError("--candidates selects the candidates of --compare-methods; add --compare-methods")
    if args.compare_methods:
        return _compare(args, opts, given)
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
    if rep.get("guarded") and not args.json:
        print(f"guard: in superclass(es) {', '.join(map(str, rep['guarded']))} the un-normalised k-means partition "
              f"was the better optimum in the {rep['options']['normalize']} space and was kept (--no-guard to "
              "turn this off)")
    if args.json:
        print(json.dumps(json_clean(rep)))  # strict JSON: NaN (e.g. a superclass without test rows) -> null
    else:
        print(f"fine-label recovery: test {rep['test_acc']:.4f} (true-coarse routing {rep['oracle_test_acc']:.4f}), "
              f"train clustering {rep['train_acc']:.4f}, coarse test {rep['coarse_test_acc']:.4f}, "
              f"ARI {rep['ari']:.3f}, NMI {rep['nmi']:.3f}")
        ke = rep.get("k_estimation")
        if ke:
            print(f"  k per superclass estimated by {ke['criterion']} (1..{ke['k_max']}): the hierarchy's count in "
                  f"{ke['correct']} of {ke['groups']} superclasses")
        changed = rep.get("settings", {}).get("changed")
        if changed:
            print(f"  settings changed from the run's: {'; '.join(changed)}")
        probe = {q["coarse"]: q for q in rep.get("probe", {}).get("per_superclass", [])}
        for p in rep["per_superclass"]:
            extra = f"  probe test {probe[p['coarse']]['test_acc']:.4f}" if p["coarse"] in probe else ""
            if ke:
                extra += f"  k {p.get('k')} (true {len(p['fine'])})"
            print(f"  {p['coarse']:>3} {p['name'][:30]:<30} train {p['train_acc']:.4f}  "
                  f"test {p['test_acc']:.4f}{extra}")
        if "probe" in rep:
            print(f"linear probe (supervised): test {rep['probe']['test_acc']:.4f} "
                  f"(true-coarse routing {rep['probe']['oracle_test_acc']:.4f})")
    return 0


def _from_arrays(args, opts) -> dict:
    from nclab.finegrain.evaluate import as_hierarchy, evaluate_recovery
    from nclab.finegrain.probe import linear_probe

    ignored = [f"--{k.replace('_', '-')}" for k in ("tap", "max_train", "save") if getattr(args, k) is not None
               and getattr(args, k) is not False]
    if ignored:
        raise NclabError(f"{', '.join(ignored)} apply to --run mode only; drop them in arrays mode")
    a = {k: _load(getattr(args, k), k) for k in ARRAYS if getattr(args, k)}
    for k, v in a.items():
        if v.size == 0:
            raise NclabError(f"--{k.replace('_', '-')} {getattr(args, k)} is empty; "
                             "pass the arrays of a non-empty split")
    fine_all = np.concatenate([a["fine_train"].ravel(), a["fine_test"].ravel()])
    if not np.issubdtype(fine_all.dtype, np.integer) and not (
            np.issubdtype(fine_all.dtype, np.floating) and np.all(fine_all == np.round(fine_all))):
        raise NclabError("--fine-train/--fine-test must hold integer labels")
    h = _hierarchy(args.hierarchy, int(fine_all.max()) + 1)
    pred = None if args.oracle else a["coarse_pred"]
    spec = RecoverySpec().replace(**opts)
    rep = evaluate_recovery(a["features_train"], a["coarse_train"], a["fine_train"], a["features_test"], pred,
                            a["fine_test"], h, fit_on=args.fit_on, **spec.estimator_kwargs())
    if args.probe:
        h = as_hierarchy(h, a["fine_train"], a["coarse_train"])
        rep["probe"] = linear_probe(a["features_train"], a["coarse_train"], a["fine_train"], a["features_test"],
                                    pred, a["fine_test"], h)
    return rep


def recorded_spec(run, cfg) -> tuple[RecoverySpec, str]:
    """The recovery settings a run recorded: its config's ``recovery`` section, or, for a run written before
    configs had one, the options of its results.json recovery; else the defaults. Returns (spec, where)."""
    import yaml

    try:
        raw = yaml.safe_load(run.config_path.read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        raw = None
    if isinstance(raw, dict) and "recovery" in raw:
        return RecoverySpec.of_config(cfg), "config.yaml"
    old = spec_from_options(run.read_results().get("recovery", {}).get("options"))
    if old is not None:
        return old, "results.json"
    return RecoverySpec.of_config(cfg), "defaults"


def _from_run(args, opts) -> dict:
    from nclab.experiments.finegrain_runs import check_max_train
    from nclab.finegrain.pipeline import recover_trainer, save_arrays
    from nclab.rundir import RunDir
    from nclab.train import Trainer, load_config

    run = RunDir(args.run).require()
    if not run.config_path.exists() or not (run.checkpoints / "last.pt").exists():
        raise NclabError(f"{run.path} has no config.yaml or checkpoints/last.pt; pass a trained run directory")
    check_max_train(args.max_train)
    if args.fit_on != "train" or args.oracle:
        raise NclabError("--fit-on test / --oracle apply to arrays mode; a run report always has both routings")
    cfg = load_config(str(run.config_path)).replace(callbacks={})  # measuring only: no callbacks run
    recorded, where = recorded_spec(run, cfg)
    spec = recorded.replace(**opts)
    changed = spec.differences(recorded)
    if not args.quiet:
        from nclab.utils.progress import say

        say(f"recovery settings: the run's ({where})" + (f", changed: {'; '.join(changed)}" if changed else ""))
    tr = Trainer(cfg, run.path)
    tr.load_checkpoint(model_only=True)
    rep = recover_trainer(tr, tap=args.tap, spec=spec, keep_arrays=args.save or args.probe)
    rep["settings"] = {"recorded_in": where, "changed": changed}
    arrays = rep.pop("_arrays", None)
    if args.probe:
        from nclab.finegrain.pipeline import setup_for
        from nclab.finegrain.probe import probe_saved_arrays

        rep["probe"] = probe_saved_arrays(arrays, setup_for(tr).hierarchy)
    if args.save:
        from nclab.rundir import read_results
        from nclab.runlock import run_lock

        with run_lock(run.path):  # --save writes into the run folder: one writer at a time, as for training
            save_arrays(run, arrays)
            res = read_results(run.path).to_dict()  # an older results.json read as the current version
            res["recovery"] = {k: v for k, v in rep.items() if k not in ("coarse_test_acc", "net_test_acc", "probe")}
            res["coarse_test_acc"] = rep["coarse_test_acc"]
            if "probe" in rep:
                res["probe"] = rep["probe"]
            run.write_results(res)
    return rep


def _saved_arrays(run) -> dict | None:
    """A run's ``features/*.npy`` (written by reproduce / recover --save), or None when any is missing."""
    keys = ("train_features", "train_coarse", "train_fine", "test_features", "test_coarse_pred", "test_fine")
    folder = run.path / "features"
    if not all((folder / f"{k}.npy").exists() for k in keys):
        return None
    out = {k: np.load(folder / f"{k}.npy") for k in keys}
    if (folder / "train_coarse_noisy.npy").exists():
        out["train_coarse_noisy"] = np.load(folder / "train_coarse_noisy.npy")
    return out


def _compare(args, opts: dict, given: list[str]) -> int:
    """``--compare-methods``: every candidate on one run's (or the arrays') features; the choice uses train only."""
    from nclab.finegrain.evaluate import as_hierarchy
    from nclab.finegrain.select import choose, compare_methods

    if args.run and given:
        raise NclabError("pass either --run or the --features-*/--*-train/--*-test arrays, not both")
    base = {k: v for k, v in opts.items() if v is not None}
    if args.run:
        from nclab.rundir import RunDir

        run = RunDir(args.run).require()
        arrays = _saved_arrays(run)
        if arrays is None:
            from nclab.finegrain.pipeline import recover_trainer
            from nclab.train import Trainer, load_config

            cfg = load_config(str(run.config_path)).replace(callbacks={})
            tr = Trainer(cfg, run.path)
            tr.load_checkpoint(model_only=True)
            arrays = recover_trainer(tr, keep_arrays=True)["_arrays"]
        hierarchy = None  # inferred from the train (fine, coarse) pairs
    elif given:
        missing = [a for a in ARRAYS if a not in given and not (a == "coarse_pred" and args.oracle)]
        if missing:
            raise NclabError(f"arrays mode needs --{' --'.join(m.replace('_', '-') for m in missing)}")
        a = {k: _load(getattr(args, k), k) for k in ARRAYS if getattr(args, k)}
        arrays = {"train_features": a["features_train"], "train_coarse": a["coarse_train"],
                  "train_fine": a["fine_train"], "test_features": a["features_test"],
                  "test_coarse_pred": None if args.oracle else a["coarse_pred"], "test_fine": a["fine_test"]}
        fine_all = np.concatenate([a["fine_train"].ravel(), a["fine_test"].ravel()]).astype(np.int64)
        hierarchy = _hierarchy(args.hierarchy, int(fine_all.max()) + 1)
    else:
        raise NclabError("--compare-methods needs --run runs/NAME or the six --features-*/--*-train/--*-test arrays")
    if hierarchy is None:
        hierarchy = as_hierarchy(None, arrays["train_fine"], arrays["train_coarse"])
    names = [n.strip() for n in args.candidates.split(",") if n.strip()] if args.candidates else None
    rows = compare_methods(arrays, hierarchy, base, names)
    sel = choose([rows])
    out = {"chosen": sel["chosen"], "rule": sel["rule"], "candidates": rows}
    if args.json:
        print(json.dumps(json_clean(out)))
        return 0
    w = max(len(r["name"]) for r in rows)
    print(f"{'candidate':<{w}}  {'train acc':>9}  {'train silh.':>11}  {'test acc':>8}  {'oracle test':>11}")
    for r in rows:
        mark = "  <- chosen" if r["name"] == sel["chosen"] else ""
        print(f"{r['name']:<{w}}  {100 * r['train_acc']:8.2f}%  {r['train_silhouette']:11.4f}  "
              f"{100 * r['test_acc']:7.2f}%  {100 * r['oracle_test_acc']:10.2f}%{mark}")
    print(f"selection: {sel['rule']}")
    return 0
