"""Data-parallel runs under real torchrun processes (2 gloo ranks on CPU, no mocked process group).

References: the same command in one process (in this pytest process), and naive numpy on the raw arrays.
Every subprocess is bounded by a timeout; gloo talks over the loopback interface only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from nclab.cli import main as cli_main
from nclab.train.trainer import TIMING_KEYS

TESTS = Path(__file__).resolve().parent
TORCHRUN = Path(sys.executable).with_name("torchrun")
LAUNCH_TIMEOUT_S = 120  # any torchrun call; a hang fails the test instead of the suite
COLLECTIVE_TIMEOUT_S = 2.0  # train.dist_timeout_s of the runs that lose a rank

pytestmark = pytest.mark.skipif(not TORCHRUN.exists() or not torch.distributed.is_available()
                                or not torch.distributed.is_gloo_available(), reason="needs torchrun with gloo")

CFG = {
    "name": "d", "seed": 0,
    # 6 classes x 40 train / 15 test samples
    "data": {"source": "synthetic:coarse=2,fine_per_coarse=3,dim=16,n_train=40,n_test=15,seed=0"},
    "model": {"name": "mlp", "width": 32, "depth": 1},
    # global batches of 31 rows (7 per epoch, 217 of the 240 rows): 15 + 16 rows on the two ranks, so the loss
    # weighting of unequal shards is exercised; eval batches of 45 (train 5 x 45 + 15, test 2 x 45): 22 + 23 rows
    "optim": {"lr": 0.05, "batch_size": 31, "epochs": 3},
    "schedule": {"name": "cosine"},
    "train": {"device": "cpu", "bf16": False, "channels_last": False, "threads": 1, "eval_batch_size": 45,
              "dist_timeout_s": 30},
    "callbacks": {"nc_metrics": {"epochs": "all", "splits": ["train", "test"]}},
}


def _env(tmp: Path) -> dict:
    env = dict(os.environ)
    env.update({"PYTHONPATH": os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
                "GLOO_SOCKET_IFNAME": "lo", "NCLAB_CACHE": str(tmp / "cache"), "OMP_NUM_THREADS": "1"})
    return env


def torchrun(tmp: Path, *args: str, nproc: int = 2) -> tuple[subprocess.CompletedProcess, float]:
    """``torchrun --standalone --nproc_per_node=N ARGS`` (rendezvous on localhost, a free port), bounded."""
    t0 = time.perf_counter()
    p = subprocess.run([str(TORCHRUN), "--standalone", f"--nproc_per_node={nproc}", "--max-restarts=0", *args],
                       capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S, env=_env(tmp), cwd=tmp)
    return p, time.perf_counter() - t0


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def strip(rs: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS and not k.endswith("time_s")} for r in rs]


def params(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]


def files(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())


def close(a, b, rtol: float, atol: float = 0.0) -> bool:
    """Nested JSON values equal, floats within rtol·|a| + atol."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(close(a[k], b[k], rtol, atol) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(close(x, y, rtol, atol) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, (int, float)):
        return abs(a - b) <= rtol * abs(a) + atol
    return a == b


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same config trained by one process (in-process CLI) and by 2 torchrun ranks."""
    tmp = tmp_path_factory.mktemp("dist")
    cfg = tmp / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(CFG))
    assert cli_main(["train", "--config", str(cfg), "--run-dir", str(tmp / "one"), "--quiet"]) == 0
    p, _ = torchrun(tmp, "-m", "nclab", "train", "--config", str(cfg), "--run-dir", str(tmp / "two"), "--quiet")
    assert p.returncode == 0, p.stderr[-3000:]
    return tmp


@pytest.mark.slow  # torchrun processes: seconds each
def test_two_rank_training_equals_one_process_within_float32_roundoff(runs):
    one, two = runs / "one", runs / "two"
    assert json.loads((two / "status.json").read_text())["status"] == "complete"
    a, b = params(one), params(two)
    # DDP averages two per-rank gradients of 15 and 16 rows where one process reduces 31 rows at once: the same maths,
    # another float32 summation order, so the parameters agree to round-off, not bit for bit
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-6), (k, float((a[k] - b[k]).abs().max()))
    assert any(not torch.equal(a[k], b[k]) for k in a)  # really two different computations
    ra, rb = strip(rows(one)), strip(rows(two))
    assert [r["epoch"] for r in rb] == [1, 2, 3]
    assert close(ra, rb, rtol=1e-5, atol=1e-7)  # losses, accuracies, NC metrics of every epoch
    for x, y in zip(ra, rb):  # counted quantities are exact
        for k in ("train_acc", "test_acc", "nc.train.fine.ncc_acc", "nc.test.fine.n_samples"):
            assert x[k] == y[k], k
    assert rb[-1]["nc.train.fine.n_samples"] == 240  # the NC callback saw all samples, not one shard


@pytest.mark.slow  # torchrun processes: seconds each
def test_only_rank_0_writes_the_run_directory(runs):
    # same files as the one-process run (config, run.json, status, metrics, checkpoint, report, figures), no temp
    # files or second copies from rank 1
    assert files(runs / "two") == files(runs / "one")
    assert "checkpoints/last.pt" in files(runs / "two") and "report.html" in files(runs / "two")
    assert len((runs / "two" / "metrics.jsonl").read_text().splitlines()) == 3  # one line per epoch, not per rank


@pytest.mark.slow  # torchrun processes: seconds each
def test_two_rank_nc_statistics_equal_one_process_to_1e12(runs):
    out = runs / "stats"
    out.mkdir()
    p, _ = torchrun(runs, str(TESTS / "dist_helpers.py"), "stats", str(out), str(runs / "one"))
    assert p.returncode == 0, p.stderr[-3000:]
    r0, r1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == 2
    assert r0["arrays"] == r1["arrays"] and r0["callback"] == r1["callback"]  # every rank ends with the same
    assert r1["metrics"] is None and r0["metrics_rc"] == r1["metrics_rc"] == 0  # the CLI prints on rank 0 only

    from dist_helpers import stats_metrics, synthetic_features

    h, y, w, b, groups = synthetic_features()
    # gather_rows: rank 0 holds rows 0..300 (one extra), rank 1 rows 300..599: concatenated in rank order
    want = np.concatenate([h[:301], h[300:]]).astype(np.float64)
    assert r0["gathered_rows"] == 601 and r1["gathered"] is None
    assert np.array_equal(np.asarray(r0["gathered"]), want.ravel())
    ref = stats_metrics(h, y, w, b, groups)  # one process, all rows
    assert close(ref, r0["arrays"], rtol=1e-12, atol=1e-12)
    # independent of the accumulators: naive numpy on the raw float64 rows
    h64 = h.astype(np.float64)
    means = np.stack([h64[y == c].mean(0) for c in range(w.shape[0])])
    assert np.allclose(r0["arrays"]["means"], means.ravel(), rtol=1e-12, atol=1e-12)
    assert r0["arrays"]["counts"] == np.bincount(y, minlength=w.shape[0]).tolist()
    resid = h64 - means[y]
    assert abs(r0["arrays"]["within_trace"] - (resid ** 2).sum() / len(y)) <= 1e-12 * (resid ** 2).sum() / len(y)
    # nclab metrics --run: 2 ranks (each on its half of every batch) vs this process on all the data
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert cli_main(["metrics", "--run", str(runs / "one"), "--splits", "train,test", "--json", "--quiet"]) == 0
    single = {k: v for k, v in json.loads(buf.getvalue()).items() if not k.endswith("time_s")}
    double = {k: v for k, v in r0["metrics"].items() if not k.endswith("time_s")}
    assert single.keys() == double.keys() and len(single) > 40
    assert close(single, double, rtol=1e-12, atol=1e-12)
    assert close({k: v for k, v in single.items() if k.startswith("nc.")}, r0["callback"], rtol=1e-12, atol=1e-12)


@pytest.mark.slow  # torchrun processes: seconds each
def test_sigkilled_rank_stops_the_other_and_resume_gives_the_uninterrupted_result(runs):
    run = runs / "killed"
    cfg = dict(CFG, callbacks={"dist_helpers:StopRank": {"rank": 1, "epoch": 2, "marker": str(runs / "kill.marker")},
                               **CFG["callbacks"]})
    cfg["train"] = dict(CFG["train"], dist_timeout_s=COLLECTIVE_TIMEOUT_S)
    path = runs / "killed.yaml"
    path.write_text(yaml.safe_dump(cfg))
    p, dt = torchrun(runs, "-m", "nclab", "train", "--config", str(path), "--run-dir", str(run), "--quiet")
    assert p.returncode != 0 and (runs / "kill.marker").exists(), p.stderr[-3000:]
    assert dt < 60  # stopped by the dead peer or the collective timeout, never a hang up to LAUNCH_TIMEOUT_S
    last = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"]
    assert last in (1, 2)  # rank 1 died inside epoch 2's callbacks
    status = json.loads((run / "status.json").read_text())
    # rank 0 records the lost peer unless torchrun's SIGTERM (sent once it sees rank 1 die) comes first
    assert status["status"] == "running" or (status["status"] == "failed" and "--resume" in status["message"]), status
    # resume on 1 rank (in this process) from a copy, and on 2 ranks
    shutil.copytree(run, runs / "killed1")
    from nclab.train import Trainer, load_config

    Trainer(load_config(runs / "killed1" / "config.yaml"), runs / "killed1").fit(resume=True)
    p, _ = torchrun(runs, "-m", "nclab", "train", "--resume", "--run-dir", str(run), "--quiet")
    assert p.returncode == 0, p.stderr[-3000:]
    # 2 ranks -> killed -> 2 ranks: the reductions of the uninterrupted 2-rank run, bit for bit
    a, b = params(runs / "two"), params(run)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert strip(rows(run)) == strip(rows(runs / "two"))
    # 2 ranks -> killed -> 1 rank: the same run to float32 round-off
    c = params(runs / "killed1")
    assert all(torch.allclose(a[k], c[k], rtol=1e-5, atol=1e-6) for k in a)
    assert close(strip(rows(runs / "two")), strip(rows(runs / "killed1")), rtol=1e-5, atol=1e-7)


@pytest.mark.slow  # torchrun processes: seconds each
def test_hung_rank_makes_the_other_stop_after_the_collective_timeout(runs):
    run = runs / "hung"
    cfg = dict(CFG, callbacks={"dist_helpers:StopRank": {"rank": 1, "epoch": 1, "marker": str(runs / "hang.marker"),
                                                          "how": "sleep"}, **CFG["callbacks"]})
    cfg["train"] = dict(CFG["train"], dist_timeout_s=COLLECTIVE_TIMEOUT_S)
    path = runs / "hung.yaml"
    path.write_text(yaml.safe_dump(cfg))
    p, dt = torchrun(runs, "-m", "nclab", "train", "--config", str(path), "--run-dir", str(run), "--quiet")
    assert p.returncode != 0
    # rank 0 waited one collective timeout, then stopped with one clear line (the other rank sleeps for 120 s)
    assert COLLECTIVE_TIMEOUT_S <= dt < 60, dt
    assert f"did not answer within train.dist_timeout_s={COLLECTIVE_TIMEOUT_S:g} s" in p.stderr, p.stderr[-3000:]
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "failed" and "--resume" in status["message"]


def test_sync_bn_on_cpu_and_bad_world_size_are_one_line_errors(tmp_path, monkeypatch, capsys):
    from nclab.train import distributed

    with monkeypatch.context() as m:  # only the check after joining a group; no collective runs
        m.setattr(distributed, "init_from_env", lambda device, timeout_s: True)
        assert cli_main(["train", "--config", "tiny", "--run-dir", str(tmp_path / "r"), "--quiet",
                         "--set", "train.sync_bn=true"]) == 2
        assert capsys.readouterr().err.startswith("error: train.sync_bn needs CUDA GPUs")

    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(Exception, match="WORLD_SIZE='two' is not an integer"):
        distributed.env_world_size()
    monkeypatch.setenv("WORLD_SIZE", "2")
    for k in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    assert cli_main(["train", "--config", "tiny", "--run-dir", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: WORLD_SIZE is set but RANK, MASTER_ADDR, MASTER_PORT is not") and "torchrun" in err
    assert not (tmp_path / "r").exists()  # nothing half-written
    # a sweep is data-parallel now: it stops at joining the group, before writing anything
    assert cli_main(["sweep", "cifar10-coarse5", "--recipe", "tiny", "--grid", "lr=0.1,0.01",
                     "--out", str(tmp_path / "s")]) == 2
    assert capsys.readouterr().err.startswith("error: WORLD_SIZE is set but RANK")
    assert not (tmp_path / "s").exists()
    # the theory experiments (and the one-process commands) refuse under torchrun in one line, before any work
    for argv in (["reproduce", "dln-synthetic", "--out", str(tmp_path / "t")], ["recover", "--run", str(tmp_path)]):
        assert cli_main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "does not run under torchrun (WORLD_SIZE > 1)" in err, err
        assert f"nclab {' '.join(argv[:2]) if argv[0] == 'reproduce' else argv[0]} does not run" in err, err
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("world", [2, 3])
def test_sharded_batches_are_the_rows_of_the_global_batches_with_their_augmentation(world):
    from nclab.data.augment import Augment
    from nclab.data.batches import BatchIterator

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8, generator=g)
    y = torch.arange(50)
    kw = dict(shuffle=True, drop_last=False, seed=5, augment=Augment(crop=2, flip=True), mean=[0.5] * 3, std=[0.25] * 3)
    full = BatchIterator(x, y, 16, **kw)  # batches of 16, 16, 16, 2 (a last batch smaller than 3 ranks)
    shards = [BatchIterator(x, y, 16, shard=(r, world), **kw) for r in range(world)]
    for it in [full, *shards]:
        it.set_epoch(3)
    per_rank = [list(s) for s in shards]
    assert all(len(s) == len(full) == 4 for s in shards) and all(len(p) == 4 for p in per_rank)
    for step, (xb, yb) in enumerate(full):
        xs = torch.cat([per_rank[r][step][0] for r in range(world)])
        ys = torch.cat([per_rank[r][step][1] for r in range(world)])
        assert torch.equal(ys, yb) and torch.equal(xs, xb), step  # same rows, same crops and flips
        sizes = [len(per_rank[r][step][1]) for r in range(world)]
        assert max(sizes) - min(sizes) <= 1
    order = torch.cat([s.local_order() for s in shards])
    assert sorted(order.tolist()) == list(range(50))  # every sample on exactly one rank
    assert torch.equal(shards[1].local_order(), torch.cat([p[1] for p in per_rank[1]]))


@pytest.mark.slow  # torchrun processes: seconds each
def test_time_limit_pauses_all_ranks_together_and_the_run_resumes_in_one_process(runs):
    from nclab.train import Trainer, load_config

    run = runs / "sliced"
    p, _ = torchrun(runs, "-m", "nclab", "train", "--config", str(runs / "cfg.yaml"), "--run-dir", str(run),
                    "--quiet", "--time-limit", "0")
    # every rank exits 0 (torchrun would report a non-zero one as a failed worker); rank 0 alone says why
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stderr.count("paused: ") == 1 and "after epoch 1 of 3" in p.stderr
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "paused" and status["epoch"] == 1
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1
    tr = Trainer(load_config(run / "config.yaml", overrides=["train.time_limit_s=null"]), run)
    assert tr.fit(resume=True)["status"] == "complete"
    a, b = params(runs / "two"), params(run)
    assert all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-6) for k in a)
    assert close(strip(rows(runs / "two")), strip(rows(run)), rtol=1e-5, atol=1e-7)


def _recovery_cfgs(tmp: Path) -> tuple[Path, Path]:
    """The shipped ``tiny`` config on coarse labels (4 fine classes in 2 superclasses, 200 train / 80 test rows),
    2 epochs, the recovery callback at the last one on a 150-row fit subset (the run's ``recovery.max_train``),
    eval batches of 45 rows (uneven shards of 22 + 23); and the same MLP with BatchNorm, 1 epoch, no callbacks."""
    from importlib.resources import files as package_files

    base = yaml.safe_load(package_files("nclab.configs").joinpath("tiny.yaml").read_text())
    base["data"] = dict(base["data"], source="synthetic:coarse=2,fine_per_coarse=2,dim=16,n_train=50,n_test=20,seed=0",
                        labels="coarse")
    base["optim"] = dict(base["optim"], epochs=2)
    base["train"] = dict(base["train"], eval_batch_size=45, dist_timeout_s=30)
    base["recovery"] = {"max_train": 150}
    rec = dict(base, name="rec", callbacks={"recovery": {"epochs": [2]}})
    bn = dict(base, name="bn", model=dict(base["model"], batchnorm=True), callbacks={})
    bn["optim"] = dict(base["optim"], epochs=1)
    paths = tmp / "rec.yaml", tmp / "bn.yaml"
    for path, cfg in zip(paths, (rec, bn)):
        path.write_text(yaml.safe_dump(cfg))
    return paths


def _one_process_features(run: Path) -> dict:
    from nclab.contracts.recovery import RecoverySpec
    from nclab.finegrain.pipeline import recovery_features
    from nclab.train import Trainer, load_config

    tr = Trainer(load_config(run / "config.yaml").replace(callbacks={}), run)
    tr.load_checkpoint(model_only=True)
    return recovery_features(tr, RecoverySpec.of_config(tr.cfg))


@pytest.mark.slow  # torchrun processes: seconds each
def test_two_rank_recovery_callback_gathers_shards_clusters_on_rank_0_and_matches_one_process(tmp_path):
    cfg, bn = _recovery_cfgs(tmp_path)
    one, two, two_bn, out = (tmp_path / n for n in ("one", "two", "two_bn", "out"))
    out.mkdir()
    p, _ = torchrun(tmp_path, str(TESTS / "dist_helpers.py"), "recovery", str(out), str(cfg), str(two), str(bn),
                    str(two_bn))
    assert p.returncode == 0, p.stderr[-3000:]
    r0, r1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))
    assert (r0["world"], r0["rank"], r1["rank"]) == (2, 0, 1)

    # rank 1 never entered the clustering code (counted by a profile hook in each process); rank 0 clustered
    # once, at the one logged epoch; extracting the features alone clusters nowhere
    assert r1["calls"] == {} and r0["calls"].get("evaluate.evaluate_recovery") == 1, (r0["calls"], r1["calls"])
    assert r0["features"]["calls"] == r1["features"]["calls"] == {}
    # every rank logged the same rows (rank 0's report, broadcast; time_s included), and holds the same report
    assert r0["rows"] == r1["rows"] and [("recovery.test_acc" in r) for r in r0["rows"]] == [False, True]
    assert r0["last"] == r1["last"] and r0["last"]["options"]["max_train"] == 150
    logged = rows(two)
    assert {k: v for k, v in logged[-1].items() if k.startswith("recovery.")} == \
        {k: v for k, v in r0["rows"][-1].items() if k.startswith("recovery.")}

    # each rank extracted its shard only (22 + 23 of every 45-row batch), rank 0 received all rows
    a, b = r0["features"]["local_rows"], r1["features"]["local_rows"]
    assert (a["train"] + b["train"], a["test"] + b["test"]) == (200, 80) and 0 < a["train"] < 200
    assert r0["features"]["got_features"] and not r1["features"]["got_features"]
    # gathered = one-process extraction of the final checkpoint, row for row, bit for bit (the 150-row subset of
    # train, sharded, and all of test); with BatchNorm rank 1 first takes rank 0's running statistics
    for name, run in (("features", two), ("features2", two_bn)):
        got, ref = np.load(out / f"{name}.npz"), _one_process_features(run)
        assert np.array_equal(got["idx"], ref["idx"]) and len(ref["idx"]) == 150
        for split in ("train", "test"):
            f, pr = ref[split]
            assert got[f"{split}_features"].dtype == f.dtype and np.array_equal(got[f"{split}_features"], f), name
            assert np.array_equal(got[f"{split}_pred"], pr), name
    b0, b1 = r0["features2"], r1["features2"]
    # DDP leaves each rank its own last BatchNorm update; the trainer gives every rank rank 0's at each epoch end
    assert b0["buffer_sum_before"] == b1["buffer_sum_before"]
    assert b0["buffer_sum"] == b1["buffer_sum"] == b0["buffer_sum_before"]

    # nclab recover --run on the 2-rank run's final checkpoint (one process, same settings): identical numbers
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert cli_main(["recover", "--run", str(two), "--json", "--quiet"]) == 0
    rep = json.loads(buf.getvalue())
    for k in ("test_acc", "oracle_test_acc", "train_acc"):
        assert logged[-1][f"recovery.{k}"] == rep[k] == r0["last"][k], k
    # the same config trained by one process: the features differ by DDP's float32 round-off only, too little to
    # move any sample to another cluster, so the recovery numbers (counted accuracies) are identical
    assert cli_main(["train", "--config", str(cfg), "--run-dir", str(one), "--quiet"]) == 0
    ref1 = {k: v for k, v in rows(one)[-1].items() if k.startswith("recovery.") and not k.endswith("time_s")}
    assert ref1 == {k: v for k, v in logged[-1].items() if k.startswith("recovery.") and not k.endswith("time_s")}
    assert len(ref1) == 3


# paper A's experiment on 10 synthetic classes (mod:5 pairs fine class j of one true coarse class with j of the other):
# the tiny MLP recipe, 1 epoch, 30 train / 12 test rows per class
EXP = ["cifar10-coarse5", "--recipe", "tiny", "--data",
       "synthetic:coarse=2,fine_per_coarse=5,dim=16,n_train=30,n_test=12,seed=0", "--epochs", "1", "--quiet"]
# the projection-pursuit split is a search whose chosen direction flips under float32 round-off of the features
# (DDP's gradient sums vs one process): its numbers are checked against its own recomputation, not across layouts
PURSUIT = ("recovery_pursuit", "ratios", "tables")


def _numbers(res: dict) -> dict:
    """results.json without the timings and the pursuit split (see PURSUIT)."""
    def clean(v):
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items() if "time" not in k and k != "images_per_s"}
        return [clean(x) for x in v] if isinstance(v, list) else v

    return clean({k: v for k, v in res.items() if k not in PURSUIT + ("results_path",)})


@pytest.mark.slow  # torchrun processes: seconds each
def test_two_rank_reproduce_equals_one_process_and_writes_the_same_files(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert cli_main(["reproduce", *EXP, "--out", str(one)]) == 0
    p, _ = torchrun(tmp_path, "-m", "nclab", "reproduce", *EXP, "--out", str(two), "--json")
    assert p.returncode == 0, p.stderr[-3000:]
    printed = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    assert len(printed) == 1  # rank 0 alone prints
    a, b = (json.loads((d / "results.json").read_text()) for d in (one, two))
    assert files(two) == files(one) and "baseline/metrics.jsonl" in files(two) and "report.html" in files(two)
    # every counted accuracy (recovery, oracle, coarse, probe, raw-pixel / random-init / fine-trained baselines) is
    # identical: the features differ by round-off only; the other floats within float32 round-off
    assert _numbers(a).keys() == _numbers(b).keys() and close(_numbers(a), _numbers(b), rtol=1e-5, atol=1e-6)
    for k in ("test_acc", "oracle_test_acc", "train_acc", "ari", "nmi"):
        assert a["recovery"][k] == b["recovery"][k], k
    assert a["coarse_test_acc"] == b["coarse_test_acc"] and a["probe"]["test_acc"] == b["probe"]["test_acc"]
    acc = (lambda r: {k: v["test_acc"] for k, v in r["baselines"].items()})
    assert acc(a) == acc(b)
    assert set(b["baselines"]) == {"raw_pixels", "random_init", "fine_trained"}
    # rank 0 ran the pursuit split on its own features: recomputed from the saved arrays, the same numbers
    from nclab.finegrain.evaluate import evaluate_recovery

    f = {n: np.load(two / "features" / f"{n}.npy") for n in
         ("train_features", "train_coarse", "train_fine", "test_features", "test_coarse_pred", "test_fine")}
    ref = evaluate_recovery(*f.values(), np.arange(10) % 5, method="pursuit")
    assert b["recovery_pursuit"]["test_acc"] == ref["test_acc"] and a["recovery_pursuit"].keys() == \
        b["recovery_pursuit"].keys()
    assert len((two / "metrics.jsonl").read_text().splitlines()) == 1  # one row per epoch, not per rank
    assert json.loads((two / "baseline" / "status.json").read_text())["status"] == "complete"


@pytest.mark.slow  # torchrun processes: seconds each
def test_two_rank_sweep_runs_every_cell_and_writes_its_summary_once(tmp_path):
    argv = ["sweep", EXP[0], "--grid", "lr=0.05,0.01", *EXP[1:], "--out", str(tmp_path / "sw")]
    p, _ = torchrun(tmp_path, "-m", "nclab", *argv)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("results: ") == 1 and p.stdout.count("report: ") == 1  # rank 0 alone prints
    sw = tmp_path / "sw"
    res = json.loads((sw / "results.json").read_text())
    assert [c["run"] for c in res["grid"]["cells"]] == ["lr=0.05", "lr=0.01"]
    assert all(0 <= c["recovery_acc"] <= 1 for c in res["grid"]["cells"])
    assert json.loads((sw / "status.json").read_text())["status"] == "complete"
    for cell in ("lr=0.05", "lr=0.01"):
        assert len((sw / cell / "metrics.jsonl").read_text().splitlines()) == 1
        assert not (sw / cell / "baseline").exists()
