"""Experiment wiring on tiny data (digits / synthetic, seconds): results.json, saved arrays, callback, resume, sweep."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nclab.cli import main
from nclab.finegrain.evaluate import evaluate_recovery, flatten_pixels
from nclab.experiments.finegrain_runs import build_config, run_experiment
from nclab.rundir import RunDir

TINY = dict(recipe="tiny", data="digits", epochs=3)


@pytest.fixture(scope="module")
def coarse5(tmp_path_factory):
    out = tmp_path_factory.mktemp("exp") / "coarse5"
    res = run_experiment("cifar10-coarse5", out=out, **TINY)
    return out, res


def test_results_match_an_independent_recomputation(coarse5):
    out, res = coarse5
    run = RunDir(out)
    disk = run.read_results()
    assert disk["recovery"]["test_acc"] == pytest.approx(res["recovery"]["test_acc"])
    f = {n: np.load(out / "features" / f"{n}.npy") for n in
         ("train_features", "test_features", "train_fine", "test_fine", "train_coarse", "test_coarse",
          "test_coarse_pred")}
    assert f["train_features"].dtype == np.float32 and f["train_features"].shape[0] == len(f["train_fine"])
    f2c = np.arange(10) % 5  # mod:5
    assert np.array_equal(f["train_coarse"], f2c[f["train_fine"]])
    ref = evaluate_recovery(f["train_features"], f["train_coarse"], f["train_fine"], f["test_features"],
                            f["test_coarse_pred"], f["test_fine"], f2c)
    assert disk["recovery"]["test_acc"] == pytest.approx(ref["test_acc"])
    assert disk["coarse_test_acc"] == pytest.approx(np.mean(f["test_coarse_pred"] == f["test_coarse"]))
    assert disk["recovery"]["oracle_test_acc"] >= disk["recovery"]["test_acc"]
    # the supervised probe block: recomputed from the saved arrays, routed the same way
    from nclab.data.hierarchy import Hierarchy
    from nclab.finegrain.probe import linear_probe

    h = Hierarchy.from_mapping(f2c, [str(i) for i in range(10)], spec="array")
    pref = linear_probe(f["train_features"], f["train_coarse"], f["train_fine"], f["test_features"],
                        f["test_coarse_pred"], f["test_fine"], h)
    assert disk["probe"]["test_acc"] == pytest.approx(pref["test_acc"])
    assert disk["probe"]["oracle_test_acc"] >= disk["probe"]["test_acc"]
    assert any("linear probe" in r[0] for r in disk["tables"][0]["rows"])
    # the pursuit variant: recomputed from the saved arrays; predicted routing can never beat the routing itself
    pur = evaluate_recovery(f["train_features"], f["train_coarse"], f["train_fine"], f["test_features"],
                            f["test_coarse_pred"], f["test_fine"], f2c, method="pursuit")
    assert disk["recovery_pursuit"]["test_acc"] == pytest.approx(pur["test_acc"])
    assert disk["recovery_pursuit"]["test_acc"] <= disk["coarse_test_acc"] + 1e-12
    assert disk["recovery_pursuit"]["options"]["method"] == "pursuit"
    assert any("projection-pursuit" in r[0] for r in disk["tables"][0]["rows"])
    # the net's coarse accuracy equals the trainer's own last test_acc
    assert disk["coarse_test_acc"] == pytest.approx(run.read_metrics()[-1]["test_acc"])
    cents = np.load(out / "features" / "centroids.npz")
    assert sorted(cents["c3_fine"].tolist()) == [3, 8] and cents["c3"].shape == (2, f["train_features"].shape[1])
    # baselines: raw pixels recomputed by hand with the same routing; fine-trained from its own run
    from nclab.data import load_dataset

    ds = load_dataset("digits")
    raw = evaluate_recovery(flatten_pixels(ds.train.x), f2c[ds.train.y.numpy()], ds.train.y.numpy(),
                            flatten_pixels(ds.test.x), f["test_coarse_pred"], ds.test.y.numpy(), f2c)
    b = disk["baselines"]
    assert b["raw_pixels"]["test_acc"] == pytest.approx(raw["test_acc"])
    assert 0.1 < b["random_init"]["test_acc"] <= 1.0
    assert b["fine_trained"]["test_acc"] == pytest.approx(RunDir(out / "baseline").read_metrics()[-1]["test_acc"])
    # its superclass accuracy, from the baseline checkpoint's own forward pass (TINY: no TTA) mapped with mod:5
    from nclab.train import Trainer, load_config

    btr = Trainer(load_config(str(out / "baseline" / "config.yaml")), out / "baseline")
    btr.load_checkpoint()
    btr.model.eval()
    with torch.no_grad():
        pred = torch.cat([btr.model(x).argmax(1) for x, _ in btr.eval_loader("test")]).numpy()
    yb = btr.dataset.test.y.numpy()
    assert np.mean(pred == yb) == pytest.approx(b["fine_trained"]["test_acc"])
    assert b["fine_trained"]["coarse_test_acc"] == pytest.approx(np.mean(f2c[pred] == f2c[yb]))
    assert b["fine_trained"]["coarse_test_acc"] >= b["fine_trained"]["test_acc"]  # a fine hit is a superclass hit
    assert any("coarse accuracy of its predictions" in r[0] for r in disk["tables"][0]["rows"])
    assert disk["subruns"] == ["baseline"] and disk["tables"][0]["rows"]


def test_callback_logs_recovery_and_nc(coarse5):
    out, _ = coarse5
    rows = RunDir(out).read_metrics()
    logged = [r for r in rows if "recovery.test_acc" in r]
    assert logged and logged[-1]["epoch"] == 3  # log schedule includes the last epoch
    assert all(0 <= r["recovery.test_acc"] <= r["recovery.oracle_test_acc"] <= 1 for r in logged)
    assert any("nc.train.coarse.nc1" in r for r in rows)


def test_resume_skips_complete_runs(coarse5):
    out, res = coarse5
    before = (out / "metrics.jsonl").read_text(), (out / "baseline" / "metrics.jsonl").read_text()
    again = run_experiment("cifar10-coarse5", out=out, resume=True, random_init=False, raw_pixels=False, **TINY)
    assert again["recovery"]["test_acc"] == pytest.approx(res["recovery"]["test_acc"])
    assert (before[0], before[1]) == ((out / "metrics.jsonl").read_text(),
                                      (out / "baseline" / "metrics.jsonl").read_text())


def test_resume_reuses_the_analysis_of_the_same_checkpoint_only(coarse5, tmp_path, monkeypatch):
    # a --resume slice after the trained run was analysed (GPU time in slices: only the baseline is left) must
    # not redo recovery, probe, pursuit and the raw/random baselines; other settings or another checkpoint must
    import json
    import shutil

    import nclab.experiments.finegrain_runs as ex

    src, res = coarse5
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    calls = []
    real = ex._analyse
    monkeypatch.setattr(ex, "_analyse", lambda *a, **k: (calls.append(k["spec"].max_train), real(*a, **k))[1])
    # the fixture's settings (analysed here unless the copied results.json already holds them: other tests resume
    # the fixture with other settings), then again: taken from results.json
    run_experiment("cifar10-coarse5", out=out, resume=True, **TINY)
    calls.clear()
    again = run_experiment("cifar10-coarse5", out=out, resume=True, **TINY)
    assert calls == []
    for k in ("coarse_test_acc", "recovery", "probe", "recovery_pursuit", "final_metrics"):
        assert again[k] == json.loads(json.dumps(res[k]))
    assert again["baselines"] == json.loads(json.dumps(res["baselines"]))  # fine_trained re-read from its run
    assert RunDir(out).read_results()["analysis_of"]["trained"]["status"] == "complete"
    # other analysis settings: analysed again
    run_experiment("cifar10-coarse5", out=out, resume=True, max_train=500, **TINY)
    assert calls == [500]
    # the same settings but a checkpoint from another training (its completion record differs): analysed again
    status = json.loads((out / "status.json").read_text())
    status["wall_time_s"] += 1.0
    (out / "status.json").write_text(json.dumps(status))
    run_experiment("cifar10-coarse5", out=out, resume=True, max_train=500, **TINY)
    assert calls == [500, 500]


def test_reproduce_in_time_slices_equals_one_go(coarse5, tmp_path, capsys):
    # --time-limit 0: every call trains one epoch of whichever run is unfinished (coarse, then the baseline),
    # exits 75; calls with --resume continue; the end result equals the uninterrupted fixture's
    out, res = coarse5
    args = ["reproduce", "cifar10-coarse5", "--recipe", "tiny", "--data", "digits", "--epochs", "3", "--quiet",
            "--no-random-init", "--no-probe", "--out", str(tmp_path / "s"), "--time-limit", "0"]
    codes = [main(args)]
    while codes[-1] == 75 and len(codes) < 10:
        codes.append(main(args + ["--resume"]))
    # calls 1-2: a coarse epoch each; call 3: the last coarse epoch (a run never pauses once done), its recovery,
    # then the baseline's first epoch; calls 4-5: the baseline's other epochs, the last call finishes
    assert codes == [75] * 4 + [0]
    assert "paused: " in capsys.readouterr().err
    got = RunDir(tmp_path / "s").read_results()
    assert got["recovery"]["test_acc"] == pytest.approx(res["recovery"]["test_acc"])
    assert got["baselines"]["fine_trained"]["test_acc"] == pytest.approx(res["baselines"]["fine_trained"]["test_acc"])


def test_recovery_callback_leaves_global_rng_and_logs_recovery(tmp_path):
    import random

    from nclab.finegrain.callback import RecoveryCallback
    from nclab.finegrain.pipeline import recover_trainer
    from nclab.train import Trainer, load_config

    cfg = load_config("tiny", ["optim.epochs=1", "data.labels=coarse"])
    tr = Trainer(cfg, tmp_path / "r")
    tr.fit()
    cb = RecoveryCallback(epochs=[1], max_train=100, seed=3)
    states = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    logs = {}
    cb.on_epoch_end(tr, 1, logs)
    assert torch.equal(states[0], torch.get_rng_state()) and np.array_equal(states[1], np.random.get_state()[1])
    assert states[2] == random.getstate()
    ref = recover_trainer(tr, max_train=100, seed=3)
    assert logs["recovery.test_acc"] == ref["test_acc"] and logs["recovery.train_acc"] == ref["train_acc"]
    assert cb.last["per_superclass"][0]["n_train"] + cb.last["per_superclass"][1]["n_train"] == 100
    skip = {}
    cb.on_epoch_end(tr, 2, skip)
    assert skip == {}  # epoch 2 is not in the schedule
    with pytest.raises(Exception, match="recovery.epochs"):
        RecoveryCallback(epochs="sometimes")


def test_finer_experiment_recovers_true_classes(tmp_path):
    data = "synthetic:coarse=5,fine_per_coarse=2,dim=16,n_train=40,n_test=20,seed=0"
    res = run_experiment("cifar10-finer", recipe="tiny", data=data, epochs=2, out=tmp_path / "finer",
                         random_init=False)
    rec = res["recovery"]
    assert rec["kind"] == "split" and len(rec["confusion"]) == 10  # 10 true classes recovered from a 20-way net
    assert set(res["pseudo_recovery"]) >= {"train_acc", "test_acc"}
    f = np.load(tmp_path / "finer" / "features" / "test_fine.npy")
    assert f.max() == 9
    assert res["baselines"]["fine_trained"]["test_acc"] > 0.5
    last = RunDir(tmp_path / "finer").read_metrics()[-1]  # NC metrics on both labelings: pseudo (fine), true (coarse)
    assert "nc.train.fine.nc1" in last and "nc.train.coarse.nc1" in last
    assert RunDir(tmp_path / "finer").read_run_info()["num_classes"] == 20
    # nothing is routed in a split run: no "coarse accuracy" (it would be a trivial 100 %); the table and the
    # report name what was measured instead
    assert "coarse_test_acc" not in res
    table = {label: v for label, v in res["tables"][0]["rows"]}
    assert not any("coarse" in label for label in table)
    assert (table["true classes recovered by clustering all features (one group, no routing)"]
            == f"{100 * rec['test_acc']:.2f}%")
    assert (table["pseudo-class accuracy of the net (the labels it was trained on)"]
            == f"{100 * res['net_test_acc']:.2f}%")
    from nclab.report import load_run, results_rows

    rows = {label: ours for label, ours, _ in results_rows(load_run(tmp_path / "finer"))}
    assert rows["True-class accuracy of the network (pseudo-class predictions mapped to their classes)"] == \
        pytest.approx(res["true_class_test_acc"])
    assert rows["Pseudo classes recovered by clustering inside each true class (test)"] == \
        pytest.approx(res["pseudo_recovery"]["oracle_test_acc"])
    assert not any("oracle" in label or "Coarse" in label for label in rows)


def test_sweep_runs_cells_and_resumes(tmp_path, capsys):
    argv = ["sweep", "cifar10-coarse5", "--recipe", "tiny", "--data", "digits", "--epochs", "1",
            "--grid", "lr=0.05,0.01", "wd=5e-4", "--out", str(tmp_path / "sw"), "--json"]
    assert main(argv) == 0
    res = json.loads(capsys.readouterr().out)
    cells = res["grid"]["cells"]
    assert [c["lr"] for c in cells] == [0.05, 0.01] and res["grid"]["axes"]["wd"] == [5e-4]
    for c in cells:
        cell = RunDir(tmp_path / "sw" / c["run"])
        assert c["recovery_acc"] == pytest.approx(cell.read_results()["recovery"]["test_acc"])
        assert cell.read_config()["optim"]["lr"] == c["lr"]
    assert "probe" in cell.read_results()
    sweep = RunDir(tmp_path / "sw")  # the sweep folder records itself like a run
    assert (sweep.read_status()["status"] == "complete"
            and sweep.read_run_info()["experiment"] == "sweep:cifar10-coarse5")
    mtime = (tmp_path / "sw" / cells[0]["run"] / "metrics.jsonl").stat().st_mtime_ns
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["grid"]["cells"] == cells
    assert (tmp_path / "sw" / cells[0]["run"] / "metrics.jsonl").stat().st_mtime_ns == mtime
    assert main(argv + ["--device", "auto"]) == 0  # another device is not another config: cells skipped
    capsys.readouterr()
    assert (tmp_path / "sw" / cells[0]["run"] / "metrics.jsonl").stat().st_mtime_ns == mtime
    # the same --out with another config: the finished cells are not silently reused
    other = [a if a != "1" else "2" for a in argv]  # --epochs 2
    assert main(other) == 2
    err = capsys.readouterr().err
    assert "is complete but was trained with other values of optim.epochs" in err and "--force" in err
    # --force retrains every cell; --no-probe is honoured
    assert main(other + ["--force", "--no-probe"]) == 0
    capsys.readouterr()
    for c in cells:
        cell = RunDir(tmp_path / "sw" / c["run"])
        assert cell.read_config()["optim"]["epochs"] == 2 and len(cell.read_metrics()) == 2
        assert "probe" not in cell.read_results()
    # every cell is validated before any trains: a bad value in the last cell stops the sweep at once
    bad = ["sweep", "cifar10-coarse5", "--recipe", "tiny", "--data", "digits", "--epochs", "1",
           "--grid", "lr=0.05,-1", "--out", str(tmp_path / "bad")]
    assert main(bad) == 2
    assert "grid cell lr=-1: config key optim.lr=-1.0 is too small" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_cifar100_config_uses_official_superclasses():
    cfg = build_config("cifar100-coarse20", recipe="tiny", data="digits")
    assert cfg.data.hierarchy == "cifar100" and cfg.data.labels == "coarse"
    assert build_config("cifar10-coarse5", recipe="tiny", hierarchy="adjacent:5").data.hierarchy == "adjacent:5"


def test_recover_cli_on_a_run(coarse5, capsys):
    out, res = coarse5
    assert main(["recover", "--run", str(out), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["test_acc"] == pytest.approx(res["recovery"]["test_acc"])
    assert rep["coarse_test_acc"] == pytest.approx(res["coarse_test_acc"])
    # --probe on a run gives the probe block reproduce wrote (same features, same routing)
    assert main(["recover", "--run", str(out), "--json", "--probe"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["probe"]["test_acc"] == pytest.approx(res["probe"]["test_acc"])


def test_sweep_with_a_seed_axis_reports_mean_and_std_over_seeds(tmp_path, capsys):
    """lr x seed: the summary holds, per lr, the mean and sample std of the per-seed cells (recomputed here from
    the cells), and the report's heatmap averages over seeds instead of showing whichever seed ran last."""
    argv = ["sweep", "cifar10-coarse5", "--recipe", "tiny", "--data", "digits", "--epochs", "1",
            "--grid", "lr=0.05,0.01", "seed=0,1,2", "--out", str(tmp_path / "sw"), "--json"]
    assert main(argv) == 0
    res = json.loads(capsys.readouterr().out)
    cells, summary = res["grid"]["cells"], res["grid"]["over_seeds"]
    assert len(cells) == 6 and [s["lr"] for s in summary] == [0.05, 0.01]
    for s in summary:
        vals = [c["recovery_acc"] for c in cells if c["lr"] == s["lr"]]
        assert s["n"] == 3 and s["recovery_acc_mean"] == pytest.approx(np.mean(vals))
        assert s["recovery_acc_std"] == pytest.approx(np.std(vals, ddof=1))
        assert RunDir(tmp_path / "sw" / cells[0]["run"]).read_config()["seed"] == 0
    assert len({c["recovery_acc"] for c in cells}) > 2  # the seeds really differ
    assert len(res["tables"]) == 2 and res["tables"][1]["columns"][:2] == ["lr", "n"]
    html = (tmp_path / "sw" / "report.html").read_text()
    mean_005 = next(s for s in summary if s["lr"] == 0.05)["recovery_acc_mean"]
    assert "mean over seed" in html and f"{100 * mean_005:.2f}" in html


