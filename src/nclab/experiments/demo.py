"""``nclab demo``: paper A's effect in about two minutes on a laptop CPU, no network.

Data: a class-balanced 10,000-image subset of the CIFAR-10 training split (1,000 per class; the full
10,000-image test split), from the JPEG copy at ``$NCLAB_DATA/cifar10-jpeg.tar.gz`` (docs/data.md) or any CIFAR-10
source passed as ``data``. The 10 classes are merged into 5 superclasses by ``mod:5`` (airplane+dog,
automobile+frog, bird+horse, cat+ship, deer+truck). A small fastnet (widths 32/64/64, the fast recipe's
optimiser) is trained on the 5 coarse labels only; NC metrics (coarse and fine views, train and test) and
fine-label recovery are logged during training. At the end the 10 fine labels are recovered by clustering
the last-layer features inside each superclass (the run's recovery settings, config ``recovery``: k-means,
PCA whitening with the guard, test samples routed by the network's predicted superclass), next to two
baselines with the same protocol and routing: raw pixels and the randomly initialised network's features,
and the same network trained on the 10 fine labels.

What it shows: features trained only on coarse labels still carry the fine labels, well above raw pixels
and a random network (docs/recovery.md has the measured table and the command).

Without a CIFAR-10 copy the demo falls back to scikit-learn's bundled 8x8 digits (``mod:2``, an MLP), and
says so: there raw pixels are already good features, so the baselines come close to the trained features.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nclab.data.load import CIFAR10_COPY, data_root, default_cifar10

if TYPE_CHECKING:
    from nclab.train.config import Config

CIFAR_CONFIG: dict[str, Any] = {
    "name": "demo",
    "seed": 0,
    "data": {"source": CIFAR10_COPY, "hierarchy": "mod:5", "labels": "coarse",
             "subsample": [1000] * 10, "augment": {"crop": 2, "flip": True}},
    "model": {"name": "fastnet", "widths": [32, 64, 64], "head_bias": False},
    "optim": {"name": "sgd", "lr": 0.75, "momentum": 0.85, "nesterov": True, "weight_decay": 1.33e-3,
              "bias_lr_scale": 64.0, "batch_size": 256, "epochs": 6, "lookahead_every": 5},
    "schedule": {"name": "onecycle", "warmup": 0.23, "start_factor": 0.2, "final_factor": 0.07},
    "loss": {"name": "ce", "label_smoothing": 0.2},
    "train": {"device": "cpu", "bf16": True, "channels_last": True, "tta": "none", "eval_every": 1,
              "checkpoint_every": 1},
    # NC metrics every epoch on the train split, the recovery curve at two points (the last one is the final
    # recovery's number): the whole demo stays within 3 minutes of 2 CPU cores, decoding the data included
    "callbacks": {"nc_metrics": {"epochs": "all", "splits": ["train"]},
                  "recovery": {"epochs": [3, 6]}},
}
DIGITS_CONFIG: dict[str, Any] = {
    "name": "demo",
    "seed": 0,
    "data": {"source": "digits", "hierarchy": "mod:2", "labels": "coarse"},
    "model": {"name": "mlp", "width": 512, "depth": 1},
    "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 64, "epochs": 30},
    "schedule": {"name": "cosine"},
    "train": {"device": "cpu", "bf16": False, "channels_last": False, "eval_every": 1},
    "callbacks": {"nc_metrics": {"epochs": "log", "log_points": 12, "splits": ["train", "test"]},
                  "recovery": {"epochs": "log", "log_points": 6}},
    # on digits whitening amplifies pixel noise (the guard then falls back); centre + L2 is the better choice here
    "recovery": {"normalize": "center+l2"},
}
EXPERIMENT = "demo: trained on coarse labels only, recover the fine labels"


def default_source() -> str | None:
    """The CIFAR-10 copy the demo reads by default, or None when it is not in the data folder ($NCLAB_DATA)."""
    return default_cifar10()


def demo_config(epochs: int | None = None, seed: int = 0, device: str = "cpu", data: str | None = None) -> Config:
    """The resolved demo config: CIFAR-10 when ``data`` (a CIFAR-10 source spec) is given or the shared copy
    exists, else (or with ``data="digits"``) the digits fallback; ``epochs``/``seed``/``device`` overridable."""
    from nclab.train import load_config

    source = data or default_source() or "digits"
    cfg = copy.deepcopy(DIGITS_CONFIG if source == "digits" else CIFAR_CONFIG)
    cfg["data"]["source"] = source
    cfg["seed"] = int(seed)
    cfg["train"]["device"] = device
    if epochs is not None:
        cfg["optim"]["epochs"] = int(epochs)
        rec = cfg["callbacks"]["recovery"]
        if isinstance(rec.get("epochs"), list):  # keep the curve's points inside the shorter run
            rec["epochs"] = sorted({min(e, int(epochs)) for e in rec["epochs"]})
    return load_config(cfg)


def _nc_table(metrics: list[dict]) -> dict | None:
    """First vs last epoch of the headline collapse numbers (train split)."""
    if not metrics:
        return None
    first, last = metrics[0], metrics[-1]
    rows = []
    for key, label in (("nc.train.coarse.nc1", "NC1, coarse labels (collapses)"),
                       ("nc.train.coarse.nc1_quotient", "tr Σ_W / tr Σ_B, coarse labels"),
                       ("nc.train.fine.nc1", "NC1, fine labels"),
                       ("nc.train.fine_within_coarse.mean", "NC1 of fine labels within a superclass (mean)"),
                       ("recovery.test_acc", "fine-label recovery, test (%)")):
        if first.get(key) is not None or last.get(key) is not None:
            vals = [first.get(key), last.get(key)]
            if key.endswith("_acc"):  # an accuracy among unitless rows: percent text, like the other tables
                vals = [None if v is None else f"{100 * v:.2f} %" for v in vals]
            rows.append([label, *vals])
    return {"title": "Collapse over training (train split)",
            "columns": ["quantity", f"epoch {first.get('epoch')}", f"epoch {last.get('epoch')}"], "rows": rows}


def run_demo(out: str | Path = "runs/demo", *, epochs: int | None = None, seed: int = 0, device: str = "cpu",
             baseline: bool = True, data: str | None = None) -> dict:
    """Run the demo into ``out`` (overwriting an earlier demo there); returns results.json's dict plus
    ``results_path``. ``nclab demo`` then writes the HTML reports (``nclab.report.write_report(out)``)."""
    from nclab.data import load_dataset
    from nclab.finegrain.pipeline import baselines as run_baselines
    from nclab.finegrain.pipeline import recover_trainer, run_spec, save_arrays
    from nclab.rundir import RunDir
    from nclab.train import Trainer
    from nclab.utils.errors import NclabError
    from nclab.utils.progress import say

    t0 = time.perf_counter()
    out = Path(out)
    run = RunDir(out)
    if run.is_run() and not str(run.read_results().get("experiment", "")).startswith("demo") \
            and run.read_config().get("name") != "demo":
        raise NclabError(f"{out} holds another run, not a demo (the demo overwrites its folder); pass another --out")
    cfg = demo_config(epochs, seed, device, data)
    source = cfg.data.source
    if source == "digits":
        say(f"demo: no CIFAR-10 copy at {data_root() / 'cifar10-jpeg.tar.gz'} (set NCLAB_DATA to its folder or "
            "pass --data SPEC); using the bundled digits, where raw pixels "
            "are already good features")
    ds = load_dataset(source)
    if ds.num_classes != 10 and source != "digits":
        raise NclabError(f"the demo's data must be CIFAR-10 (10 classes); {source} has {ds.num_classes}")
    results: dict[str, Any] = {"experiment": EXPERIMENT, "source": ds.source, "hierarchy": cfg.data.hierarchy}

    say(f"demo: training {cfg.model.name} on the {cfg.data.hierarchy} coarse labels of {ds.name} "
        f"({cfg.optim.epochs} epochs) -> {out}")
    tr = Trainer(cfg, out, dataset=ds)
    tr.fit(force=True)
    spec = run_spec(tr)  # the run's recorded recovery settings: `nclab recover --run` reads the same ones
    say("demo: fine-label recovery from the last-layer features")
    rep = recover_trainer(tr, spec=spec, keep_arrays=True)
    arrays = rep.pop("_arrays")
    save_arrays(run, arrays)
    results["coarse_test_acc"] = rep.pop("coarse_test_acc")
    rep.pop("net_test_acc", None)
    results["recovery"] = rep
    say("demo: baselines (raw pixels, random-init network), same protocol and routing")
    results["baselines"] = run_baselines(tr, arrays["test_coarse_pred"], spec=spec)
    nc = _nc_table(tr.metrics)
    if baseline:
        say("demo: the same network trained on the 10 fine labels (baseline)")
        bcfg = cfg.replace(name="demo-baseline", data=cfg.data.replace(labels="fine"),
                           callbacks={},  # only its test accuracy is needed
                           train=cfg.train.replace(eval_every=cfg.optim.epochs))
        btr = Trainer(bcfg, out / "baseline", dataset=ds)
        btr.fit(force=True)
        results["baselines"]["fine_trained"] = {"test_acc": float(btr.evaluate("test")["acc"]), "run": "baseline"}
        results["subruns"] = ["baseline"]
    results["tables"] = [t for t in (nc,) if t]
    results["wall_time_s"] = time.perf_counter() - t0
    run.write_results(results)
    results["results_path"] = str(run.results_path)
    return results
