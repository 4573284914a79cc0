"""Input that was silently accepted before: duplicate keys in YAML configs and source specs, an empty run name,
and synthetic sizes that cannot fit in memory. Each is one ``error:`` line, exit 2, nothing written."""

import time

import pytest

from nclab.cli import main
from nclab.data import load_dataset
from nclab.data.synthetic import available_bytes, needed_bytes, parse_synthetic_spec
from nclab.utils.errors import NclabError


def one_line_error(capsys, argv, needle):
    assert main(argv) == 2
    cap = capsys.readouterr()
    assert cap.err.startswith("error: ") and cap.err.count("\n") == 1 and needle in cap.err, cap.err
    return cap.err


def test_duplicate_key_in_a_config_yaml_is_refused(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data:\n  source: synthetic:n_train=10\noptim:\n  lr: 0.1\n  epochs: 1\n  lr: 0.2\n")
    err = one_line_error(capsys, ["train", "--config", str(cfg), "--run-dir", str(tmp_path / "r")],
                         "key 'lr' appears twice (lines 4 and 6)")
    assert str(cfg) in err
    assert not (tmp_path / "r").exists()


def test_duplicate_section_in_a_config_yaml_is_refused(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("optim:\n  lr: 0.1\nseed: 1\noptim:\n  epochs: 2\n")
    one_line_error(capsys, ["train", "--config", str(cfg), "--run-dir", str(tmp_path / "r")],
                   "key 'optim' appears twice (lines 1 and 4)")


def test_the_same_key_in_different_sections_is_fine(tmp_path):
    from nclab.train import load_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text("optim:\n  name: sgd\nloss:\n  name: mse\n")
    c = load_config(str(cfg))
    assert c.optim.name == "sgd" and c.loss.name == "mse"


def test_duplicate_key_in_a_hierarchy_file_is_refused(tmp_path):
    from nclab.data import build_hierarchy

    f = tmp_path / "h.yaml"
    f.write_text("animals: [a, b]\nthings: [c, d]\nanimals: [c]\n")
    with pytest.raises(NclabError, match="key 'animals' appears twice"):
        build_hierarchy(f"file:{f}", ["a", "b", "c", "d"])


def test_duplicate_key_in_a_source_spec_is_refused(capsys):
    one_line_error(capsys, ["data", "info", "--source", "synthetic:coarse=2,coarse=3"],
                   "synthetic key 'coarse' is given twice (coarse=2 and coarse=3); keep one")
    with pytest.raises(NclabError, match="'dim' is given twice"):
        parse_synthetic_spec("dim=4, n_train=5,dim = 4")
    assert parse_synthetic_spec("coarse=2,dim=3")["coarse"] == 2


@pytest.mark.parametrize("name", ["", "  "])
def test_empty_run_name_is_refused(tmp_path, capsys, name, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one_line_error(capsys, ["train", "--config", "tiny", "--name", name], "must be one folder name")
    assert list(tmp_path.iterdir()) == []  # no runs/tiny trained in its place


def test_oversized_synthetic_spec_is_refused_before_allocating(capsys):
    p = parse_synthetic_spec("n_train=100000000,dim=1000")
    need = needed_bytes(p)
    # 12 fine classes x 1e8 x 1000 float32 = 4.8 TB of train data alone: an independent lower bound
    assert need >= 12 * 10**8 * 1000 * 4
    t0 = time.time()
    err = one_line_error(capsys, ["data", "info", "--source", "synthetic:n_train=100000000,dim=1000"],
                         "needs about")
    assert time.time() - t0 < 10  # refused, not allocated
    assert f"{need / 2**30:.3g} GiB" in err and "lower n_train, n_test or dim" in err


def test_memory_estimate_matches_the_arrays_drawn():
    ds = load_dataset("synthetic:coarse=2,fine_per_coarse=3,dim=7,n_train=11,n_test=5")
    p = ds.meta["params"]
    arrays = ds.train.x.nbytes + ds.test.x.nbytes + ds.train.y.nbytes + ds.test.y.nbytes
    assert arrays <= needed_bytes(p) <= 5 * arrays  # results + float64 working copies, nothing far beyond


def test_sizes_that_fit_still_load():
    assert available_bytes() is None or available_bytes() > 0
    ds = load_dataset("synthetic:n_train=20,n_test=10")
    assert len(ds.train) == 12 * 20
