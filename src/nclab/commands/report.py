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
    paths = []
    for d in progress(args.run_dirs, desc="reports", unit="run"):
        paths.append(str(write_report(d)))
        _warn_if_damaged(d)
    if args.json:
        print(json.dumps({"reports": paths}))
    else:
        for p in paths:
            print(p)
    return 0


def _warn_if_damaged(run_dir) -> None:
    """One stderr line for a run whose data files are damaged (the report's status then says "damaged")."""
    import sys

    from nclab.report import load_run

    damage = load_run(run_dir).damage
    if damage:
        more = f" (and {len(damage) - 1} more)" if len(damage) > 1 else ""
        print(f"warning: {run_dir} is damaged: {damage[0]}{more}; the report lists every problem", file=sys.stderr)
