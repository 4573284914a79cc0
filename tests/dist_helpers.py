"""Helpers for tests/test_distributed.py, imported by the torchrun workers (tests/ is put on PYTHONPATH).

- ``StopRank``: a trainer callback that, once (a marker file remembers it), SIGKILLs or freezes (long sleep) one
  rank at the end of one epoch: a rank that dies or hangs in the middle of a run.
- ``python tests/dist_helpers.py stats OUT RUN_DIR`` under torchrun: the streaming NC statistics of fixed
  synthetic features, each rank feeding its own shard, merged with ``all_reduce``; then ``nclab metrics --run``.
  Every rank writes ``OUT/rank<r>.json``.
- ``python tests/dist_helpers.py recovery OUT CFG RUN [CFG2 RUN2]`` under torchrun: trains CFG (a config with the
  recovery callback) into RUN, counting in every rank the calls into the clustering code (a profile hook, which
  observes and changes nothing) and recording every rank's metrics rows; then the sharded, gathered recovery
  features of the final model (rank 0: ``OUT/features.npz``); the same features for CFG2 -> RUN2 (trained
  without callbacks) in ``OUT/features2.npz``. Every rank writes ``OUT/rank<r>.json``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

from nclab.train import Callback


class StopRank(Callback):
    def __init__(self, rank: int, epoch: int, marker: str, how: str = "kill"):
        self.rank, self.epoch, self.marker, self.how = int(rank), int(epoch), Path(marker), how

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        from nclab.train import distributed

        if epoch != self.epoch or distributed.rank() != self.rank or self.marker.exists():
            return
        self.marker.write_text(str(os.getpid()))
        if self.how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(120)  # "hang": longer than any collective timeout of the tests


def synthetic_features(n: int = 600, k: int = 6, d: int = 12, seed: int = 3):
    """Class-structured float32 features (N, D), labels (N,), a classifier W (K, D), b (K,), groups (K,)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(k, d)) * 3
    y = rng.integers(0, k, size=n)
    h = (means[y] + rng.normal(size=(n, d))).astype(np.float32)
    w = (means + 0.5 * rng.normal(size=(k, d))).astype(np.float64)
    b = rng.normal(size=k)
    groups = np.arange(k) % 2
    return h, y, w, b, groups


def stats_metrics(h, y, w, b, groups, batch: int = 64) -> dict:
    """NC metrics of (h, y) fed batch by batch: with scatter (groups) and, for the projecting second pass,
    without; merged over the ranks (no-op in one process)."""
    import torch

    from nclab.collapse.metrics import compute_metrics
    from nclab.collapse.second_pass import SecondPass
    from nclab.collapse.stats import ClassStats

    k = w.shape[0]
    full = ClassStats(k, groups=groups)
    lean = ClassStats(k, scatter=False, traces=False)
    for j in range(0, len(y), batch):
        full.update(h[j : j + batch], y[j : j + batch])
        lean.update(h[j : j + batch], y[j : j + batch])
    full.all_reduce()
    lean.all_reduce()
    W, B = torch.from_numpy(w), torch.from_numpy(b)
    second = SecondPass(lean, W, B, project=True)
    for j in range(0, len(y), batch):
        second.update(h[j : j + batch], y[j : j + batch])
    second.all_reduce()
    return {"scatter": compute_metrics(full, W, B), "projected": compute_metrics(lean, W, B, second=second),
            "within_trace": float(full.within_scatter().trace()), "counts": full.counts.tolist(),
            "means": full.means.flatten().tolist(), "traces": full.traces.tolist()}


def _stats_main(out: Path, run_dir: str) -> None:
    import torch

    from nclab.cli import main as cli_main
    from nclab.train import distributed

    distributed.init_from_env(torch.device("cpu"), timeout_s=30)
    distributed.ready(30)
    r, world = distributed.rank(), distributed.world_size()
    h, y, w, b, groups = synthetic_features()
    lo, hi = distributed.shard_bounds(len(y))
    res = {"world": world, "arrays": stats_metrics(h[lo:hi], y[lo:hi], w, b, groups)}
    # per-sample rows of unequal shards (rank r keeps r + 1 extra rows) gathered on rank 0 in rank order
    part = torch.from_numpy(h[lo : hi + r + 1] if r + 1 < world else h[lo:hi])
    got = distributed.gather_rows(part)
    res["gathered"] = None if got is None else got.double().flatten().tolist()
    res["gathered_rows"] = None if got is None else int(got.shape[0])
    # every rank's merged statistics, for the every-rank-agrees check (the CLI below prints on rank 0 only and
    # leaves the process group at its end)
    from nclab.collapse.callback import NCMetricsCallback
    from nclab.train import Trainer, load_config

    cfg = load_config(Path(run_dir) / "config.yaml").replace(callbacks={})
    tr = Trainer(cfg, run_dir)
    tr.model.load_state_dict(torch.load(Path(run_dir) / "checkpoints" / "last.pt", weights_only=True)["model"])
    res["callback"] = NCMetricsCallback(epochs="all", splits=["train", "test"]).compute(tr)
    res["callback"] = {k: v for k, v in res["callback"].items() if not k.endswith("time_s")}
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli_main(["metrics", "--run", run_dir, "--splits", "train,test", "--json", "--quiet"])
    res["metrics_rc"] = rc
    res["metrics"] = json.loads(buf.getvalue()) if buf.getvalue().strip() else None
    (out / f"rank{r}.json").write_text(json.dumps(res))


