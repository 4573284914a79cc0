"""nclab sweep (nclab.commands.sweep): grid parsing, which cells are complete, time limits inherited on a rerun,
and bad data sources refused before anything is written."""

import json

import pytest

from nclab.cli import main
from nclab.commands.sweep import parse_grid
from nclab.rundir import RunDir
from nclab.utils.errors import NclabError


def test_sweep_grid_names_each_axis_and_value_once():
    assert parse_grid(["lr=0.1,0.01", "wd=5e-4"]) == {"lr": [0.1, 0.01], "wd": [5e-4]}
    with pytest.raises(NclabError, match=r"names axis optim\.lr twice \('optim\.lr' and 'lr'\)"):
        parse_grid(["optim.lr=0.1", "lr=0.2"])  # the table showed both; the cell trained with one of them
    with pytest.raises(NclabError, match="repeats a value"):
        parse_grid(["lr=0.1,0.1"])

def test_a_sweep_cell_with_a_partial_results_json_is_not_complete(tmp_path):
    # killed after the first of run_experiment's results writes, the cell was skipped forever (probe and
    # pursuit results lost)
    from nclab.commands.sweep import _cell_done

    rd = RunDir(tmp_path / "cell")
    rd.path.mkdir()
    rd.write_status("complete")
    rd.write_results({"recovery": {"test_acc": 0.5}})
    assert not _cell_done(rd.path)
    rd.write_results({"recovery": {"test_acc": 0.5}, "wall_time_s": 3.0})
    assert _cell_done(rd.path)

def test_sweep_rerun_keeps_a_paused_cells_time_limit(tmp_path):
    from argparse import Namespace

    from nclab.commands.sweep import _inherited_time_limit

    cells = [tmp_path / "lr=0.1", tmp_path / "lr=0.01"]
    assert _inherited_time_limit(Namespace(time_limit=None, overrides=[]), cells) == []
    rd = RunDir(cells[1])
    rd.path.mkdir()
    rd.write_config({"train": {"time_limit_s": 60}})
    assert _inherited_time_limit(Namespace(time_limit=None, overrides=[]), cells) == ["train.time_limit_s=60"]
    assert _inherited_time_limit(Namespace(time_limit=5.0, overrides=[]), cells) == []
    assert _inherited_time_limit(Namespace(time_limit=None, overrides=["train.time_limit_s=null"]), cells) == []

def test_sweep_force_does_not_inherit_a_time_limit(tmp_path):
    from argparse import Namespace

    from nclab.commands.sweep import _inherited_time_limit

    rd = RunDir(tmp_path / "lr=0.1")
    rd.path.mkdir()
    rd.write_config({"train": {"time_limit_s": 60}})
    assert _inherited_time_limit(Namespace(time_limit=None, overrides=[], force=True), [rd.path]) == []

def test_sweep_with_an_unknown_data_source_writes_nothing(tmp_path, capsys):
    # the source name is checked with the config: before, the sweep folder was created and left marked "failed"
    out = tmp_path / "s"
    code = main(["sweep", "cifar10-coarse5", "--recipe", "tiny", "--data", "nosuch:x", "--grid", "seed=0,1",
                 "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown data source 'nosuch'" in err and "data.source" in err
    assert not out.exists()

def test_a_sweep_cell_needs_a_complete_run_and_a_finished_results_json(tmp_path):
    from nclab.commands.sweep import _cell_done
    from nclab.rundir import RunDir

    rd = RunDir(tmp_path / "cell")
    rd.path.mkdir()
    assert not _cell_done(rd.path)
    rd.write_results({"recovery": {"test_acc": 0.5}, "wall_time_s": 3.0})
    for status in ("running", "paused", "failed", "interrupted"):
        rd.write_status(status)
        assert not _cell_done(rd.path), status
    rd.write_status("complete")
    assert _cell_done(rd.path)

def test_a_finished_sweep_rerun_with_a_time_limit_skips_its_cells(tmp_path, capsys, monkeypatch):
    # a time limit changes how a cell runs, not what it trains: a complete cell is skipped, not refused
    import nclab.experiments.finegrain_runs as ex
    from nclab.cli import main
    from nclab.commands.sweep import cell_name
    from nclab.rundir import RunDir

    out = tmp_path / "sw"
    d = out / cell_name({"lr": 0.05})
    d.mkdir(parents=True)
    rd = RunDir(d)
    rd.write_config(ex.build_config("cifar10-coarse5", recipe="tiny", data="synthetic", overrides=["optim.lr=0.05"],
                                    epochs=1, run_name=d.name))
    rd.write_status("complete")
    rd.write_results({"recovery": {"test_acc": 0.5}, "coarse_test_acc": 0.9, "wall_time_s": 1.0})
    monkeypatch.setattr(ex, "run_experiment", lambda *a, **k: pytest.fail("a complete cell was run again"))
    argv = ["sweep", "cifar10-coarse5", "--recipe", "tiny", "--data", "synthetic", "--epochs", "1", "--grid",
            "lr=0.05", "--out", str(out), "--json", "--time-limit", "30"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["grid"]["cells"][0]["recovery_acc"] == 0.5
