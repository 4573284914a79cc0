"""Paper A's experiments (Yang, Steinhardt & Hu, ICML 2023), one command each, all resumable.

``nclab reproduce cifar10-coarse5``   train on 5 coarse CIFAR-10 labels, recover the 10 fine labels.
``nclab reproduce cifar100-coarse20`` train on the 20 CIFAR-100 superclasses, recover the 100 classes.
``nclab reproduce cifar10-finer``     train on 20 pseudo classes (each class split in 2), recover the 10 true ones.

Layout of ``--out DIR`` (default ``runs/<experiment>-<recipe>``): DIR itself is the main training run (config,
metrics.jsonl with ``nc.*`` and ``recovery.*`` keys, checkpoints), plus ``results.json``, ``features/`` and the
baseline sub-run ``DIR/baseline`` (same recipe, trained on the fine/true labels). ``--resume`` continues
whatever is unfinished: a complete run is not retrained, a partial one continues from its last checkpoint.
``results.json`` is rewritten after each stage, so a run cut short still leaves what was measured.

Under torchrun (``WORLD_SIZE`` > 1) every rank runs the same code: the trainings (main run and baseline sub-run)
are data-parallel through the :class:`~nclab.train.Trainer`; every decision read from the folder (resume, reuse,
inherited time limit) is rank 0's, broadcast; the analysis after each training (recovery, probe, pursuit, raw-pixel
and random-init baselines, the baseline's test accuracy) runs on rank 0 alone, which alone writes ``results.json``
and ``features/``, while the other ranks wait in :func:`~nclab.train.distributed.main_first` and receive rank 0's
results (or its error). A pause (``--time-limit``) is decided inside the trainer for all ranks together.
docs/distributed.md.

The command-line parsers (``nclab reproduce``, ``nclab sweep``) are in ``nclab.commands.reproduce_finegrain``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from nclab.rundir import RunDir, recovery_ratios
from nclab.utils.errors import NclabError
from nclab.utils.progress import say

RECIPES = {"paper": "paper_resnet18", "fast": "fast", "gpu-fast": "gpu_fast"}

# Callback schedules per recipe: NC metrics + recovery are a full pass over the data each, affordable often on a
# GPU, rarely on a CPU. The CPU curve clusters a 10,000-sample subset whitened on the axes holding 80 % of the
# variance, which tracks the final recovery far more closely on so few samples than the default 95 %
# (measurements: docs/recovery.md). These two keys override the run's recovery settings for the curve only (the
# report names them); the final recovery uses the run's own (config ``recovery``).
CALLBACKS = {
    "paper": {"nc_metrics": {"epochs": "log", "log_points": 30, "splits": ["train"]},
              "recovery": {"epochs": "log", "log_points": 15}},
    "gpu-fast": {"nc_metrics": {"epochs": "log", "log_points": 8, "splits": ["train"]},
                 "recovery": {"epochs": "log", "log_points": 6}},
    "default": {"nc_metrics": {"epochs": "log", "log_points": 3, "splits": ["train"]},
                "recovery": {"epochs": "log", "log_points": 4, "max_train": 10000, "whiten_var": 0.8}},
}

EXPERIMENTS: dict[str, dict[str, Any]] = {
    "cifar10-coarse5": {
        "help": "train on 5 coarse CIFAR-10 labels, recover the 10 fine labels (paper A: 93 percent)",
        "data": None,  # the recipe's source (the shared CIFAR-10 copy)
        "hierarchy": "mod:5",
        "labels": "coarse",
        "paper": {"fine_test_acc": 0.93},
    },
    "cifar100-coarse20": {
        "help": "train on the 20 CIFAR-100 superclasses, recover the 100 classes (k=5 per superclass)",
        "data": "cifar100",
        "hierarchy": "cifar100",
        "labels": "coarse",
        "paper": {},
    },
    "cifar10-finer": {
        "help": "train on 20 pseudo classes (each CIFAR-10 class split in 2), recover the 10 true classes",
        "data": None,
        "hierarchy": "split:2",
        "labels": "fine",
        "paper": {},
    },
}


def check_max_train(max_train: int | None) -> None:
    """``--max-train`` is checked before any training (it is used only after it)."""
    if max_train is not None and int(max_train) < 1:
        raise NclabError(f"--max-train must be a positive number of train samples, got {max_train}; leave it out "
                         "to cluster all of them")


def inherited_time_limit(overrides: list[str], run_dirs: list[Path]) -> list[str]:
    """``["train.time_limit_s=S"]`` from the first of ``run_dirs`` whose saved config has a limit, unless
    ``overrides`` set one (an explicit ``--time-limit`` or ``--set train.time_limit_s=null`` wins): a paused run
    rerun with a plain ``--resume`` keeps its slice length, as the pause message promises."""
    if any(o.split("=", 1)[0].strip() == "train.time_limit_s" for o in overrides):
        return []
    for d in run_dirs:
        r = RunDir(d)
        old = r.read_config().get("train", {}).get("time_limit_s") if r.config_path.exists() else None
        if old is not None:
            return [f"train.time_limit_s={old}"]
    return []


def default_out(name: str, recipe: str, out=None) -> Path:
    """The experiment's run directory: ``out``, else ``runs/<experiment>-<recipe>``."""
    return Path(out) if out else Path("runs") / f"{name}-{Path(str(recipe)).stem}"