def test_force_retrains_the_baseline_and_clears_the_old_runs_files(tmp_path, capsys):
    argv = ["reproduce", "cifar10-coarse5", "--recipe", "tiny", "--data", "digits", "--epochs", "1",
            "--no-random-init", "--no-probe", "--out", str(tmp_path / "r"), "--quiet"]
    assert main(argv) == 0
    assert len(RunDir(tmp_path / "r" / "baseline").read_metrics()) == 1
    argv2 = [a if a != "1" else "2" for a in argv]
    assert main(argv2) == 2  # an existing run needs --resume or --force
    assert main(argv2 + ["--force"]) == 0
    for d in (tmp_path / "r", tmp_path / "r" / "baseline"):  # --force retrained both, not only the main run
        assert RunDir(d).read_config()["optim"]["epochs"] == 2 and len(RunDir(d).read_metrics()) == 2
    # a plain train --force into that folder leaves nothing of the experiment behind
    capsys.readouterr()
    assert main(["train", "--config", "tiny", "--run-dir", str(tmp_path / "r"), "--force", "--quiet",
                 "--epochs", "1"]) == 0
    left = {p.name for p in (tmp_path / "r").iterdir()}
    assert not left & {"results.json", "features", "baseline"}, left
    assert RunDir(tmp_path / "r").read_results() == {}


