"""``nclab compare RUN_DIR RUN_DIR... [--out DIR]``: one report overlaying several runs."""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="one report comparing several runs (overlaid curves, tables side by side)")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="two or more run directories")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="folder for report.html + figures/ (default: <parent of the first run>/compare-<a>-vs-<b>...)")
    p.add_argument("--json", action="store_true", help="print {\"report\": path} as JSON only")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def run(args) -> int:
    from nclab.report import write_compare_report
    from nclab.utils.errors import NclabError

    if len(args.run_dirs) < 2:
        raise NclabError("compare needs at least two run directories; for one run use `nclab report RUN_DIR`")
    path = write_compare_report(args.run_dirs, args.out)
    print(json.dumps({"report": str(path)}) if args.json else path)
    return 0