# how long the other ranks wait for rank 0's analysis of a trained run (clustering all train features, raw-pixel
# and random-init baselines, probe: far longer than one collective's train.dist_timeout_s)
ANALYSIS_TIMEOUT_S = 7200.0


def join_ranks(cfg) -> bool:
    """Under torchrun: join the process group now (the first :class:`~nclab.train.Trainer` would, with the same
    device and timeout), so that the rank-0-only steps around the trainings can hand their results and errors to
    every rank (:func:`nclab.train.distributed.main_first`). One process: nothing, False."""
    from nclab.train import distributed as ddp

    if ddp.env_world_size() <= 1:
        return False
    from nclab.train.trainer import resolve_device

    return ddp.init_from_env(resolve_device(cfg.train.device), cfg.train.dist_timeout_s)


def on_main(fn, cfg):
    """``fn()`` on rank 0 alone, its result (or error) on every rank; the others wait up to
    :data:`ANALYSIS_TIMEOUT_S`, then collectives get ``train.dist_timeout_s`` again. One process: ``fn()``."""
    from nclab.train import distributed as ddp

    if not ddp.active():
        return fn()
    with ddp.collective_timeout(ANALYSIS_TIMEOUT_S, then_s=cfg.train.dist_timeout_s):
        return ddp.main_first(fn)


def recipe_config(recipe: str) -> str:
    return RECIPES.get(recipe, recipe)


def build_config(name: str, *, recipe: str = "fast", data: str | None = None, hierarchy: str | None = None,
                 overrides: list[str] | None = None, epochs: int | None = None, device: str | None = None,
                 labels: str | None = None, run_name: str | None = None, callbacks: bool = True):
    """The resolved training config of experiment ``name`` (user ``overrides`` applied last)."""
    from nclab.train import load_config

    spec = EXPERIMENTS[name]
    base = load_config(recipe_config(recipe))
    pre = [f"data.labels={labels or spec['labels']}", f"name={run_name or name}"]
    src = data or spec["data"]
    if src:
        pre.append(f"data.source={src}")
    h = hierarchy if hierarchy is not None else spec["hierarchy"]
    if h and h not in ("none", "null"):
        pre.append(f"data.hierarchy={h}")
    if epochs is not None:
        pre.append(f"optim.epochs={epochs}")
    if device:
        pre.append(f"train.device={device}")
    cfg = load_config(base, pre)
    if callbacks and not cfg.callbacks:
        cfg = cfg.replace(callbacks=json.loads(json.dumps(CALLBACKS.get(recipe, CALLBACKS["default"]))))
    return load_config(cfg, list(overrides or []))


def _train(cfg, run_dir: Path, resume: bool, force: bool):
    """Train (or resume, or skip when complete) one run; returns the Trainer with its final model loaded."""
    from nclab.train import Trainer
    from nclab.train.config import config_diff

    from nclab.train import distributed as ddp

    run = RunDir(run_dir)
    status = ddp.main_first(lambda: run.read_status().get("status"))  # rank 0's view, on every rank
    if resume and status == "complete":
        diff = config_diff(run.read_config(), cfg)
        if diff:
            say(f"warning: {run_dir} was trained with other values of {', '.join(diff[:5])}; using the trained run "
                "as it is (pass --force without --resume to retrain)")
        tr = Trainer(cfg, run_dir)
        tr.load_checkpoint()
        say(f"{run_dir}: complete, not retrained")
        return tr
    tr = Trainer(cfg, run_dir)
    tr.fit(resume=resume, force=force)
    return tr


def _fine_baseline_cfg(cfg, name: str):
    """Same recipe, trained on the fine labels (split experiment: the true classes); no recovery callback."""
    data = cfg.data.replace(labels="fine", hierarchy=None if name == "cifar10-finer" else cfg.data.hierarchy)
    return cfg.replace(data=data, name=cfg.name + "-baseline",
                       callbacks={k: v for k, v in cfg.callbacks.items() if k != "recovery"})