def test_reproduce_resume_keeps_the_paused_runs_time_limit(tmp_path, monkeypatch):
    # the pause message promises "each resume runs one more slice", but reproduce/sweep rebuilt the config from
    # the command line: a plain --resume ran to the end (and could overrun a GPU slice)
    import nclab.experiments.finegrain_runs as ex

    rd = RunDir(tmp_path / "rp")
    rd.path.mkdir()
    rd.write_config({"train": {"time_limit_s": 7.5}})
    seen = []

    def stop(*a, overrides=None, **k):
        seen.append(list(overrides))
        raise RuntimeError("stop here")

    monkeypatch.setattr(ex, "build_config", stop)
    for resume, given in ((True, []), (True, ["train.time_limit_s=null"]), (True, ["train.time_limit_s=3"]),
                          (False, [])):
        with pytest.raises(RuntimeError, match="stop here"):
            ex.run_experiment("cifar10-coarse5", recipe="tiny", overrides=given, out=rd.path, resume=resume)
    assert seen == [["train.time_limit_s=7.5"], ["train.time_limit_s=null"], ["train.time_limit_s=3"], []]


@pytest.fixture
def stubbed_experiment(tmp_path, monkeypatch):
    """run_experiment on a folder whose run is 'complete', with _train and _analyse replaced: each real analysis
    writes a new serial number into every result it owns, so a reused analysis shows the old number."""
    import nclab.experiments.finegrain_runs as ex
    from nclab.rundir import RunDir

    out = tmp_path / "exp"
    out.mkdir()
    RunDir(out).write_status("complete", epoch=3, wall_time_s=12.5)
    calls = []

    def analyse(tr, results, write, *, spec, probe, which):
        calls.append(dict(opts=spec.estimator_kwargs(), max_train=spec.max_train, probe=probe, which=which))
        n = len(calls)
        results.update(coarse_test_acc=n, net_test_acc=n, recovery={"test_acc": n}, final_metrics={"epoch": n},
                       train_time_s=float(n), recovery_pursuit={"test_acc": n})
        if probe:
            results["probe"] = {"test_acc": n}
        if which:
            results["baselines"] = {k: {"test_acc": n} for k in which}

    monkeypatch.setattr(ex, "_train", lambda cfg, run_dir, resume, force: object())
    monkeypatch.setattr(ex, "_analyse", analyse)

    def run(**kw):
        args = dict(recipe="tiny", data="synthetic", out=out, resume=True, baseline=False)
        return ex.run_experiment("cifar10-coarse5", **{**args, **kw})

    return out, calls, run


