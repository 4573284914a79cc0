"""``nclab train --config NAME|PATH [--set key=value ...]``: train one model into ``runs/<name>/``."""

from __future__ import annotations

import contextlib

import json
from pathlib import Path
from nclab.train.config import option


def add_parser(sub) -> None:
    p = sub.add_parser("train",
                       help="train a model from a YAML config (shipped: tiny, fast, fast_coarse5, paper_resnet18)",
                       description="Train a model; writes runs/<name>/ (config.yaml, metrics.jsonl, checkpoints/).")
    p.add_argument("--config", "-c", default=None,
                   help="YAML path or shipped config name (tiny, fast, fast_coarse5, paper_resnet18); "
                        "with --resume defaults to the run's own config.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set optim.lr=0.05 (repeatable)")
    p.add_argument("--name", default=None, help="run name (default: the config's name)")
    p.add_argument("--runs", default="runs", help="parent folder of run directories (default: runs)")
    p.add_argument("--run-dir", default=None, help="exact run directory (overrides --runs/--name)")
    p.add_argument("--device", choices=option("train.device").choices, default=None,
                   help="same as --set train.device=...")
    p.add_argument("--epochs", type=int, default=None, help="same as --set optim.epochs=N")
    p.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="same as --set train.time_limit_s=SECONDS: pause cleanly before passing SECONDS "
                        "(checkpoint, exit code 75), continue with --resume")
    p.add_argument("--resume", action="store_true", help="continue from the run's checkpoints/last.pt")
    p.add_argument("--force", action="store_true", help="overwrite an existing run's metrics and checkpoints")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    p.set_defaults(func=run)


def run(args) -> int:
    from nclab.rundir import RunDir
    from nclab.train import Trainer, load_config
    from nclab.train.config import check_run_name
    from nclab.utils.errors import NclabError

    overrides = list(args.overrides)
    if args.device:
        overrides.append(f"train.device={args.device}")
    if args.epochs is not None:
        overrides.append(f"optim.epochs={args.epochs}")
    if args.time_limit is not None:
        overrides.append(f"train.time_limit_s={args.time_limit}")
    if args.name is not None:  # an empty --name is refused by check_run_name, not ignored
        overrides.append(f"name={check_run_name(args.name)}")
    config = args.config
    if args.resume and config is None:
        rd = Path(args.run_dir) if args.run_dir else (Path(args.runs) / args.name if args.name is not None else None)
        if rd is None or not RunDir(rd).config_path.exists():
            where = f"; {rd} holds no run (config.yaml)" if rd is not None else ""
            raise NclabError(f"--resume without --config needs --run-dir or --name of an existing run{where}")
        config = str(RunDir(rd).config_path)
    if config is None:
        raise NclabError("no config given; pass --config tiny|fast|paper_resnet18 or a YAML path")
    if args.resume and args.force:
        raise NclabError("--resume continues the run and --force starts it over; pass one of them")
    cfg = load_config(config, overrides)
    run_dir = Path(args.run_dir) if args.run_dir else Path(args.runs) / check_run_name(cfg.name)
    from nclab.report import try_write_report
    from nclab.runlock import run_lock
    from nclab.train import distributed as ddp

    # rank 0 alone writes (and locks) the run directory; before any data is loaded, so a second writer fails at
    # once and writes nothing
    with run_lock(run_dir) if ddp.env_rank() == 0 else contextlib.nullcontext():
        try:
            result = Trainer(cfg, run_dir).fit(resume=args.resume, force=args.force)
        finally:  # a report also for runs stopped on NaN or interrupted: it says so (under torchrun: rank 0 only)
            if RunDir(run_dir).is_run() and ddp.env_rank() == 0:
                try_write_report(run_dir)
    if not ddp.is_main():
        return 0
    if args.json:
        print(json.dumps(result))
    else:
        m = result["metrics"]
        acc = f", test_acc {m['test_acc']:.4f}" if "test_acc" in m else ""
        print(f"done: {run_dir} (epoch {result['epoch']}{acc})")
        if (run_dir / "report.html").exists():
            print(f"report: {run_dir / 'report.html'}")
    return 0