class RecordLogs(Callback):
    """Keeps a copy of each epoch's metrics row as this rank sees it (put after the callbacks that fill it)."""

    def __init__(self):
        self.rows: list[dict] = []

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        self.rows.append(dict(logs, epoch=epoch))


CLUSTERING_FILES = ("evaluate.py", "kmeans.py", "recovery.py", "kselect.py", "whiten.py", "pursuit.py")


def count_clustering_calls(fn):
    """``fn()`` and the number of Python calls it made into nclab.finegrain's clustering modules in this process
    (sys.setprofile: observes every call, changes none)."""
    import nclab.finegrain as fg

    folder = str(Path(fg.__file__).resolve().parent)
    wanted = {str(Path(folder) / f) for f in CLUSTERING_FILES}
    calls: dict[str, int] = {}

    def hook(frame, event, arg):
        if event == "call" and frame.f_code.co_filename in wanted:
            key = f"{Path(frame.f_code.co_filename).stem}.{frame.f_code.co_name}"
            calls[key] = calls.get(key, 0) + 1

    sys.setprofile(hook)
    try:
        out = fn()
    finally:
        sys.setprofile(None)
    return out, calls


def _gathered_features(tr, out: Path, name: str) -> dict:
    """Rank 0: the sharded + gathered recovery features of ``tr``'s model saved as OUT/NAME.npz; each rank: its
    number of extracted rows."""
    import torch

    from nclab.contracts.recovery import RecoverySpec
    from nclab.finegrain.pipeline import recovery_features

    with torch.no_grad():
        before = sum(float(b.double().sum()) for b in tr.model.buffers())
    feats, calls = count_clustering_calls(lambda: recovery_features(tr, RecoverySpec.of_config(tr.cfg), shard=True))
    local = {s: len(tr.eval_loader(s, shard=True).local_order()) for s in ("train", "test")}
    if feats is not None:
        np.savez(out / f"{name}.npz", idx=np.array([]) if feats["idx"] is None else feats["idx"],
                 train_features=feats["train"][0], train_pred=feats["train"][1],
                 test_features=feats["test"][0], test_pred=feats["test"][1])
    with torch.no_grad():
        buffers = sum(float(b.double().sum()) for b in tr.model.buffers())
    return {"got_features": feats is not None, "local_rows": local, "calls": calls, "buffer_sum_before": before,
            "buffer_sum": buffers}


def _recovery_main(out: Path, cfg: str, run_dir: str, cfg2: str | None, run2: str | None) -> None:
    from nclab.finegrain.callback import RecoveryCallback
    from nclab.train import Trainer, distributed, load_config
    from nclab.utils.io import json_clean

    tr = Trainer(load_config(cfg), run_dir)
    rec = RecordLogs()
    tr.callbacks.append(rec)
    _, calls = count_clustering_calls(lambda: tr.fit())
    cb = next(c for c in tr.callbacks if isinstance(c, RecoveryCallback))
    res = {"world": distributed.world_size(), "rank": distributed.rank(), "calls": calls, "rows": rec.rows,
           "last": json_clean(cb.last), "features": _gathered_features(tr, out, "features")}
    if cfg2:
        tr2 = Trainer(load_config(cfg2), run2)
        tr2.fit()
        res["features2"] = _gathered_features(tr2, out, "features2")
    (out / f"rank{distributed.rank()}.json").write_text(json.dumps(res))


if __name__ == "__main__":
    if sys.argv[1] == "stats":
        _stats_main(Path(sys.argv[2]), sys.argv[3])
    elif sys.argv[1] == "recovery":
        _recovery_main(Path(sys.argv[2]), *sys.argv[3:5], *(sys.argv[5:7] or [None, None]))
