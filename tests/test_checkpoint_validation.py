"""Damaged checkpoints and array archives: one ``error:`` line naming the file, exit 2, never a traceback, for
every command that loads them (``train --resume``, ``metrics --run``, ``recover --run``, ``metrics --features``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny coarse-label run, stopped after 2 of its 4 epochs (so ``--resume`` has work to do)."""
    from nclab.cli import main
    from nclab.utils import progress

    root = tmp_path_factory.mktemp("ckpt")
    rc = main(["train", "--config", "tiny", "--run-dir", str(root / "run"), "--set", "optim.epochs=2",
               "--set", "data.labels=coarse", "--set", "data.hierarchy=mod:2", "--quiet"])
    progress.set_quiet(False)  # --quiet is process-wide, and a module fixture runs outside the per-test reset
    assert rc == 0
    return root / "run"


def damaged_copies(trained, tmp_path):
    """(case name, run folder) for each kind of damage, made from a real checkpoint."""
    import shutil

    good = torch.load(trained / "checkpoints" / "last.pt", weights_only=True)
    cases = {
        "bare tensor": torch.zeros(3),
        "no model entry": {k: v for k, v in good.items() if k != "model"},
        "model not a mapping": {**good, "model": [1, 2, 3]},
        "epoch of the wrong type": {**good, "epoch": "2"},
        "a model entry that is no tensor": {**good, "model": {**good["model"], "extra": 1.5}},
        "rng of the wrong shape": {**good, "rng": {"torch": 3}},
    }
    out = []
    for name, state in cases.items():
        d = tmp_path / name.replace(" ", "_")
        shutil.copytree(trained, d)
        torch.save(state, d / "checkpoints" / "last.pt")
        out.append((name, d))
    return out


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "Traceback" not in err[0]
    return err[0]


@pytest.mark.parametrize("command", ["train --resume", "metrics --run", "recover --run"])
def test_each_damaged_checkpoint_gives_one_error_line(trained, tmp_path, capsys, command):
    from nclab.cli import main

    # weights-only readers accept what resuming would refuse (the optimiser and RNG state are not read)
    skip_for_readers = {"epoch of the wrong type", "rng of the wrong shape"}
    for name, run in damaged_copies(trained, tmp_path):
        if command != "train --resume" and name in skip_for_readers:
            continue
        argv = {"train --resume": ["train", "--config", str(run / "config.yaml"), "--run-dir", str(run), "--resume",
                                   "--set", "optim.epochs=4"],
                "metrics --run": ["metrics", "--run", str(run), "--json"],
                "recover --run": ["recover", "--run", str(run), "--json"]}[command]
        assert main([*argv, "--quiet"]) == 2, name
        line = one_error_line(capsys)
        assert str(run / "checkpoints" / "last.pt") in line, (name, line)
        assert "delete" in line or "restore" in line, (name, line)  # the fix


def test_weights_only_readers_still_read_a_checkpoint_with_damaged_training_state(trained, tmp_path, capsys):
    """metrics --run needs the weights only: a wrong-typed epoch or RNG entry does not stop it, and it gives the
    same metrics as the intact checkpoint."""
    from nclab.cli import main

    assert main(["metrics", "--run", str(trained), "--json"]) == 0
    ref = json.loads(capsys.readouterr().out)
    run = dict(damaged_copies(trained, tmp_path))["rng of the wrong shape"]
    assert main(["metrics", "--run", str(run), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert {k: v for k, v in got.items() if k not in ("run", "checkpoint") and not k.endswith("time_s")} == \
        {k: v for k, v in ref.items() if k not in ("run", "checkpoint") and not k.endswith("time_s")}


def test_an_intact_checkpoint_resumes(trained, tmp_path, capsys):
    import shutil

    from nclab.cli import main

    run = tmp_path / "intact"
    shutil.copytree(trained, run)
    assert main(["train", "--config", str(run / "config.yaml"), "--run-dir", str(run), "--resume", "--set",
                 "optim.epochs=4", "--quiet"]) == 0
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]


# ---------------------------------------------------------------------------------------------- .npz inputs
@pytest.fixture()
def feature_files(tmp_path):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    h = rng.normal(size=(60, 5)) + 3 * np.eye(3, 5)[y]
    np.save(tmp_path / "h.npy", h)
    np.save(tmp_path / "y.npy", y)
    np.savez(tmp_path / "one.npz", features=h)
    np.savez(tmp_path / "two.npz", features=h, labels=y)
    return tmp_path


def test_metrics_reads_one_array_of_an_npz(feature_files, capsys):
    from nclab.cli import main

    d = feature_files
    assert main(["metrics", "--features", str(d / "h.npy"), "--labels", str(d / "y.npy"), "--json"]) == 0
    ref = json.loads(capsys.readouterr().out)
    for spec in (d / "one.npz", f"{d / 'two.npz'}:features"):
        assert main(["metrics", "--features", str(spec), "--labels", f"{d / 'two.npz'}:labels", "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == ref


@pytest.mark.parametrize("spec, needle", [("two.npz", "holds 2 arrays (features, labels); name one as"),
                                          ("two.npz:nope", "has no array 'nope'"),
                                          ("h.npy:features", "does not exist")])
def test_an_ambiguous_or_wrong_npz_is_refused_in_one_line(feature_files, capsys, spec, needle):
    from nclab.cli import main

    d = feature_files
    assert main(["metrics", "--features", str(d / spec), "--labels", str(d / "y.npy"), "--json"]) == 2
    assert needle in one_error_line(capsys)


def test_a_pickled_npz_is_refused(feature_files, capsys):
    from nclab.cli import main

    d = feature_files
    np.savez(d / "obj.npz", features=np.array([{"a": 1}], dtype=object))
    assert main(["metrics", "--features", str(d / "obj.npz"), "--labels", str(d / "y.npy"), "--json"]) == 2
    assert "unpickling" in one_error_line(capsys)
