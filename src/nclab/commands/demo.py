"""``nclab demo [--out DIR] [--quiet] [--json]``: coarse-label training on digits, NC metrics, fine-label
recovery with baselines, and the HTML report — in under 3 minutes on a CPU, no network (see nclab.demo)."""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="2-minute end-to-end demo on bundled data: coarse training, NC metrics, "
                                    "fine-label recovery, HTML report")
    p.add_argument("--out", default="runs/demo", help="run directory (default runs/demo; overwritten)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 30)")
    p.add_argument("--seed", type=int, default=0, help="seed of data, initialisation and clustering (default 0)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu",
                   help="default cpu (the demo is small; auto picks CUDA when present)")
    p.add_argument("--no-baseline", action="store_true", help="skip the fine-label-trained baseline network")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--json", action="store_true", help="print results.json (+ report path) as JSON only")
    p.set_defaults(func=run)


def run(args) -> int:
    from nclab.demo import run_demo
    from nclab.report import load_run, results_text

    res = run_demo(args.out, epochs=args.epochs, seed=args.seed, device=args.device, baseline=not args.no_baseline)
    if args.json:
        print(json.dumps(res))
        return 0
    print(res["experiment"])
    print(results_text(load_run(args.out)))
    for t in res.get("tables", []):
        if "normalisation" in t["title"]:  # the caveat belongs next to the headline numbers
            print(f"\n{t['title']}:")
            w = max(len(str(r[0])) for r in t["rows"])
            print(f"  {'':<{w}}  {'trained':>8}  {'raw':>8}  {'random':>8}")
            for r in t["rows"]:
                print(f"  {r[0]:<{w}}  " + "  ".join(f"{100 * v:7.2f}%" for v in r[1:]))
    print(f"report: {res['report'] or '(could not be written; see the warning above)'}")
    return 0
