"""``nclab metrics``: neural-collapse metrics for feature arrays on disk or for a trained run.

    nclab metrics --features F.npy --labels y.npy [--weights W.npy] [--bias b.npy] [--hierarchy SPEC|H.json] --json
    nclab metrics --run runs/<name> [--epoch E] [--splits train,test] [--taps head.0] --json
"""

from __future__ import annotations

import json

from nclab.utils.io import json_clean
from nclab.train.config import option


def add_parser(sub) -> None:
    p = sub.add_parser("metrics",
                       help="neural-collapse metrics (NC1-NC4, ETF/orthogonal-frame errors) for arrays or a run",
                       description=__doc__.split("\n\n")[0])
    src = p.add_argument_group("arrays")
    src.add_argument("--features", metavar="F.npy", help="(N, D) float features (.npy, or .npz / .npz:NAME for one "
                     "array of an archive; the same for the other arrays)")
    src.add_argument("--labels", metavar="y.npy", help="(N,) integer labels 0..K-1")
    src.add_argument("--weights", metavar="W.npy",
                     help="(K, D) classifier weights (adds weight metrics, self_duality, ncc_mismatch)")
    src.add_argument("--bias", metavar="b.npy", help="(K,) classifier bias (used by ncc_mismatch)")
    src.add_argument("--num-classes", type=int, default=None, help="K (default: rows of W, else max label + 1)")
    src.add_argument("--hierarchy", metavar="SPEC|H.json", default=None,
                     help="labels are fine; report coarse, fine and fine_within_coarse views. A spec (mod:5, "
                          "adjacent:5, file:PATH, ...) or a Hierarchy.to_dict() JSON file")
    run = p.add_argument_group("run")
    run.add_argument("--run", metavar="RUN_DIR", help="a run directory with checkpoints/")
    run.add_argument("--epoch", type=int, default=None, help="use checkpoints/epoch_XXXX.pt (default: last.pt)")
    run.add_argument("--splits", default="train", help="comma list of train,test (default: train)")
    run.add_argument("--taps", default=None,
                     help="comma list of model taps for per-layer metrics (default: head layers)")
    run.add_argument("--device", default=None,
                     choices=[c for c in option("train.device").choices if c != "auto"],
                     help="override the run's train.device")
    p.add_argument("--json", action="store_true", help="print only the metrics JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=main)


def _load_npy(path: str, what: str):
    from nclab.utils.arrays import load_array

    return load_array(path, f"--{what}")


def from_arrays(args) -> dict:
    import numpy as np

    from nclab.collapse import hierarchy_metrics_from_arrays, metrics_from_arrays
    from nclab.data.builders import hierarchy_from_arg
    from nclab.utils.errors import NclabError

    if not args.labels:
        raise NclabError("--features needs --labels y.npy (one integer label per row)")
    H = _load_npy(args.features, "features")
    y = _load_npy(args.labels, "labels")
    if H.ndim != 2 or not np.issubdtype(H.dtype, np.number) or np.iscomplexobj(H):
        raise NclabError(f"features must be a numeric (N, D) array, got shape {H.shape} dtype {H.dtype}")
    if y.ndim != 1 or y.shape[0] != H.shape[0]:
        raise NclabError(f"labels must be (N,) = ({H.shape[0]},), got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise NclabError(f"labels must be integers, got dtype {y.dtype}")
    y = y.astype(np.int64)
    W = _load_npy(args.weights, "weights").astype(np.float64) if args.weights else None
    b = _load_npy(args.bias, "bias").astype(np.float64) if args.bias else None
    if b is not None and W is None:
        raise NclabError("--bias needs --weights")
    if W is not None and (W.ndim != 2 or W.shape[1] != H.shape[1]):
        raise NclabError(f"weights must be (K, D={H.shape[1]}), got shape {W.shape}")
    if args.hierarchy:
        if args.num_classes is not None:
            raise NclabError("--num-classes and --hierarchy both set the classes; the hierarchy's fine classes "
                             "are used, drop --num-classes")
        hier = hierarchy_from_arg(args.hierarchy, int(y.max()) + 1 if y.size else 1)
        return hierarchy_metrics_from_arrays(H.astype(np.float64, copy=False), y, hier, W, b)
    return metrics_from_arrays(H.astype(np.float64, copy=False), y, W, b, num_classes=args.num_classes)


def from_run(args) -> dict:
    from nclab.collapse.callback import NCMetricsCallback
    from nclab.rundir import RunDir
    from nclab.utils.errors import NclabError
    from nclab.utils.progress import say

    run = RunDir(args.run).require()
    if not run.config_path.exists():
        raise NclabError(f"{run.config_path} is missing; pass a run directory written by `nclab train`")
    ckpt = run.checkpoints / (f"epoch_{args.epoch:04d}.pt" if args.epoch is not None else "last.pt")
    if not ckpt.exists():
        have = sorted(p.name for p in run.checkpoints.glob("*.pt")) if run.checkpoints.exists() else []
        raise NclabError(f"no checkpoint {ckpt}; available: {', '.join(have) or 'none'} "
                         "(train with train.keep_checkpoints=true to keep per-epoch ones)")
    from nclab.train import Trainer, load_config

    cfg = load_config(run.config_path, overrides=[f"train.device={args.device}"] if args.device else [])
    cfg = cfg.replace(callbacks={})  # measuring only: the run's own callbacks (recovery, ...) are not needed
    trainer = Trainer(cfg, run.path)
    state = trainer.load_checkpoint(ckpt, model_only=True)  # one error line for a damaged or foreign file
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    bad = [s for s in splits if s not in ("train", "test")]
    if bad or not splits:
        raise NclabError(f"--splits must be a comma list of train and test, got {args.splits!r}")
    taps = None if args.taps is None else [t.strip() for t in args.taps.split(",") if t.strip()]
    cb = NCMetricsCallback(epochs="all", splits=splits, taps=taps)
    cb.on_train_start(trainer)
    say(f"measuring NC metrics of {ckpt} on {', '.join(splits)}")
    out = {"run": str(run.path), "checkpoint": str(ckpt), "epoch": int(state.get("epoch", args.epoch or 0))}
    out.update(cb.compute(trainer))
    return out


def main(args) -> int:
    from nclab.utils.errors import NclabError

    if bool(args.features) == bool(args.run):
        raise NclabError("give either --features F.npy --labels y.npy, or --run RUN_DIR")
    # options of the other mode would be ignored silently: say so instead
    if args.features:
        extra = [f"--{n}" for n, v in (("epoch", args.epoch), ("taps", args.taps), ("device", args.device))
                 if v is not None]
        extra += ["--splits"] if args.splits != "train" else []
    else:
        extra = [f"--{n.replace('_', '-')}" for n in ("labels", "weights", "bias", "num_classes", "hierarchy")
                 if getattr(args, n) is not None]
    if extra:
        mode, other = ("--features", "--run") if args.features else ("--run", "--features")
        raise NclabError(f"{', '.join(extra)} only apply with {other}; drop {'it' if len(extra) == 1 else 'them'} "
                         f"when using {mode}")
    res = json_clean(from_arrays(args) if args.features else from_run(args))  # non-finite -> None
    from nclab.train import distributed as ddp

    if not ddp.is_main():  # under torchrun every rank holds the same merged metrics; rank 0 prints them
        return 0
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    _print_table(res)
    return 0


def _print_table(res: dict, prefix: str = "") -> None:
    for k, v in res.items():
        if isinstance(v, dict):
            _print_table(v, f"{prefix}{k}.")
        elif isinstance(v, float):
            print(f"{prefix + str(k):<40s} {v:.6g}")
        else:
            print(f"{prefix + str(k):<40s} {'undefined' if v is None else v}")