def test_resume_reuses_every_analysis_result_of_the_same_checkpoint_and_settings(stubbed_experiment):
    out, calls, run = stubbed_experiment
    first = run()
    again = run()
    assert len(calls) == 1  # the second slice took the analysis from results.json
    for k in ("coarse_test_acc", "net_test_acc", "recovery", "final_metrics", "train_time_s", "recovery_pursuit",
              "probe", "baselines"):
        assert again[k] == first[k], k
    assert json.loads((out / "results.json").read_text())["train_time_s"] == 1.0


@pytest.mark.parametrize("change", ["recovery_options", "probe_off", "probe_on", "random_init_on", "raw_pixels_off",
                                    "epoch", "status"])
def test_resume_redoes_the_analysis_when_a_setting_or_the_checkpoint_differs(stubbed_experiment, change):
    from nclab.rundir import RunDir

    out, calls, run = stubbed_experiment
    base = dict(probe=change != "probe_on", random_init=change != "random_init_on")
    run(**base)
    if change == "epoch":  # another training that happens to report the same wall time
        RunDir(out).write_status("complete", epoch=4)
    if change == "status":
        RunDir(out).write_status("paused")
    # a setting that differs from the run's recorded one (naming the recorded value is no change)
    kw = {"recovery_options": dict(base, recovery_options={"normalize": "center+l2"}),
          "probe_off": dict(base, probe=False), "probe_on": dict(base, probe=True),
          "random_init_on": dict(base, random_init=True), "raw_pixels_off": dict(base, raw_pixels=False)
          }.get(change, base)
    res = run(**kw)
    assert len(calls) == 2, change
    assert res["recovery"] == {"test_acc": 2}
    assert ("probe" in res) == kw["probe"]
    assert set(res.get("baselines", {})) == {k for k, on in (("raw_pixels", kw.get("raw_pixels", True)),
                                                             ("random_init", kw["random_init"])) if on}


