"""Trainer: schedules, losses, config validation, learning on real data, coarse labels, NaN stop, resume."""

import copy
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from nclab.cli import main
from nclab.data.types import Dataset, Split
from nclab.rundir import RunDir
from nclab.train import Callback, Trainer, load_config
from nclab.train import losses
from nclab.train.config import configs_dir
from nclab.train.schedules import lr_at
from nclab.train.trainer import TIMING_KEYS
from nclab.utils.errors import NclabError, RunPaused
from nclab.utils.io import torch_load

REPO = Path(__file__).resolve().parents[1]


def digits_dataset(n_train_per_class=40, n_test_per_class=20) -> Dataset:
    """A small real dataset: scikit-learn's 8x8 digits as 64-d vectors (first n per class)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = d.data.astype(np.float32), d.target.astype(np.int64)
    tr = np.concatenate([np.flatnonzero(y == c)[:n_train_per_class] for c in range(10)])
    te = np.concatenate([np.flatnonzero(y == c)[n_train_per_class:n_train_per_class + n_test_per_class]
                         for c in range(10)])
    sp = lambda i: Split(torch.from_numpy(x[i]), torch.from_numpy(y[i]))  # noqa: E731
    return Dataset("digits", sp(tr), sp(te), [str(c) for c in range(10)], source="sklearn-digits")


def base_cfg(**over) -> dict:
    cfg = {"name": "t", "seed": 0, "model": {"name": "mlp", "width": 32, "depth": 1},
           "optim": {"lr": 0.05, "batch_size": 32, "epochs": 4}, "schedule": {"name": "cosine"},
           "train": {"device": "cpu", "bf16": False, "channels_last": False, "threads": 1}}
    for k, v in over.items():
        cfg.setdefault(k, {}).update(v) if isinstance(v, dict) else cfg.__setitem__(k, v)
    return cfg


# schedules ------------------------------------------------------------------------------------
def test_multistep_divides_by_ten_at_thirds():
    s = {"name": "multistep", "milestones": [1 / 3, 2 / 3], "gamma": 0.1}
    # 9 epochs x 10 steps: epochs 0-2 lr, 3-5 lr/10, 6-8 lr/100
    assert lr_at(s, 0.1, 0, 10, 9) == 0.1
    assert lr_at(s, 0.1, 29, 10, 9) == 0.1
    assert lr_at(s, 0.1, 30, 10, 9) == pytest.approx(0.01)
    assert lr_at(s, 0.1, 60, 10, 9) == pytest.approx(0.001)
    # 350 epochs: decays at floor(350/3) = 116 and floor(700/3) = 233
    assert lr_at(s, 0.1, 115, 1, 350) == 0.1 and lr_at(s, 0.1, 116, 1, 350) == pytest.approx(0.01)
    assert lr_at(s, 0.1, 232, 1, 350) == pytest.approx(0.01) and lr_at(s, 0.1, 233, 1, 350) == pytest.approx(0.001)


def test_cosine_onecycle_constant_warmup_values():
    cos = {"name": "cosine", "warmup": 0.0, "final_factor": 0.0}
    assert lr_at(cos, 2.0, 0, 10, 10) == 2.0
    assert lr_at(cos, 2.0, 50, 10, 10) == pytest.approx(1.0)  # half way: (1 + cos(pi/2)) / 2
    assert lr_at(cos, 2.0, 25, 10, 10) == pytest.approx(1.0 + math.cos(math.pi / 4))
    one = {"name": "onecycle", "warmup": 0.2, "start_factor": 0.1, "final_factor": 0.0}
    # T = 100, W = 20: 0.1 -> 1 over 20 steps, then 1 -> 0 over 80
    assert lr_at(one, 1.0, 0, 10, 10) == pytest.approx(0.1)
    assert lr_at(one, 1.0, 10, 10, 10) == pytest.approx(0.55)
    assert lr_at(one, 1.0, 20, 10, 10) == pytest.approx(1.0)
    assert lr_at(one, 1.0, 60, 10, 10) == pytest.approx(0.5)
    assert lr_at({"name": "constant", "warmup": 0.1}, 0.3, 5, 10, 10) == pytest.approx(0.15)
    assert lr_at({"name": "constant"}, 0.3, 99, 10, 10) == 0.3


# losses ------------------------------------------------------------------------------------------
def test_losses_against_hand_computed():
    z = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 0])
    # mse = 1/(2N) sum ||z - e_y||^2 = ((1 + 0) + (1 + 1)) / 4
    assert losses.data_loss("mse", z, y).item() == pytest.approx(0.75)
    ce = (-math.log(math.exp(2) / (math.exp(2) + 1)) - math.log(1 / (1 + math.e))) / 2
    assert losses.data_loss("ce", z, y).item() == pytest.approx(ce, rel=1e-6)
    lin = torch.nn.Linear(2, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 0.0]]))
    assert losses.weight_penalty([lin], 0.1).item() == pytest.approx(0.05 * 14)
    assert losses.feature_penalty(z, 0.2).item() == pytest.approx(0.1 * (4 + 1) / 2)


# config ------------------------------------------------------------------------------------------
def test_config_defaults_and_overrides():
    cfg = load_config({"optim": {"lr": 1}}, ["optim.momentum=0.5", "data.augment.flip=true", "schedule.name=cosine"])
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.momentum == 0.5 and cfg.data.augment.flip is True
    assert cfg.loss.name == "ce" and cfg.train.checkpoint_every == 1
    assert cfg.train.compile is False
    assert load_config({}, ["train.compile=true"]).train.compile is True
    assert load_config({}, ["train.compile=reduce-overhead"]).train.compile == "reduce-overhead"


def test_reduce_overhead_compile_keeps_the_eager_model_on_cpu(tmp_path):
    # reduce-overhead = CUDA graphs; without a GPU the trainer runs the plain model (no inductor compile)
    tr = Trainer(base_cfg(train={"compile": "reduce-overhead"}), tmp_path / "r", dataset=digits_dataset(5, 1))
    assert tr._fwd is tr.model
    assert load_config("paper_resnet18").train.compile == "reduce-overhead"


@pytest.mark.parametrize("src,over,match", [
    ({"optim": {"lrr": 0.1}}, [], r"unknown config key optim\.lrr; did you mean optim\.lr"),
    ({"optimm": {}}, [], r"unknown config key optimm; did you mean optim"),
    ({}, ["train.devise=cpu"], r"train\.devise; did you mean train\.device"),
    ({"optim": {"lr": "fast"}}, [], r"optim\.lr must be int or float"),
    ({"optim": {"epochs": 2.5}}, [], r"optim\.epochs must be int"),
    ({"optim": {"nesterov": 1}}, [], r"optim\.nesterov must be bool"),
    ({"schedule": {"name": "cosin"}}, [], r"did you mean cosine"),
    ({}, ["loss.name=hinge"], r"choose one of ce, mse"),
    ({}, ["optim.lr=-1"], r"too small"),
    ({}, ["optim.lookahead_decay=1"], r"optim\.lookahead_decay=1\.0 is too large; it must be .* < 1"),
    ({}, ["optim.lr"], r"key=value"),
    ({}, ["train.compile=reduce_overhead"], r"did you mean reduce-overhead"),
    ({"optim": 3}, [], r"section optim must be a mapping"),
    ({}, ["loss.label_smoothing=1.5"], r"loss\.label_smoothing=1\.5 is too large; it must be .* < 1"),
    ({}, ["schedule.warmup=1"], r"schedule\.warmup=1\.0 is too large"),
    ({}, ["optim.momentum=1.5"], r"optim\.momentum=1\.5 is too large"),
    ({}, ["schedule.milestones=[abc]"], r"schedule\.milestones=\['abc'\] must be a list of fractions"),
    ({}, ["schedule.milestones=[0.5, 2]"], r"schedule\.milestones=\[0\.5, 2\] must be a list of fractions"),
    ({}, ["optim.betas=[0.9]"], r"optim\.betas=\[0\.9\] must be two numbers in \[0, 1\)"),
    ({}, ["optim.betas=[2, 3]"], r"optim\.betas=\[2, 3\] must be two numbers"),
    ({}, ["loss.name=mse", "loss.label_smoothing=0.1"], r"label_smoothing applies to loss\.name=ce only"),
    ({}, ["optim.lr=.nan"], r"optim\.lr=nan must be a finite number"),
    ({}, ["loss.lambda_w=.inf"], r"loss\.lambda_w=inf must be a finite number"),
    ({}, ["model.head_width=64"], r"model\.head_width .* needs model\.head_depth >= 2"),
])
def test_config_errors_name_the_problem(src, over, match):
    with pytest.raises(NclabError, match=match):
        load_config(src, over)


def test_shipped_configs_validate_and_are_packaged():
    assert not (REPO / "configs").exists()  # one copy: the package's (nclab/configs), found by bare name
    for name in ("tiny", "fast", "fast_coarse5", "paper_resnet18"):
        pkg_copy = configs_dir() / f"{name}.yaml"
        assert load_config(name) == load_config(str(pkg_copy))
    paper = load_config("paper_resnet18")
    assert (paper.optim.lr, paper.optim.momentum, paper.optim.weight_decay,
            paper.optim.batch_size, paper.optim.epochs, paper.schedule.name) == \
        (0.1, 0.9, 5e-4, 128, 350, "multistep")
    with pytest.raises(NclabError, match="did you mean tiny"):
        load_config("tinyy")


# training ------------------------------------------------------------------------------------------
def test_loss_decreases_on_real_digits(tmp_path):
    ds = digits_dataset()
    tr = Trainer(base_cfg(optim={"epochs": 6}), tmp_path / "run", dataset=ds)
    before = tr.evaluate("train")
    out = tr.fit()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[-1]["train_loss"] < 0.3 * before["loss"]
    assert rows[-1]["test_acc"] > 0.8 > before["acc"]  # chance is 0.1
    assert out["status"] == "complete"
    assert json.loads((tmp_path / "run" / "status.json").read_text())["status"] == "complete"
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved == tr.cfg.to_dict()
    for k in ("epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc") + TIMING_KEYS:
        assert k in rows[-1]


def test_coarse_labels_via_hierarchy(tmp_path):
    pytest.importorskip("nclab.data.builders")
    ds = digits_dataset(20, 5)
    tr = Trainer(base_cfg(data={"hierarchy": "mod:2", "labels": "coarse"}, optim={"epochs": 1}), tmp_path / "r",
                 dataset=ds)
    assert tr.num_classes == 2 and tr.model.classifier.out_features == 2
    assert torch.equal(tr.train_targets("train"), ds.train.y % 2)
    assert torch.equal(tr.eval_loader("test").y, ds.test.y % 2)


class _Poison(Callback):
    """Sets a weight to NaN at the end of epoch ``at`` (after that epoch's checkpoint is due)."""

    def __init__(self, at):
        self.at = at

    def on_epoch_end(self, trainer, epoch, logs):
        if epoch == self.at:
            with torch.no_grad():
                trainer.model.classifier.weight[0, 0] = float("nan")


def test_nan_stops_naming_epoch_step_and_checkpoint(tmp_path):
    ds = digits_dataset(10, 2)
    run = tmp_path / "r"
    # the poison lands after epoch 2's metrics row is built but before its checkpoint is written: that
    # checkpoint is never written, and the one named is the last finite one
    tr = Trainer(base_cfg(optim={"epochs": 5}, train={"checkpoint_every": 1}), run, callbacks=[_Poison(2)], dataset=ds)
    with pytest.raises(NclabError, match=r"a model parameter or buffer became non-finite at the end of epoch 2; "
                                         r"last good checkpoint: .*last\.pt \(epoch 1\)"):
        tr.fit()
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "stopped_nan" and "end of epoch 2" in status["message"] and status["epoch"] == 1
    assert [json.loads(l)["epoch"] for l in (run / "metrics.jsonl").read_text().splitlines()] == [1]
    saved = torch_load(run / "checkpoints" / "last.pt")
    assert saved["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())


@pytest.mark.parametrize("check_every", [1, 4])
def test_deferred_nonfinite_check_names_the_first_bad_step(tmp_path, check_every):
    # On a GPU the losses are read back every few steps; the stop must still name the first bad step,
    # come at the next check (not later), and keep nothing of that epoch.
    ds = digits_dataset(30, 5)
    tr = Trainer(base_cfg(optim={"epochs": 3}, train={"checkpoint_every": 1}), tmp_path / "r", dataset=ds)
    tr.nonfinite_check_every = check_every
    spe, bad = tr.steps_per_epoch, tr.steps_per_epoch + 2  # third step of epoch 2 (0-based call index)
    assert spe > 6
    calls = []

    def fwd(x):
        calls.extend([1] if tr.model.training else [])  # evaluation also runs the forward pass
        z = tr.model(x)
        return z * float("nan") if tr.model.training and len(calls) - 1 == bad else z

    tr._fwd = fwd
    with pytest.raises(NclabError, match=r"epoch 2, step 3; last good checkpoint: .*\(epoch 1\)"):
        tr.fit()
    assert len(calls) == spe + (3 if check_every == 1 else 4)  # stopped at the first check after the bad step
    assert [json.loads(l)["epoch"] for l in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()] == [1]


def test_divergence_in_an_epochs_last_update_never_reaches_a_checkpoint(tmp_path):
    # the step losses are computed before each update, so the last update of an epoch (the only one with
    # full-batch training) is checked at the epoch's end: parameters, then the test loss
    ds = digits_dataset(10, 2)
    tr = Trainer(base_cfg(optim={"epochs": 4}, train={"checkpoint_every": 1}), tmp_path / "p", dataset=ds)
    step, spe = tr.optimizer.step, tr.steps_per_epoch

    def poisoned_step(*a, **k):
        out = step(*a, **k)
        if tr.global_step == 2 * spe - 1:  # the update that ends epoch 2 (global_step counts the previous steps)
            with torch.no_grad():
                tr.model.classifier.weight[1, 1] = float("inf")
        return out

    tr.optimizer.step = poisoned_step
    with pytest.raises(NclabError, match=r"a model parameter or buffer became non-finite at the end of epoch 2; "
                                         r"last good checkpoint: .*\(epoch 1\)"):
        tr.fit()
    assert [json.loads(l)["epoch"] for l in (tmp_path / "p" / "metrics.jsonl").read_text().splitlines()] == [1]
    saved = torch_load(tmp_path / "p" / "checkpoints" / "last.pt")["model"]
    assert saved and all(torch.isfinite(v).all() for v in saved.values() if v.is_floating_point())

    tr = Trainer(base_cfg(optim={"epochs": 3}, train={"checkpoint_every": 1}), tmp_path / "e", dataset=ds)
    evaluate = tr.evaluate

    def overflowing_eval(split):  # finite weights whose logits overflow in evaluation
        ev = evaluate(split)
        return {**ev, "loss": float("inf")} if tr.epoch == 1 else ev

    tr.evaluate = overflowing_eval
    with pytest.raises(NclabError, match=r"test loss became inf at the end of epoch 2; last good checkpoint"):
        tr.fit()
    assert json.loads((tmp_path / "e" / "status.json").read_text())["status"] == "stopped_nan"


def test_nan_from_huge_lr_via_cli_exits_nonzero(tmp_path, capsys):
    from nclab.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(base_cfg(data={"source": "synthetic:n_train=20,n_test=5"})))
    rc = main(["train", "--config", str(cfg), "--run-dir", str(tmp_path / "r"), "--quiet",
               "--set", "optim.lr=1e10", "--set", "schedule.name=constant", "--set", "optim.momentum=0"])
    err = capsys.readouterr().err
    assert rc == 2 and "epoch 1, step" in err and "no checkpoint was written yet" in err
    assert json.loads((tmp_path / "r" / "status.json").read_text())["status"] == "stopped_nan"


def test_existing_run_needs_resume_or_force(tmp_path):
    ds = digits_dataset(5, 1)
    cfg = base_cfg(optim={"epochs": 1})
    Trainer(cfg, tmp_path / "r", dataset=ds).fit()
    # the fix names each command's own way to pick another directory (reproduce has --out, not --name)
    with pytest.raises(NclabError, match=r"--resume .*--force .*--name or --run-dir.* --out"):
        Trainer(cfg, tmp_path / "r", dataset=ds).fit()
    Trainer(cfg, tmp_path / "r", dataset=ds).fit(force=True)


class _Crash(Callback):
    def __init__(self, at):
        self.at = at

    def on_epoch_end(self, trainer, epoch, logs):
        if epoch == self.at:
            raise RuntimeError("simulated crash")


def _strip(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


@pytest.mark.parametrize("lookahead", [None, 4])
def test_resume_after_crash_equals_uninterrupted_in_process(tmp_path, lookahead):
    ds = digits_dataset(20, 5)
    cfg = base_cfg(optim={"epochs": 5, "lookahead_every": lookahead}, train={"checkpoint_every": 2},
                   data={"augment": {"crop": 0, "flip": False}})
    ref = Trainer(cfg, tmp_path / "ref", dataset=ds)
    ref.fit()
    crashed = Trainer(cfg, tmp_path / "b", callbacks=[_Crash(3)], dataset=ds)
    with pytest.raises(RuntimeError):
        crashed.fit()  # epochs 1-2 checkpointed, epoch 3 metrics written, then the crash
    assert json.loads((tmp_path / "b" / "status.json").read_text())["status"] == "failed"
    resumed = Trainer(cfg, tmp_path / "b", dataset=ds)
    resumed.fit(resume=True)
    for k, v in ref.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    a = [json.loads(l) for l in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(l) for l in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert _strip(a) == _strip(b) and len(b) == 5


def test_time_limit_pauses_and_resumes_to_the_uninterrupted_result(tmp_path):
    # a limit no epoch fits: every call trains one epoch, checkpoints, pauses; resuming call by call ends
    # exactly where an uninterrupted run ends (same parameters, same metrics rows)
    ds = digits_dataset(20, 5)
    cfg = base_cfg(optim={"epochs": 4, "lookahead_every": 3}, train={"checkpoint_every": 3})
    ref = Trainer(cfg, tmp_path / "ref", dataset=ds)
    ref.fit()
    limited = {**cfg, "train": {**cfg["train"], "time_limit_s": 1e-9}}
    calls = 0
    while True:
        calls += 1
        tr = Trainer(limited, tmp_path / "p", dataset=ds)
        try:
            tr.fit(resume=calls > 1)
            break
        except RunPaused as e:
            st = json.loads((tmp_path / "p" / "status.json").read_text())
            assert st["status"] == "paused" and f"after epoch {calls} of 4" in str(e) and "--resume" in str(e)
            assert torch.load(tmp_path / "p" / "checkpoints" / "last.pt", weights_only=True)["epoch"] == calls
    assert calls == 4  # one epoch per call, the last call completes without pausing
    assert json.loads((tmp_path / "p" / "status.json").read_text())["status"] == "complete"
    for k, v in ref.model.state_dict().items():
        assert torch.equal(v, tr.model.state_dict()[k]), k
    a = [json.loads(l) for l in (tmp_path / "ref" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(l) for l in (tmp_path / "p" / "metrics.jsonl").read_text().splitlines()]
    assert _strip(a) == _strip(b)
    # a generous limit never pauses
    roomy = {**cfg, "train": {**cfg["train"], "time_limit_s": 3600}}
    assert Trainer(roomy, tmp_path / "r", dataset=ds).fit()["status"] == "complete"


def test_time_limit_via_cli_exits_75_then_resume_completes(tmp_path, capsys):
    from nclab.cli import main

    args = ["train", "--config", "tiny", "--run-dir", str(tmp_path / "r"), "--quiet", "--epochs", "2"]
    assert main(args + ["--time-limit", "0"]) == 75
    err = capsys.readouterr().err
    assert err.startswith("paused: ") and "after epoch 1 of 2" in err and "--resume" in err
    assert "The run is paused" in (tmp_path / "r" / "report.html").read_text()  # the report says so
    assert main(args + ["--resume"]) == 0
    assert json.loads((tmp_path / "r" / "status.json").read_text())["status"] == "complete"


def test_resume_notes_changed_keys_including_the_seed_and_keeps_the_first_command(tmp_path, capsys, monkeypatch):
    import sys

    ds = digits_dataset(10, 2)
    cfg = base_cfg(optim={"epochs": 2}, train={"time_limit_s": 0})
    monkeypatch.setattr(sys, "argv", ["nclab", "train", "first"])
    with pytest.raises(RunPaused, match="each resume runs one more slice; add --set train.time_limit_s=null"):
        Trainer(cfg, tmp_path / "r", dataset=ds).fit()
    first = RunDir(tmp_path / "r").read_run_info()
    monkeypatch.setattr(sys, "argv", ["nclab", "train", "--resume"])
    capsys.readouterr()
    Trainer({**cfg, "seed": cfg.get("seed", 0) + 5}, tmp_path / "r", dataset=ds).fit(resume=True)
    assert "config keys changed from the run's config.yaml: seed" in capsys.readouterr().err
    info = RunDir(tmp_path / "r").read_run_info()
    assert info["argv"] == ["nclab", "train", "--resume"] and info["first_argv"] == ["nclab", "train", "first"]
    assert info["first_started"] == first["started"] and info["resumed_from_epoch"] == 1


def test_resume_with_another_model_or_optimiser_is_refused_in_one_line(tmp_path, capsys):
    from nclab.cli import main

    args = ["train", "--config", "tiny", "--run-dir", str(tmp_path / "r"), "--quiet", "--epochs", "2"]
    assert main(args[:-1] + ["1"]) == 0
    before = (tmp_path / "r" / "checkpoints" / "last.pt").read_bytes()
    for change, needle in (("model.width=64", "holds another model than the config builds (size mismatch"),
                           ("optim.name=adam", "holds the state of another optimiser than optim.name=adam")):
        capsys.readouterr()
        assert main(args + ["--resume", "--set", change]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: checkpoint ") and needle in err and err.count("\n") == 1, err
    assert (tmp_path / "r" / "checkpoints" / "last.pt").read_bytes() == before


def test_a_folder_named_like_a_shipped_config_does_not_shadow_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").mkdir()
    assert load_config("tiny") == load_config(configs_dir() / "tiny.yaml")


def test_cli_path_problems_are_one_line_errors(tmp_path, capsys):
    from nclab.cli import main

    (tmp_path / "afile").write_text("x")
    (tmp_path / "folder").mkdir()
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00bad")
    cases = [
        (["--config", "tiny", "--runs", str(tmp_path / "afile"), "--name", "y"], "afile/y: Not a directory"),
        (["--config", str(tmp_path / "folder")], "is a folder; pass a YAML file"),
        (["--config", str(tmp_path / "bin.yaml")], "is not UTF-8 text"),
        (["--config", "tiny", "--runs", str(tmp_path), "--name", "../escaped"], "must be one folder name"),
        (["--config", "tiny", "--runs", str(tmp_path), "--set", "name="], "must be one folder name"),
        (["--config", "tiny", "--runs", str(tmp_path), "--resume", "--force"], "pass one of them"),
    ]
    for argv, needle in cases:
        assert main(["train", *argv, "--quiet"]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and needle in err, (argv, err)
    assert not (tmp_path / "escaped").exists()


def test_lookahead_sync_follows_its_formula(tmp_path):
    # every N steps: a <- d a + (1 - d) w, then w <- a, with d = decay (t / T)^3; nothing between syncs; a sync
    # at the last step whatever N; float state only (BatchNorm's integer counter untouched)
    cfg = base_cfg(model={"name": "mlp", "width": 8, "depth": 1, "batchnorm": True},
                   optim={"epochs": 2, "lookahead_every": 5, "lookahead_decay": 0.6})
    tr = Trainer(cfg, tmp_path / "la", dataset=digits_dataset(20, 5))
    T = tr.steps_per_epoch * 2
    assert T % 5 != 0  # so the last-step sync is exercised
    floats = lambda: {k: v.clone() for k, v in tr.model.state_dict().items() if v.is_floating_point()}  # noqa: E731

    def shift(c):  # move every float state tensor by c, as training would between syncs
        with torch.no_grad():
            for v in tr.model.state_dict().values():
                if v.is_floating_point():
                    v.add_(c)

    w0 = floats()
    tr.global_step = 5
    tr.lookahead.after_step(tr.model, tr.global_step)  # first sync: the average starts at the weights
    assert all(torch.equal(v, w0[k]) for k, v in floats().items())
    shift(1.0)
    w1 = floats()
    tr.global_step = 7
    tr.lookahead.after_step(tr.model, tr.global_step)  # not a multiple of 5: no change
    assert all(torch.equal(v, w1[k]) for k, v in floats().items())
    # step 10: the average was w0 and the weights w0 + 1, so both become w0 + 1 - d
    tr.global_step = 10
    d10 = 0.6 * (10 / T) ** 3
    assert d10 > 0.01
    tr.lookahead.after_step(tr.model, tr.global_step)
    for k, v in floats().items():
        torch.testing.assert_close(v, w0[k] + 1 - d10, rtol=1e-6, atol=1e-6)
    # last step: the weights move on by +2 first, so w <- dT (w0 + 1 - d10) + (1 - dT)(w0 + 3 - d10)
    shift(2.0)
    tr.global_step = T
    tr.lookahead.after_step(tr.model, tr.global_step)
    for k, v in floats().items():
        torch.testing.assert_close(v, w0[k] + 3 - d10 - 2 * 0.6, rtol=1e-6, atol=1e-6)
    with pytest.raises(NclabError, match="lookahead_decay"):
        Trainer(base_cfg(optim={"lookahead_every": 2, "lookahead_decay": 1.0}), tmp_path / "x",
                dataset=digits_dataset(20, 5))


# flip test-time augmentation -------------------------------------------------------------------
def _tiny_images(n_train=24, n_test=12, seed=0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    sp = lambda n: Split(torch.randint(0, 256, (n, 3, 16, 16), generator=g, dtype=torch.uint8),  # noqa: E731
                         torch.arange(n) % 3)
    return Dataset("imgs", sp(n_train), sp(n_test), ["a", "b", "c"], source="random")


def test_flip_tta_logits_and_features_are_mirror_invariant_means(tmp_path):
    from nclab.finegrain.features import trainer_features

    cfg = base_cfg(model={"name": "fastnet", "widths": [8, 8, 8]}, optim={"epochs": 1, "batch_size": 8},
                   train={"tta": "flip"})
    cfg["model"].pop("width"), cfg["model"].pop("depth")
    tr = Trainer(cfg, tmp_path / "r", dataset=_tiny_images())
    tr.fit()
    m = tr.model.eval()
    x, y = next(iter(tr.eval_loader("test")))
    with torch.no_grad():
        manual = (m(x) + m(x.flip(-1))) / 2  # the classifier is linear: mean of logits = logits of mean
        got = tr.eval_logits(x)
        np.testing.assert_allclose(got.numpy(), manual.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(tr.eval_logits(x.flip(-1)).numpy(), got.numpy(), rtol=1e-5, atol=1e-6)
        assert not torch.allclose(m(x), got, atol=1e-6)  # the plain forward pass differs: TTA is on
    feats, pred = trainer_features(tr, "test")
    with torch.no_grad():
        ref = (m.features(x) + m.features(x.flip(-1))) / 2
    np.testing.assert_allclose(feats, ref.numpy(), rtol=1e-5, atol=1e-6)
    assert np.array_equal(pred, got.argmax(1).numpy())
    assert tr.evaluate("test")["acc"] == pytest.approx(float((got.argmax(1) == y).float().mean()))
    with pytest.raises(NclabError, match="tta"):
        load_config("tiny", ["train.tta=rotate"])


def test_stem_bias_trains_then_freezes(tmp_path):
    # optim.stem_bias_epochs=1: the whitening stem's bias moves in epoch 1 and not after (no update, no weight
    # decay); the rest of the network keeps training
    cfg = base_cfg(model={"name": "fastnet", "widths": [8, 8, 8]},
                   optim={"epochs": 3, "batch_size": 8, "momentum": 0.9, "weight_decay": 0.01, "stem_bias_epochs": 1},
                   train={"checkpoint_every": 1})
    cfg["model"].pop("width"), cfg["model"].pop("depth")
    tr = Trainer(cfg, tmp_path / "r", dataset=_tiny_images())
    bias0 = tr.model.backbone.stem.bias.detach().clone()
    snaps = []

    class Snap(Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            snaps.append((trainer.model.backbone.stem.bias.detach().clone(),
                          trainer.model.classifier.weight.detach().clone()))

    tr.callbacks.append(Snap())
    tr.fit()
    (b1, w1), (b2, w2), (b3, w3) = snaps
    assert not torch.equal(b1, bias0)  # trained in epoch 1
    assert torch.equal(b2, b1) and torch.equal(b3, b1)  # frozen afterwards
    assert not torch.equal(w2, w1) and not torch.equal(w3, w2)
    with pytest.raises(NclabError, match="stem_bias_epochs"):
        Trainer(base_cfg(optim={"stem_bias_epochs": 2}), tmp_path / "m", dataset=_tiny_images())


def test_callbacks_from_the_config_errors_and_user_dotted_paths(tmp_path, monkeypatch):
    """Config-built callbacks: a typo is named with the closest registered name, a bad path or bad arguments
    say so, ``false`` turns one off, and ``module:Class`` loads a user callback that logs into metrics.jsonl."""
    from nclab.train.callbacks import build_callbacks, log_epochs

    with pytest.raises(NclabError, match="unknown callback 'nc_metric' .*did you mean nc_metrics"):
        build_callbacks({"nc_metric": {}})
    with pytest.raises(NclabError, match="cannot be loaded"):
        build_callbacks({"no_such_module_xyz:Thing": {}})
    with pytest.raises(NclabError, match="must be a mapping"):
        build_callbacks({"nc_metrics": 3})
    with pytest.raises(NclabError, match="callbacks.nc_metrics: bad arguments"):
        build_callbacks({"nc_metrics": {"bogus_option": 1}})
    assert build_callbacks({"nc_metrics": False, "recovery": False}) == []

    (tmp_path / "my_callbacks.py").write_text(
        "from nclab.train import Callback\n"
        "class LogNorm(Callback):\n"
        "    def __init__(self, key='w_norm'):\n"
        "        self.key = key\n"
        "    def on_epoch_end(self, trainer, epoch, logs):\n"
        "        logs[self.key] = float(sum(p.detach().norm() ** 2 for p in trainer.model.parameters()) ** 0.5)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = load_config("tiny", ["optim.epochs=2", "callbacks={my_callbacks:LogNorm: {key: param_norm}}"])
    tr = Trainer(cfg, tmp_path / "run")
    tr.fit()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    final = float(sum(p.detach().norm() ** 2 for p in tr.model.parameters()) ** 0.5)
    assert [r["epoch"] for r in rows] == [1, 2] and rows[-1]["param_norm"] == pytest.approx(final, rel=1e-12)

    assert log_epochs(0) == [] and log_epochs(1) == [1]
    e = log_epochs(350, 8)
    assert e[0] == 1 and e[-1] == 350 and e == sorted(set(e)) and len(e) <= 9
    ratios = np.diff(np.log(e))
    assert ratios.max() < 2 * ratios[1:].min() + 1e-9  # log-spaced: no gap much wider than the others


def test_trainer_checks_a_hand_built_dataset(tmp_path):
    # out-of-range labels ended in torch's "Target 3 is out of bounds"; an empty train split "completed"
    import torch

    from nclab.data.types import Dataset, Split
    from nclab.train import Trainer, load_config

    cfg = load_config("tiny", ["optim.epochs=1", "data.source=synthetic"])
    x, y = torch.randn(12, 4), torch.arange(12) % 3
    cases = [(Split(x, y + 1), "train label 3 is outside 0..2"), (Split(x, y - 1), "train label -1 is outside"),
             (Split(x, y.view(-1, 1)), "1-D integer tensor"), (Split(x, y.float()), "1-D integer tensor"),
             (Split(x[:, 0], y), r"x must be \(N, ...\)"), (Split(x[:5], y), "one row per label"),
             (Split(x.numpy(), y), "must be torch tensors"), (Split(x[:0], y[:0]), "train split of m is empty")]
    for split, msg in cases:
        with pytest.raises(NclabError, match=msg):
            Trainer(cfg, tmp_path / "r", dataset=Dataset("m", split, Split(x, y), list("abc"))).fit()
    assert not (tmp_path / "r").exists()
    Trainer(cfg, tmp_path / "ok", dataset=Dataset("m", Split(x, y), Split(x, y), list("abc"))).fit()  # valid: trains


def test_numbered_checkpoint_is_written_before_last_pt(tmp_path, monkeypatch):
    # last.pt first: a kill between the two writes lost that epoch's numbered checkpoint for good
    import nclab.train.trainer as trainer_mod
    from nclab.train import Trainer, load_config

    order = []
    real = trainer_mod.atomic_torch_save
    monkeypatch.setattr(trainer_mod, "atomic_torch_save", lambda p, o: order.append(p.name) or real(p, o))
    cfg = load_config("tiny", ["optim.epochs=2", "data.source=synthetic", "train.keep_checkpoints=true"])
    Trainer(cfg, tmp_path / "r").fit()
    assert order == ["epoch_0001.pt", "last.pt", "epoch_0002.pt", "last.pt"]


def test_resume_removes_temp_files_of_a_killed_write(tmp_path):
    from nclab.train import Trainer, load_config
    from nclab.utils.io import remove_stale_temps

    cfg = load_config("tiny", ["optim.epochs=1", "data.source=synthetic"])
    Trainer(cfg, tmp_path / "r").fit()
    stale = [tmp_path / "r" / "checkpoints" / ".last.pt.0ldm5g7t.tmp", tmp_path / "r" / ".results.json.zh4bapfw.tmp"]
    keep = [tmp_path / "r" / "notes.tmp", tmp_path / "r" / ".hidden.tmp"]  # not an atomic write's name
    for p in stale + keep:
        p.write_bytes(b"x")
    Trainer(load_config("tiny", ["optim.epochs=2", "data.source=synthetic"]), tmp_path / "r").fit(resume=True)
    assert not any(p.exists() for p in stale) and all(p.exists() for p in keep)
    assert remove_stale_temps(tmp_path / "r") == 0


def test_force_does_not_clean_a_folder_that_holds_no_run(tmp_path):
    from nclab.train import Trainer, load_config

    other = tmp_path / "project" / ".data.12345678.tmp"  # a user's file with a temp-like name
    other.parent.mkdir(parents=True)
    other.write_bytes(b"x")
    Trainer(load_config("tiny", ["optim.epochs=1", "data.source=synthetic"]), tmp_path).fit(force=True)
    assert other.exists()


def test_build_callbacks_names_a_spec_that_is_not_a_mapping():
    from nclab.train.callbacks import build_callbacks

    # a list/str/tuple spec was "AttributeError: 'list' object has no attribute 'items'"
    for spec in (["nc_metrics"], [{"nc_metrics": {}}], "nc_metrics", ("nc_metrics",), []):
        with pytest.raises(NclabError, match=r"callbacks must be a mapping \{name: kwargs\}"):
            build_callbacks(spec)
    with pytest.raises(NclabError, match="callback names must be strings"):  # TypeError before
        build_callbacks({3: {}})
    assert build_callbacks(None) == [] and build_callbacks({}) == []


def test_train_resume_of_a_mistyped_run_names_the_folder(tmp_path, capsys):
    assert main(["train", "--resume", "--runs", str(tmp_path), "--name", "mnie"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'mnie'} holds no run" in err and err.count("\n") == 1
    assert not (tmp_path / "mnie").exists()


def test_train_resume_of_a_finished_run_says_there_is_nothing_to_train(tmp_path, capsys):
    assert main(["train", "--config", "tiny", "--runs", str(tmp_path), "--name", "a", "--quiet"]) == 0
    metrics = (tmp_path / "a" / "metrics.jsonl").read_text()
    from nclab.utils import progress

    progress.set_quiet(False)
    capsys.readouterr()
    assert main(["train", "--resume", "--runs", str(tmp_path), "--name", "a"]) == 0
    assert "already trained all 4 epochs; nothing to train" in capsys.readouterr().err
    assert (tmp_path / "a" / "metrics.jsonl").read_text() == metrics


def test_log_epochs_are_geometrically_spaced():
    from nclab.train.callbacks import log_epochs

    # round(1000 ** (i / 9)) for i = 0..9, by hand: 1, 1.99, 4.64, 10, 21.5, 46.4, 100, 215, 464, 1000
    assert log_epochs(1000, 10) == [1, 2, 5, 10, 22, 46, 100, 215, 464, 1000]
    # round(100 ** (i / 7)): 1, 1.93, 3.73, 7.20, 13.9, 26.8, 51.8, 100
    assert log_epochs(100, 8) == [1, 2, 4, 7, 14, 27, 52, 100]


def test_schedule_values_non_divisible_cases():
    ms = {"name": "multistep", "milestones": [1 / 3, 2 / 3], "gamma": 0.1}
    # 10 epochs x 10 steps: milestones at epochs floor(10/3)=3 and floor(20/3)=6 (epoch-based, not step 33/66)
    assert lr_at(ms, 1.0, 29, 10, 10) == 1.0 and lr_at(ms, 1.0, 30, 10, 10) == pytest.approx(0.1)
    assert lr_at(ms, 1.0, 60, 10, 10) == pytest.approx(0.01)
    # warm-up is a fraction of steps: 0.15 * 100 = 15 steps (not rounded to whole epochs)
    c = {"name": "constant", "warmup": 0.15, "start_factor": 0.0}
    assert lr_at(c, 1.0, 14, 10, 10) == pytest.approx(14 / 15) and lr_at(c, 1.0, 15, 10, 10) == 1.0
    # cosine after a warm-up, with a final factor: u = (t - W) / (T - W)
    cos = {"name": "cosine", "warmup": 0.2, "final_factor": 0.1}
    assert lr_at(cos, 1.0, 20, 10, 10) == pytest.approx(1.0)
    assert lr_at(cos, 1.0, 60, 10, 10) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_at(cos, 1.0, 100, 10, 10) == pytest.approx(0.1)


def test_training_matches_a_hand_written_loop(tmp_path):
    ds = digits_dataset(10, 2)  # 100 train samples, full batch: 1 step per epoch
    cfg = base_cfg(model={"name": "mlp", "width": 8, "depth": 1, "batchnorm": True, "head_depth": 2},
                   data={"normalize": False},
                   optim={"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01, "bias_lr_scale": 4.0,
                          "batch_size": 100, "epochs": 6},
                   schedule={"name": "onecycle", "warmup": 0.25, "start_factor": 0.2, "final_factor": 0.1},
                   loss={"label_smoothing": 0.1, "lambda_w": 0.02, "lambda_h": 0.03})
    tr = Trainer(cfg, tmp_path / "r", dataset=ds)
    ref = copy.deepcopy(tr.model)
    tr.fit()
    # T = 6, W = round(1.5) = 2: warm-up 0.2 -> 1 (steps 0, 1), then linear 1 -> 0.1 over steps 2..5
    lrs = [0.05 * f for f in (0.2, 0.6, 1.0, 0.775, 0.55, 0.325)]
    bn = {id(p) for m in ref.modules() if isinstance(m, torch.nn.BatchNorm1d) for p in m.parameters()}
    bufs, losses = {}, []
    x, y = ds.train.x, ds.train.y
    for lr in lrs:
        ref.train()
        h0 = ref.backbone(x)
        h = h0
        for layer in ref.head[:-1]:
            h = layer(h)
        z = ref.head[-1](h)
        loss = (F.cross_entropy(z, y, label_smoothing=0.1)
                + 0.01 * sum((l.weight ** 2).sum() for l in ref.head)
                + 0.015 * (h0 ** 2).sum(1).mean())
        losses.append(loss.item())
        ref.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in ref.parameters():
                s = 4.0 if id(p) in bn else 1.0
                d = p.grad + (0.01 / s) * p
                b = bufs[id(p)] = d.clone() if id(p) not in bufs else 0.9 * bufs[id(p)] + d
                p -= lr * s * (d + 0.9 * b)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(tr.model.state_dict()[k], v, rtol=1e-4, atol=1e-6, msg=k)
    rows = [json.loads(l) for l in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows] == pytest.approx(lrs)
    assert [r["train_loss"] for r in rows] == pytest.approx(losses, rel=1e-5)


def test_eval_is_unaugmented_and_runs_at_the_last_epoch(tmp_path):
    cfg = base_cfg(model={"name": "fastnet", "widths": [8, 8, 8]}, data={"augment": {"crop": 2, "flip": True}},
                   optim={"epochs": 3, "batch_size": 8}, train={"eval_every": 2})
    cfg["model"].pop("width"), cfg["model"].pop("depth")
    ds = _tiny_images()
    tr = Trainer(cfg, tmp_path / "r", dataset=ds)
    tr.fit()
    rows = [json.loads(l) for l in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert ["test_acc" in r for r in rows] == [False, True, True]
    mean, std = ds.channel_stats()
    x = (ds.test.x.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    m = tr.model.eval()
    with torch.no_grad():
        z = m(x.float())
    assert tr.evaluate("test")["loss"] == pytest.approx(F.cross_entropy(z, ds.test.y).item(), rel=1e-5)


def test_limit_per_class_keeps_first_n(tmp_path):
    ds = digits_dataset(10, 5)
    tr = Trainer(base_cfg(data={"limit_per_class": 3}), tmp_path / "r", dataset=ds)
    for split, full in (("train", ds.train), ("test", ds.test)):
        got = getattr(tr.dataset, split)
        want = np.sort(np.concatenate([np.flatnonzero(full.y.numpy() == c)[:3] for c in range(10)]))
        assert torch.equal(got.x, full.x[want]) and torch.equal(got.y, full.y[want])


def test_rng_state_round_trip():
    from nclab.train.checkpoint import rng_state, set_rng_state
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    st = rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random())
    torch.rand(5), np.random.rand(5), random.random()  # move every generator on
    set_rng_state(st)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_coarse_targets_follow_the_hierarchy_not_mod(tmp_path):
    ds = digits_dataset(5, 2)
    tr = Trainer(base_cfg(data={"hierarchy": "adjacent:5", "labels": "coarse"}), tmp_path / "r", dataset=ds)
    assert torch.equal(tr.train_targets("train"), ds.train.y // 2)


def test_split_pseudo_labels_follow_the_spec_seed_else_the_run_seed(tmp_path):
    # the trainer used to shuffle by the run seed even for split:M:SEED, so split:2:7 and split:2:9 trained
    # on the same pseudo labels while `nclab data info` counted others
    from nclab.data import build_hierarchy, split_labels
    ds = digits_dataset(10, 4)
    y = ds.train.y.numpy()

    def targets(spec, seed):
        tr = Trainer(base_cfg(seed=seed, data={"hierarchy": spec, "labels": "fine"}), tmp_path / f"{spec}-{seed}",
                     dataset=ds)
        return tr.train_targets("train").numpy()

    names = [str(c) for c in range(10)]
    for spec, seed, want_seed in (("split:2:7", 0, 7), ("split:2:9", 0, 9), ("split:2", 3, 3)):
        want = split_labels(y, build_hierarchy(f"split:2:{want_seed}", names))
        assert np.array_equal(targets(spec, seed), want), spec
    assert not np.array_equal(targets("split:2:7", 0), targets("split:2:9", 0))


def test_adam_matches_the_update_written_out(tmp_path):
    # betas and weight decay reach Adam: three full-batch steps against Kingma & Ba's update by hand
    ds = digits_dataset(10, 2)
    cfg = base_cfg(model={"name": "mlp", "width": 8, "depth": 1}, data={"normalize": False},
                   optim={"name": "adam", "lr": 0.01, "betas": [0.5, 0.6], "weight_decay": 0.02, "batch_size": 100,
                          "epochs": 3},
                   schedule={"name": "constant"})
    tr = Trainer(cfg, tmp_path / "r", dataset=ds)
    ref = copy.deepcopy(tr.model)
    tr.fit()
    m1 = {id(p): torch.zeros_like(p) for p in ref.parameters()}
    m2 = {id(p): torch.zeros_like(p) for p in ref.parameters()}
    for t in range(1, 4):
        ref.train()
        loss = F.cross_entropy(ref(ds.train.x), ds.train.y)
        ref.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in ref.parameters():
                g = p.grad + 0.02 * p  # Adam's L2 weight decay enters the gradient
                m1[id(p)] = 0.5 * m1[id(p)] + 0.5 * g
                m2[id(p)] = 0.6 * m2[id(p)] + 0.4 * g * g
                mh, vh = m1[id(p)] / (1 - 0.5 ** t), m2[id(p)] / (1 - 0.6 ** t)
                p -= 0.01 * mh / (vh.sqrt() + 1e-8)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(tr.model.state_dict()[k], v, rtol=1e-4, atol=1e-6, msg=k)
