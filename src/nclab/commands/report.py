"""``nclab report RUN_DIR...``: (re)write each run's report.html from its run directory alone."""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="write runs/<name>/report.html (self-contained) from a run directory")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directory written by train/reproduce/demo")
    p.add_argument("--json", action="store_true", help="print {\"reports\": [paths]} as JSON only")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def run(args) -> int:
    from nclab.report import write_report
    from nclab.rundir import RunDir
    from nclab.utils.progress import progress

    for d in args.run_dirs:  # every folder checked before any report is written (no bar, then an error)
        RunDir(d).require(run=True)
    paths = [str(write_report(d)) for d in progress(args.run_dirs, desc="reports", unit="run")]
    if args.json:
        print(json.dumps({"reports": paths}))
    else:
        for p in paths:
            print(p)
    return 0
