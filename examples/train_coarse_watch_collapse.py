"""Train on coarse labels from Python, log NC metrics and fine-label recovery every epoch, read them back.

    python examples/train_coarse_watch_collapse.py            # ~15 s on one CPU core

The same as `nclab train --config tiny --set data.labels=coarse ...`: an MLP on a small hierarchical Gaussian
mixture (2 superclasses x 2 fine classes), trained on the 2 coarse labels. Callbacks are configured like any
other config key; their numbers land in runs/<name>/metrics.jsonl, one JSON object per epoch.
"""

import tempfile
from pathlib import Path

from nclab.rundir import RunDir
from nclab.train import Trainer, load_config


def main(run_dir: str | None = None, epochs: int = 8):
    run_dir = run_dir or str(Path(tempfile.mkdtemp()) / "coarse-mlp")
    cfg = load_config("tiny", overrides=[
        "data.source=synthetic:coarse=2,fine_per_coarse=2,dim=16,fine_sep=3,n_train=512,n_test=256,seed=0",
        "data.hierarchy=mod:2",  # fine class f -> superclass f mod 2
        "data.labels=coarse",  # train on the superclasses only
        f"optim.epochs={epochs}",
        # NC metrics on the train split, w.r.t. coarse and fine labels (+ fine NC1 inside each superclass),
        # and fine-label recovery (k-means inside each superclass, raw features: see recover_fine_labels.py)
        "callbacks={nc_metrics: {epochs: all, views: [coarse, fine]}, recovery: {epochs: all, normalize: none}}",
    ])
    Trainer(cfg, run_dir).fit()

    rows = RunDir(run_dir).read_metrics()  # list of dicts, one per epoch
    print("epoch  coarse test acc  coarse nc1  fine nc1 within superclasses  fine recovery (test)")
    for r in rows:
        print(f"{r['epoch']:5d}  {r['test_acc']:15.3f}  {r['nc.train.coarse.nc1']:10.4f}  "
              f"{r['nc.train.fine_within_coarse.mean']:28.4f}  {r['recovery.test_acc']:20.3f}")
    print(f"run directory: {run_dir} (report: nclab report {run_dir})")
    return rows


if __name__ == "__main__":
    main()
