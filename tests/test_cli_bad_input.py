"""Bad input found by an audit of the command line (session 11): each case ended in a traceback, a silently
wrong number or a half-written folder before; now one ``error:`` line, exit 2, nothing written."""

import json

import numpy as np
import pytest
import yaml

from nclab.cli import main
from nclab.commands.sweep import parse_grid
from nclab.rundir import RunDir
from nclab.utils.errors import NclabError
from nclab.utils.io import read_jsonl


def one_line_error(capsys, argv, needle):
    assert main(argv) == 2
    cap = capsys.readouterr()
    assert cap.err.startswith("error: ") and cap.err.count("\n") == 1 and needle in cap.err, cap.err
    return cap.err


def test_a_damaged_middle_line_of_metrics_jsonl_is_an_error_not_a_shorter_history(tmp_path):
    # reading stopped at the first bad line: a report then showed epoch 1's accuracy as the final one
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"epoch": 1}\n{"epoch": 2, "tes\n{"epoch": 3}\n')
    with pytest.raises(NclabError, match=r"line 2 is not valid JSON .* later lines follow"):
        read_jsonl(p)
    p.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3, "tes')  # a torn last line is a crash mid-write
    assert read_jsonl(p) == [{"epoch": 1}, {"epoch": 2}]


@pytest.mark.parametrize("content", ["[1]", "null", "3"])
def test_run_json_files_must_hold_objects(tmp_path, content):
    rd = RunDir(tmp_path)
    rd.path.mkdir(exist_ok=True)
    rd.status_path.write_text(content)
    with pytest.raises(NclabError, match="not an object"):
        rd.read_status()


def test_sweep_grid_names_each_axis_and_value_once():
    assert parse_grid(["lr=0.1,0.01", "wd=5e-4"]) == {"lr": [0.1, 0.01], "wd": [5e-4]}
    with pytest.raises(NclabError, match=r"names axis optim\.lr twice \('optim\.lr' and 'lr'\)"):
        parse_grid(["optim.lr=0.1", "lr=0.2"])  # the table showed both; the cell trained with one of them
    with pytest.raises(NclabError, match="repeats a value"):
        parse_grid(["lr=0.1,0.1"])


def test_reproduce_refuses_resume_with_force(tmp_path, capsys):
    one_line_error(capsys, ["reproduce", "cifar10-coarse5", "--recipe", "tiny", "--data", "digits", "--resume",
                            "--force", "--out", str(tmp_path / "rp")], "pass one of them")
    assert not (tmp_path / "rp").exists()


def test_recover_names_an_empty_npy_file(tmp_path, capsys):
    (tmp_path / "empty0.npy").write_bytes(b"")
    x = str(tmp_path / "empty0.npy")
    one_line_error(capsys, ["recover", "--features-train", x, "--coarse-train", x, "--fine-train", x,
                            "--features-test", x, "--coarse-pred", x, "--fine-test", x], "is not a readable .npy")


def test_metrics_names_a_hierarchy_file_of_the_wrong_shape(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "H.npy", rng.normal(size=(40, 5)).astype(np.float32))
    np.save(tmp_path / "y.npy", np.arange(40) % 4)
    (tmp_path / "h.json").write_text("[0, 0, 1, 1]")
    arrays = ["metrics", "--features", str(tmp_path / "H.npy"), "--labels", str(tmp_path / "y.npy")]
    one_line_error(capsys, arrays + ["--hierarchy", str(tmp_path / "h.json")], "is not a hierarchy JSON")
    one_line_error(capsys, arrays + ["--hierarchy", str(tmp_path / "gone.json")], "not found")
    # a spec works as in nclab recover, and gives what the same hierarchy as a JSON file gives
    from nclab.data import build_hierarchy

    (tmp_path / "m2.json").write_text(json.dumps(build_hierarchy("mod:2", [str(i) for i in range(4)]).to_dict()))
    outs = []
    for spec in ("mod:2", str(tmp_path / "m2.json")):
        assert main(arrays + ["--hierarchy", spec, "--json"]) == 0
        outs.append(json.loads(capsys.readouterr().out))
    assert outs[0] == outs[1] and "coarse" in json.dumps(outs[0])


def test_metrics_on_a_run_whose_config_no_longer_builds_its_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--config", "tiny", "--run-dir", str(run), "--set", "optim.epochs=1", "--quiet"]) == 0
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["model"]["width"] = 2 * cfg["model"]["width"]  # edited after training
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    one_line_error(capsys, ["metrics", "--run", str(run), "--json"], "holds another model than")


def test_dln_cifar_experiment_with_a_bad_data_source_writes_nothing(tmp_path, capsys):
    out = tmp_path / "dln"
    assert main(["reproduce", "dln-cifar10-imbalanced", "--quick", "--data", f"imagefolder:{tmp_path}/none.tar.gz",
                 "--out", str(out), "--quiet"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert not out.exists()  # it left config.yaml and status "running" behind


def test_recover_names_train_label_arrays_of_different_lengths(tmp_path, capsys):
    # without --hierarchy the hierarchy is inferred from (fine, coarse) pairs: the error blamed the hierarchy
    rng = np.random.default_rng(0)
    fine = np.arange(200) % 4
    files = {"features-train": rng.normal(size=(200, 6)).astype(np.float32), "coarse-train": fine // 2,
             "fine-train": fine[:160], "features-test": rng.normal(size=(40, 6)).astype(np.float32),
             "coarse-pred": (np.arange(40) % 4) // 2, "fine-test": np.arange(40) % 4}
    argv = ["recover"]
    for k, v in files.items():
        np.save(tmp_path / f"{k}.npy", v)
        argv += [f"--{k}", str(tmp_path / f"{k}.npy")]
    one_line_error(capsys, argv, "fine labels have 160 rows but coarse labels have 200")
