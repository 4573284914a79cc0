"""Bad input to the command line, across commands (reproduce, recover, metrics, report): one ``error:`` line,
exit 2, nothing written, never a traceback."""

import json

import numpy as np
import yaml

from nclab.cli import main
from helpers_cli import one_line_error


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

def test_end_of_options_marker_is_left_alone(tmp_path, capsys):
    # `nclab report -- -1` (a folder named -1) became "--=-1": an ambiguous-option error
    one_line_error(capsys, ["report", "--", "-1"], "-1")
