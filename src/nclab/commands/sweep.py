"""``nclab sweep EXPERIMENT --grid lr=0.1,0.01,0.001 wd=5e-3,5e-4,5e-5``: one run per grid cell.

Cells run one after another into ``OUT/<key>=<v>_<key>=<v>/`` (each an ``nclab reproduce`` run without the
fine-trained baseline); a cell whose results.json holds a recovery and whose run is complete is skipped, so
rerunning the command resumes the sweep cell by cell. ``OUT/results.json`` gets ``grid`` (axes and one entry
per finished cell: ``recovery_acc``, ``coarse_acc``, ``nc1`` = last logged ``nc.train.coarse.nc1``,
``recovery_over_probe`` = recovery / the supervised probe's test accuracy (cells train no fine-label baseline), and
with ``data.label_noise`` ``clean_train_recovery_acc`` / ``corrupted_train_recovery_acc``) and a table; e.g.
``--grid data.label_noise.rate=0,0.2,0.4`` sweeps label noise.
Axis names: ``lr`` (optim.lr), ``wd`` (optim.weight_decay), ``epochs``, ``bs`` (optim.batch_size), ``seed``, or
any dotted config key. With a ``seed`` axis of 2+ values, ``grid.over_seeds`` and a second table give the mean and
standard deviation over seeds of each combination of the other axes (the report's heatmaps show those means).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from nclab.utils.errors import NclabError, RunPaused

ALIASES = {"lr": "optim.lr", "wd": "optim.weight_decay", "epochs": "optim.epochs", "bs": "optim.batch_size",
           "momentum": "optim.momentum"}


def add_parser(sub) -> None:
    from nclab.commands.reproduce_finegrain import add_common_args
    from nclab.experiments.finegrain_runs import EXPERIMENTS

    p = sub.add_parser("sweep", help="grid of runs of one experiment (e.g. the paper's lr x wd grid), resumable",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("experiment", choices=sorted(EXPERIMENTS), help="the experiment each cell runs")
    p.add_argument("--grid", nargs="+", required=True, metavar="KEY=V1,V2,...",
                   help="axes, e.g. lr=0.1,0.01,0.001 wd=5e-3,5e-4,5e-5 (lr, wd, epochs, bs, momentum, seed or any "
                        "dotted config key); a seed=0,1,2 axis adds mean and std over seeds")
    add_common_args(p, {"data": None, "hierarchy": None, "sweep": True})
    p.set_defaults(func=run, hierarchy=None)


def parse_grid(items: list[str]) -> dict[str, list]:
    import yaml

    axes: dict[str, list] = {}
    for it in items:
        if "=" not in it:
            raise NclabError(f"--grid {it!r} needs the form key=v1,v2 (e.g. lr=0.1,0.01)")
        k, vals = it.split("=", 1)
        k = k.strip()
        values = [yaml.safe_load(v) for v in vals.split(",") if v.strip()]
        if not k or not values:
            raise NclabError(f"--grid {it!r} has an empty key or no values; use e.g. lr=0.1,0.01")
        values = [float(v) if isinstance(v, str) and _is_float(v) else v for v in values]
        same = [a for a in axes if ALIASES.get(a, a) == ALIASES.get(k, k)]
        if same:
            raise NclabError(f"--grid names axis {ALIASES.get(k, k)} twice ({same[0]!r} and {k!r}); "
                             "give each axis once")
        if len({repr(v) for v in values}) != len(values):
            raise NclabError(f"--grid {it!r} repeats a value; give each value once")
        axes[k] = values
    return axes


def _is_float(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def cell_name(cell: dict) -> str:
    return "_".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in cell.items())


def _cell_done(d: Path) -> bool:
    from nclab.rundir import RunDir

    r = RunDir(d)
    res = r.read_results()  # wall_time_s comes with run_experiment's last results write only: every stage done
    return r.read_status().get("status") == "complete" and "recovery" in res and "wall_time_s" in res


# config keys that change how a cell runs, not what it trains: a finished cell stays valid across them
RUN_ONLY_KEYS = ("name", "train.time_limit_s", "train.device")


def _nc1(d: Path):
    from nclab.rundir import RunDir

    vals = [m["nc.train.coarse.nc1"] for m in RunDir(d).read_metrics() if m.get("nc.train.coarse.nc1") is not None]
    return vals[-1] if vals else None


def cell_row(cell: dict, d: Path, res: dict) -> dict:
    """One finished cell's entry in ``grid.cells``: the axes, ``run``, :data:`SUMMARY_METRICS` from its
    results.json (``recovery_over_probe`` = results.json ``ratios.recovered_over_probe``; the label-noise pair
    only for runs with ``data.label_noise``)."""
    rec = res.get("recovery", {})
    noise = rec.get("label_noise") or {}
    row = {**cell, "run": d.name, "recovery_acc": rec.get("test_acc"), "coarse_acc": res.get("coarse_test_acc"),
           "nc1": _nc1(d), "recovery_over_probe": (res.get("ratios") or {}).get("recovered_over_probe")}
    if noise:
        row["clean_train_recovery_acc"] = noise.get("recovery_train_acc_clean")
        row["corrupted_train_recovery_acc"] = noise.get("recovery_train_acc_corrupted_true_routing")
    return row


def _inherited_time_limit(args, cell_dirs: list[Path]) -> list[str]:
    """A sweep paused by ``--time-limit`` and rerun without one keeps its slice length for every cell
    (:func:`~nclab.experiments.finegrain_runs.inherited_time_limit`); ``--force`` retrains from scratch and inherits
    nothing, like ``reproduce --force``."""
    from nclab.commands.reproduce_finegrain import time_limit_override
    from nclab.experiments.finegrain_runs import inherited_time_limit

    return [] if getattr(args, "force", False) else inherited_time_limit(time_limit_override(args), cell_dirs)


def run(args) -> int:
    from nclab.commands.reproduce_finegrain import time_limit_override
    from nclab.experiments.finegrain_runs import build_config, check_max_train
    from nclab.rundir import RunDir
    from nclab.train.config import config_diff

    axes = parse_grid(args.grid)
    check_max_train(args.max_train)
    from nclab.train import distributed as ddp

    out = Path(args.out) if args.out else Path("runs") / f"sweep-{args.experiment}-{Path(str(args.recipe)).stem}"
    # under torchrun rank 0 alone writes (and locks) the sweep folder; every rank runs every cell (data-parallel)
    exp = RunDir(out) if ddp.env_rank() == 0 else ddp.ReadOnlyRunDir(out)
    cells = [dict(zip(axes, vals)) for vals in itertools.product(*axes.values())]
    limit = _inherited_time_limit(args, [out / cell_name(c) for c in cells])
    # every cell's config is built (= validated) before any cell trains, and a finished cell must have been
    # trained with the config asked for now (else its numbers would silently stand in for another sweep's)
    plan = []  # (cell, run dir, overrides, skip: complete and not --force)
    for cell in cells:
        d = out / cell_name(cell)
        ov = [f"{ALIASES.get(k, k)}={v}" for k, v in cell.items()] + time_limit_override(args) + limit
        try:
            cfg = build_config(args.experiment, recipe=args.recipe, data=args.data, hierarchy=args.hierarchy,
                               overrides=ov, epochs=args.epochs, device=args.device, run_name=d.name)
        except NclabError as e:
            raise NclabError(f"grid cell {cell_name(cell)}: {e}") from None
        skip = _cell_done(d) and not args.force
        if skip:
            diff = config_diff(RunDir(d).read_config(), cfg, ignore=RUN_ONLY_KEYS)
            if diff:
                raise NclabError(f"{d} is complete but was trained with other values of {', '.join(diff[:5])}; "
                                 "pass --force to retrain the cells, or another --out")
        plan.append((cell, d, ov, skip, cfg))
    import contextlib

    from nclab.experiments.finegrain_runs import join_ranks
    from nclab.runlock import run_lock

    # under torchrun: the ranks join before anything is written (so every rank read the same folder above), and
    # rank 0's decisions and errors reach the others from here on
    join_ranks(plan[0][4])
    plan = [p[:4] for p in plan]
    # the sweep folder has one writer; each cell's folder is locked by its own training
    with run_lock(out) if ddp.env_rank() == 0 else contextlib.nullcontext():
        return _run_cells(args, exp, axes, cells, plan)


def _run_cells(args, exp, axes: dict, cells: list[dict], plan: list) -> int:
    """Every cell in turn. Under torchrun every rank trains each cell (``run_experiment``: rank 0 analyses and
    writes it); rank 0 alone reads the cells' results and writes the sweep folder, its errors reach every rank
    (:func:`nclab.train.distributed.main_first`)."""
    from nclab.experiments.finegrain_runs import run_experiment
    from nclab.rundir import RunDir
    from nclab.train import distributed as ddp
    from nclab.utils.progress import say

    out = exp.path
    rows = []

    def begin() -> None:
        # the sweep folder is a run directory of its own: what was run (command, versions) and how it ended
        exp.path.mkdir(parents=True, exist_ok=True)
        exp.write_run_info({"experiment": f"sweep:{args.experiment}", "recipe": args.recipe, "grid": axes,
                            "data": args.data, "hierarchy": args.hierarchy})
        exp.write_status("running", f"{len(cells)} cells")

    ddp.main_first(begin)
    try:
        for i, (cell, d, ov, skip) in enumerate(plan):
            if skip:
                say(f"[{i + 1}/{len(cells)}] {d.name}: complete, skipped")
            else:
                say(f"[{i + 1}/{len(cells)}] {d.name}")
                resume = ddp.main_first(d.exists) and not args.force  # rank 0's view of the folder
                run_experiment(args.experiment, recipe=args.recipe, data=args.data, hierarchy=args.hierarchy,
                               overrides=ov, epochs=args.epochs, device=args.device, baseline=False,
                               random_init=False, raw_pixels=False, probe=not args.no_probe, max_train=args.max_train,
                               out=d, resume=resume, force=args.force)

            def record(cell=cell, d=d) -> None:
                res = RunDir(d).read_results()
                rows.append(cell_row(cell, d, res))
                _write(exp, args, axes, rows)

            ddp.main_first(record)
    except RunPaused as e:
        exp.write_status("paused", f"cell {len(rows) + 1} of {len(cells)}: {e}")
        raise
    except KeyboardInterrupt:
        exp.write_status("interrupted", f"after {len(rows)} of {len(cells)} cells; rerun the command to continue")
        raise
    except BaseException as e:
        exp.write_status("failed", f"cell {len(rows) + 1} of {len(cells)}: {e}")
        raise

    def finish() -> tuple[dict, object]:
        results = _write(exp, args, axes, rows)
        exp.write_status("complete", f"{len(cells)} cells")
        from nclab.report import try_write_report

        return results, try_write_report(out)  # heatmaps over the grid + one report per cell

    results, report = ddp.main_first(finish)
    if not ddp.is_main():  # under torchrun rank 0 prints
        return 0
    if args.json:
        print(json.dumps(results))
    else:
        for t in results["tables"]:
            widths = [max(12, len(str(c))) for c in t["columns"]]
            print(t["title"])
            print("  " + "  ".join(f"{c:>{w}}" for c, w in zip(t["columns"], widths)))
            for r in t["rows"]:
                print("  " + "  ".join(f"{c:>{w}}" for c, w in zip(r, widths)))
        print(f"results: {exp.results_path}")
        if report:
            print(f"report: {report}")
    return 0


def _write(exp, args, axes: dict, rows: list[dict]) -> dict:
    def fmt(v, col: str = ""):
        if v is None:
            return "-"
        if isinstance(v, float) and col.startswith(ACC_METRICS):  # accuracies (and their mean / std) as percent
            return f"{100 * v:.2f} %"
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    cols = list(axes) + [m for m in SUMMARY_METRICS if m not in OPTIONAL_METRICS or any(m in r for r in rows)]
    results = {"experiment": f"sweep:{args.experiment}", "recipe": args.recipe,
               "grid": {"axes": axes, "cells": rows}, "subruns": [r["run"] for r in rows],
               "tables": [{"title": f"{args.experiment} grid: final recovery (test) accuracy, coarse test accuracy, "
                                    "NC1 (train, coarse labels)",
                           "columns": cols, "rows": [[fmt(r.get(c), c) for c in cols] for r in rows]}]}
    summary = seed_summary(axes, rows)
    if summary:
        results["grid"]["over_seeds"] = summary
        scols = list(summary[0])  # the other axes, n, <metric>_mean, <metric>_std
        results["tables"].append({"title": f"mean and standard deviation over seeds {axes['seed']} (n = finished "
                                           "runs; sample std, ddof=1)", "columns": scols,
                                  "rows": [[fmt(r.get(c), c) for c in scols] for r in summary]})
    exp.path.mkdir(parents=True, exist_ok=True)
    exp.write_results(results)
    return results


SUMMARY_METRICS = ("recovery_acc", "coarse_acc", "nc1", "recovery_over_probe", "clean_train_recovery_acc",
                   "corrupted_train_recovery_acc")
OPTIONAL_METRICS = ("clean_train_recovery_acc", "corrupted_train_recovery_acc")  # label-noise cells only
ACC_METRICS = tuple(m for m in SUMMARY_METRICS if m.endswith("_acc"))


def seed_summary(axes: dict, rows: list[dict]) -> list[dict]:
    """With a ``seed`` axis of 2+ values: one row per combination of the other axes (grid order) with ``n`` and
    ``<metric>_mean`` / ``<metric>_std`` (sample std, ddof=1; None below 2 values) over the finished seeds."""
    import math
    import statistics

    if len(axes.get("seed", [])) < 2:
        return []
    others = [a for a in axes if a != "seed"]
    out = []
    for combo in itertools.product(*(axes[a] for a in others)):
        key = dict(zip(others, combo))
        group = [r for r in rows if all(r.get(a) == v for a, v in key.items())]
        row: dict = {**key, "n": len(group)}
        for m in SUMMARY_METRICS:
            if m in OPTIONAL_METRICS and not any(m in r for r in rows):
                continue
            vals = [float(r[m]) for r in group if isinstance(r.get(m), (int, float)) and math.isfinite(r[m])]
            row[f"{m}_mean"] = statistics.fmean(vals) if vals else None
            row[f"{m}_std"] = statistics.stdev(vals) if len(vals) > 1 else None
        out.append(row)
    return out