def test_a_reused_analysis_keeps_only_the_baselines_asked_for(stubbed_experiment, monkeypatch):
    import nclab.experiments.finegrain_runs as ex

    out, calls, run = stubbed_experiment
    run(random_init=True)
    # the same key (settings and checkpoint) but results.json also carries a stale baseline entry of another run
    res = json.loads((out / "results.json").read_text())
    res["baselines"]["stale"] = {"test_acc": 0.0}
    (out / "results.json").write_text(json.dumps(res))
    again = run(random_init=True)
    assert len(calls) == 1 and set(again["baselines"]) == {"raw_pixels", "random_init"}
    assert ex._ANALYSIS_KEYS  # (the reuse path ran)


def test_resume_inherits_the_first_configured_time_limit(tmp_path):
    from nclab.experiments.finegrain_runs import inherited_time_limit
    from nclab.rundir import RunDir

    dirs = [tmp_path / "a", tmp_path / "b", tmp_path / "c"]
    for d, lim in zip(dirs[1:], (30, 60)):
        d.mkdir()
        RunDir(d).write_config({"train": {"time_limit_s": lim}})
    assert inherited_time_limit([], dirs) == ["train.time_limit_s=30"]
    assert inherited_time_limit(["train.time_limit_s = 5"], dirs) == []
