"""``nclab demo [--out DIR] [--data SPEC] [--quiet] [--json]``: coarse-label training on a CIFAR-10 subset, NC
metrics, fine-label recovery against raw-pixel and random-network baselines, and the HTML report, in under 3
minutes on a 2-core CPU, no network (see nclab.experiments.demo)."""

from __future__ import annotations

import json
from nclab.train.config import option


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="3-minute end-to-end demo: coarse-label training on CIFAR-10, NC metrics, "
                                    "fine-label recovery vs baselines, HTML report")
    p.add_argument("--out", default="runs/demo", help="run directory (default runs/demo; overwritten)")
    p.add_argument("--data", default=None, metavar="SPEC",
                   help="a CIFAR-10 source (imagefolder:PATH, cifar10:PATH); default the copy at "
                        "$NCLAB_DATA/cifar10-jpeg.tar.gz (docs/data.md), else the bundled digits")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 6; digits fallback 30)")
    p.add_argument("--seed", type=int, default=0, help="seed of data, initialisation and clustering (default 0)")
    p.add_argument("--device", choices=option("train.device").choices, default="cpu",
                   help="default cpu (the demo is small; auto picks CUDA when present)")
    p.add_argument("--no-baseline", action="store_true", help="skip the fine-label-trained baseline network")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--json", action="store_true", help="print results.json (+ report path) as JSON only")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from nclab.experiments.demo import run_demo
    from nclab.report import load_run, results_text, try_write_report

    res = run_demo(args.out, epochs=args.epochs, seed=args.seed, device=args.device, baseline=not args.no_baseline,
                   data=args.data)
    if res.get("subruns"):
        try_write_report(Path(args.out) / "baseline")
    report = try_write_report(args.out)
    res["report"] = str(report) if report else None
    if args.json:
        print(json.dumps(res))
        return 0
    print(res["experiment"] + f" ({res['source']}, {res['hierarchy']}, {res['wall_time_s']:.0f} s)")
    print(results_text(load_run(args.out)))
    print(f"results: {res['results_path']}")
    print(f"report: {res['report'] or '(could not be written; see the warning above)'}")
    return 0