RATIO_LABELS = {
    "recovered_over_fine_trained": "ratio: recovery / same network trained on the fine labels",
    "pursuit_over_fine_trained": "ratio: projection-pursuit recovery / same network trained on the fine labels",
    "recovered_over_probe": "ratio: recovery / linear probe (both predicted routing)",
    "oracle_recovered_over_oracle_probe": "ratio: recovery / linear probe (both true coarse routing)",
}


def _table(res: dict) -> dict:
    rec = res.get("recovery", {})
    if rec.get("kind") == "split":  # cifar10-finer: the net was trained on pseudo classes finer than the data
        rows = [["true classes recovered by clustering all features (one group, no routing)",
                 _pct(rec.get("test_acc"))],
                ["true-class accuracy of the net (its pseudo-class predictions mapped to their classes)",
                 _pct(res.get("true_class_test_acc"))],
                ["pseudo-class accuracy of the net (the labels it was trained on)", _pct(res.get("net_test_acc"))],
                ["pseudo classes recovered by clustering inside each true class (true-class routing)",
                 _pct(res.get("pseudo_recovery", {}).get("oracle_test_acc"))]]
        rows += [[f"baseline: {k.replace('_', ' ')}", _pct(v.get("test_acc"))]
                 for k, v in res.get("baselines", {}).items()]
        return {"title": f"{res['experiment']}: test accuracy", "columns": ["method", "test accuracy"], "rows": rows}
    rows = [["recovery (predicted coarse routing)", _pct(rec.get("test_acc"))],
            ["recovery (true coarse routing)", _pct(rec.get("oracle_test_acc"))],
            ["coarse test accuracy", _pct(res.get("coarse_test_acc"))]]
    if res.get("recovery_pursuit"):
        rows.insert(2, ["recovery, projection-pursuit split (predicted coarse routing)",
                        _pct(res["recovery_pursuit"].get("test_acc"))])
    if res.get("probe"):
        rows.append(["linear probe, predicted routing (supervised upper bound)", _pct(res["probe"].get("test_acc"))])
    for k, v in res.get("baselines", {}).items():
        rows.append([f"baseline: {k.replace('_', ' ')}", _pct(v.get("test_acc"))])
        if v.get("coarse_test_acc") is not None:
            rows.append([f"baseline: {k.replace('_', ' ')}, coarse accuracy of its predictions",
                         _pct(v["coarse_test_acc"])])
    if res.get("paper", {}).get("fine_test_acc") is not None:
        rows.append(["paper A (ResNet-18, 350 epochs, CIFAR-10)", _pct(res["paper"]["fine_test_acc"])])
    for k, v in (res.get("ratios") or {}).items():
        rows.append([RATIO_LABELS.get(k, k), f"{v:.3f}"])
    return {"title": f"{res['experiment']}: fine-label test accuracy", "columns": ["method", "test accuracy"],
            "rows": rows}


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def summary_text(res: dict) -> str:
    t = res["tables"][0]
    w = max(len(r[0]) for r in t["rows"])
    return "\n".join([t["title"]] + [f"  {r[0]:<{w}}  {r[1]}" for r in t["rows"]]
                     + [f"  results: {res.get('results_path')}"])


# what a finished analysis of the trained run wrote (reused by a later --resume slice; see _analysis_key)
_ANALYSIS_KEYS = ("coarse_test_acc", "net_test_acc", "pseudo_recovery", "true_class_test_acc", "recovery",
                  "final_metrics", "train_time_s", "probe", "recovery_pursuit")


def _analysis_key(run: RunDir, **settings) -> dict:
    """What the analysis of a trained run depends on: the checkpoint (its completion record: final epoch and
    training wall time, unique to one training) and the analysis settings. JSON-normalised, as results.json
    stores it."""
    st = run.read_status()
    trained = {"status": st.get("status"), "epoch": st.get("epoch"), "wall_time_s": st.get("wall_time_s")}
    return json.loads(json.dumps({"trained": trained, **settings}))


