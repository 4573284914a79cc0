"""The recovery-method selection protocol over several trained runs (docs/recovery.md has the measured table).

For each run's saved ``features/`` (written by ``nclab reproduce`` or ``nclab recover --run R --save``) every
candidate of :data:`nclab.finegrain.select.CANDIDATES` runs the full protocol; the choice is the highest *mean
train-split* recovery accuracy over the runs (:func:`nclab.finegrain.select.choose`): no test label is read
before it is made. Printed: a markdown table (mean train accuracy = the selection score, mean train silhouette,
mean test accuracy with predicted and true-coarse routing, per-run test accuracy), the choice, and the
leave-one-run-out check (choose on the other runs, report the held-out run's test accuracy).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/recovery_selection.py RUN1 RUN2 ... [--candidates a,b] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def load(run: str) -> dict:
    f = Path(run) / "features"
    keys = ("train_features", "train_coarse", "train_fine", "test_features", "test_coarse_pred", "test_fine")
    out = {k: np.load(f / f"{k}.npy") for k in keys}
    if (f / "train_coarse_noisy.npy").exists():
        out["train_coarse_noisy"] = np.load(f / "train_coarse_noisy.npy")
    return out


def main() -> None:
    from provenance import header

    print(header())
    from nclab.finegrain.evaluate import as_hierarchy
    from nclab.finegrain.select import choose, compare_methods

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--candidates", default=None)
    ap.add_argument("--json", default=None, help="also write the rows and the choice here")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    names = args.candidates.split(",") if args.candidates else None
    per_run = []
    for r in args.runs:
        a = load(r)
        rows = compare_methods(a, as_hierarchy(None, a["train_fine"], a["train_coarse"]), None, names)
        per_run.append(rows)
        print(f"{r}: " + ", ".join(f"{x['name']} {100 * x['train_acc']:.1f}/{100 * x['test_acc']:.1f}" for x in rows),
              flush=True)
    sel = choose(per_run)
    print("\n| candidate | train acc (selection score) | train silhouette | test acc | test acc, true routing | "
          "test acc per run |\n| --- | --- | --- | --- | --- | --- |")
    for t in sel["table"]:
        mark = " **(chosen)**" if t["name"] == sel["chosen"] else ""
        print(f"| {t['name']}{mark} | {100 * t['train_acc_mean']:.2f} % | {t['train_silhouette_mean']:.3f} | "
              f"{100 * t['test_acc_mean']:.2f} % | {100 * t['oracle_test_acc_mean']:.2f} % | "
              + " / ".join(f"{100 * v:.1f}" for v in t["test_acc_runs"]) + " |")
    print(f"\nchosen: {sel['chosen']} ({sel['rule']})")
    loo = []
    for i in range(len(per_run)):
        if len(per_run) < 2:
            break
        c = choose([rows for j, rows in enumerate(per_run) if j != i])["chosen"]
        held = next(x for x in per_run[i] if x["name"] == c)
        loo.append({"held_out": args.runs[i], "chosen": c, "test_acc": held["test_acc"]})
        print(f"leave-one-out: chosen on the others {c}; {args.runs[i]} test {100 * held['test_acc']:.2f} %")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": args.runs, "rows": per_run, "selection": sel,
                                               "leave_one_out": loo}, indent=1))


if __name__ == "__main__":
    main()