def _analyse(tr, results: dict, write, *, spec, probe: bool, which: tuple) -> None:
    """Recovery from the trained run's features, the supervised probe, the pursuit split and the raw-pixel /
    random-init baselines, into ``results`` (``write()`` after each stage: a run cut short keeps what it measured)."""
    import numpy as np

    from nclab.finegrain.evaluate import evaluate_recovery
    from nclab.finegrain.pipeline import baselines as run_baselines
    from nclab.finegrain.pipeline import recover_trainer, save_arrays, setup_for
    from nclab.finegrain.probe import probe_saved_arrays

    run = tr.run
    opts = spec.estimator_kwargs()
    rep = recover_trainer(tr, spec=spec, keep_arrays=True)
    arrays = rep.pop("_arrays")
    save_arrays(run, arrays)
    coarse_acc = rep.pop("coarse_test_acc")
    if rep.get("kind") != "split":  # split: one group, nothing is routed (the "coarse accuracy" would be 100 %)
        results["coarse_test_acc"] = coarse_acc
    results["net_test_acc"] = rep.pop("net_test_acc")
    for k in ("pseudo_recovery", "true_class_test_acc"):
        if k in rep:
            results[k] = rep.pop(k)
    results["recovery"] = rep
    last = tr.metrics[-1] if tr.metrics else {}
    results["final_metrics"] = last
    results["train_time_s"] = last.get("train_time_total_s")  # optimisation steps only (no eval/callbacks)
    write()
    if "coarse_test_acc" in results:
        say(f"recovery: test {rep['test_acc']:.4f} (oracle {rep['oracle_test_acc']:.4f}), "
            f"coarse {results['coarse_test_acc']:.4f}")
    else:
        say(f"true classes by clustering: test {rep['test_acc']:.4f}; true-class accuracy of the net "
            f"{results.get('true_class_test_acc', float('nan')):.4f}")
    hier = setup_for(tr).hierarchy  # the hierarchy the recovery grouped by (probe and pursuit use it too)
    if probe:  # is the fine structure linearly present where clustering misses it? (supervised, not the protocol)
        results["probe"] = probe_saved_arrays(arrays, hier)
        write()
    two_way = bool((np.bincount(hier.fine_to_coarse) == 2).any())  # pursuit only changes two-class superclasses
    if opts.get("method", "kmeans") == "kmeans" and opts.get("clustering", "per_coarse") == "per_coarse" and two_way:
        # the same protocol with the projection-pursuit split (unsupervised; see nclab.finegrain.pursuit)
        noisy = "train_coarse_noisy" in arrays  # label noise: group by the labels the net was trained on
        pursuit = evaluate_recovery(arrays["train_features"], arrays["train_coarse_noisy" if noisy else "train_coarse"],
                                    arrays["train_fine"], arrays["test_features"], arrays["test_coarse_pred"],
                                    arrays["test_fine"], hier, noisy_coarse=noisy, **{**opts, "method": "pursuit"})
        results["recovery_pursuit"] = {k: pursuit[k] for k in ("test_acc", "oracle_test_acc", "train_acc", "ari",
                                                                "nmi", "per_superclass", "options")}
        write()

    if which:
        results["baselines"] = run_baselines(tr, arrays["test_coarse_pred"], spec=spec, which=which)
        write()


def run_experiment(name: str, *, recipe: str = "fast", data: str | None = None, hierarchy: str | None = None,
                   overrides: list[str] | None = None, epochs: int | None = None, device: str | None = None,
                   baseline: bool = True, random_init: bool = True, raw_pixels: bool = True, probe: bool = True,
                   max_train: int | None = None, out: str | Path | None = None, resume: bool = False,
                   force: bool = False, recovery_options: dict | None = None) -> dict:
    """Train, measure and write ``results.json`` for experiment ``name``; returns the results dict. Holds the
    lock of the run directory throughout (:func:`nclab.runlock.run_lock`; under torchrun rank 0 alone takes it and
    every rank returns rank 0's results)."""
    import contextlib

    from nclab.runlock import run_lock
    from nclab.train import distributed as ddp

    kw = dict(recipe=recipe, data=data, hierarchy=hierarchy, overrides=overrides, epochs=epochs, device=device,
              baseline=baseline, random_init=random_init, raw_pixels=raw_pixels, probe=probe, max_train=max_train,
              resume=resume, force=force, recovery_options=recovery_options)
    if name not in EXPERIMENTS:
        raise NclabError(f"unknown experiment {name!r}; use one of {', '.join(EXPERIMENTS)}")
    with run_lock(default_out(name, recipe, out)) if ddp.env_rank() == 0 else contextlib.nullcontext():
        return _run_experiment(name, out=out, **kw)


def _run_experiment(name: str, *, recipe: str, data: str | None, hierarchy: str | None,
                    overrides: list[str] | None, epochs: int | None, device: str | None,
                    baseline: bool, random_init: bool, raw_pixels: bool, probe: bool,
                    max_train: int | None, out: str | Path | None, resume: bool,
                    force: bool, recovery_options: dict | None) -> dict:
    import numpy as np

    from nclab.finegrain.features import trainer_features
    from nclab.finegrain.pipeline import setup_for
    from nclab.train import distributed as ddp

    if name not in EXPERIMENTS:
        raise NclabError(f"unknown experiment {name!r}; use one of {', '.join(EXPERIMENTS)}")
    check_max_train(max_train)
    out = default_out(name, recipe, out)
    overrides = list(overrides or [])
    if resume:  # rank 0's reading when the ranks already form a group (a sweep's later cells)
        overrides += ddp.main_first(lambda: inherited_time_limit(overrides, [out]))
    cfg = build_config(name, recipe=recipe, data=data, hierarchy=hierarchy, overrides=overrides, epochs=epochs,
                       device=device, run_name=out.name)
    join_ranks(cfg)
    run = RunDir(out)  # written by rank 0 only: every write() below runs inside on_main
    t0 = time.perf_counter()
    results: dict[str, Any] = {"experiment": name, "paper": EXPERIMENTS[name]["paper"], "recipe": recipe,
                               "hierarchy": cfg.data.hierarchy, "source": cfg.data.source}

    def write() -> None:
        results["ratios"] = recovery_ratios(results)
        results["tables"] = [_table(results)]
        run.write_results(results)

    tr = _train(cfg, out, resume, force)
    from nclab.contracts.recovery import RecoverySpec

    # the run's recorded settings (config ``recovery``), with what the command line changed
    spec = RecoverySpec.of_config(cfg).replace(max_train=max_train, **(recovery_options or {}))
    which = tuple(k for k, on in (("raw_pixels", raw_pixels), ("random_init", random_init)) if on)
    opts = {k: v for k, v in spec.to_dict().items() if k != "max_train"}

    def analyse() -> dict:  # rank 0 only under torchrun (the others receive its results)
        key = _analysis_key(run, max_train=spec.max_train, options=opts, probe=probe, baselines=which)
        prior = run.read_results() if resume else {}  # {} when there is none yet
        if prior.get("analysis_of") == key:
            # a resumed slice after the trained run was fully analysed (only the fine-label baseline is left): the
            # recovery, probe, pursuit and raw/random baselines of this very checkpoint are in results.json already
            results.update({k: v for k, v in prior.items() if k in _ANALYSIS_KEYS})
            kept = {k: v for k, v in prior.get("baselines", {}).items() if k in which}
            if kept:
                results["baselines"] = kept
            say(f"{out}: recovery and baselines of the trained run taken from results.json (same checkpoint and "
                "options)")
        else:
            _analyse(tr, results, write, spec=spec, probe=probe, which=which)
        results["analysis_of"] = key
        write()
        return results

    results = on_main(analyse, cfg)
    tr = None  # the main run's trainer (model, data) is not needed while the baseline trains
    if baseline:
        bdir = out / "baseline"
        bcfg = _fine_baseline_cfg(cfg, name)
        # a complete baseline is reused unless --force retrains (then the main run was retrained too)
        reuse = not force and ddp.main_first(lambda: RunDir(bdir).read_status().get("status")) == "complete"
        btr = _train(bcfg, bdir, resume or reuse, force)
        bst = setup_for(btr)
        by_features = bst.kind == "fine" and bst.net_hierarchy is not None
        # evaluate() is sharded under torchrun: every rank takes part (the same accuracy on each)
        test_acc = None if by_features else float(btr.evaluate("test")["acc"])

        def baseline_results() -> dict:  # rank 0 only under torchrun
            blast = btr.metrics[-1] if btr.metrics else {}
            fine_trained = {"run": "baseline", "train_time_s": blast.get("train_time_total_s")}
            if by_features:
                # one pass over the test split gives both numbers: trainer_features' predictions are the argmax
                # evaluate() takes (same flip-averaged features, same classifier, same autocast)
                _, pred = trainer_features(btr, "test")
                fine_trained["test_acc"] = float(np.mean(pred == bst.fine["test"]))
                # how often the fine-trained net is right about the superclass (the routing `nclab recover` gives
                # it): what a coarse-trained net would need to match (under mod:5 most CIFAR-10 confusions cross
                # superclasses)
                fine_trained["coarse_test_acc"] = float(np.mean(bst.route(pred) == bst.coarse["test"]))
            else:
                fine_trained["test_acc"] = test_acc
            results.setdefault("baselines", {})["fine_trained"] = fine_trained
            results["subruns"] = ["baseline"]
            write()
            return results

        results = on_main(baseline_results, bcfg)

    def finish() -> dict:
        results["wall_time_s"] = time.perf_counter() - t0
        write()
        return results

    results = on_main(finish, cfg)
    results["results_path"] = str(run.results_path)
    return results
