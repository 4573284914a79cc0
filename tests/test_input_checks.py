"""Input that was silently accepted before: duplicate keys in YAML configs and source specs, an empty run name,
and synthetic sizes that cannot fit in memory. Each is one ``error:`` line, exit 2, nothing written."""

import time

import numpy as np

import pytest

from nclab.cli import main
from nclab.data import load_dataset
from nclab.data.synthetic import available_bytes, needed_bytes, parse_synthetic_spec
from nclab.utils.errors import NclabError
from helpers_cli import one_line_error


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


def test_small_api_argument_checks():
    import torch

    from nclab.collapse import etf_target, metrics_from_arrays
    from nclab.models import build_model

    for args, msg in ((("mlp", 0, (4,)), "num_classes must be a positive integer"),
                      (("mlp", 3.0, (4,)), "num_classes must be a positive integer"),
                      (("mlp", 3, 4), "input_shape must be a tuple"), (("mlp", 3, (0,)), "input_shape")):
        with pytest.raises(NclabError, match=msg):
            build_model(*args)
    assert build_model("mlp", np.int64(3), (4,))(torch.zeros(2, 4)).shape == (2, 3)
    with pytest.raises(NclabError, match="K >= 1"):
        etf_target(0)
    rng = np.random.default_rng(0)
    H, y, W = rng.normal(size=(40, 5)), np.arange(40) % 4, rng.normal(size=(4, 5))
    assert metrics_from_arrays(H, y, W.tolist()) == pytest.approx(metrics_from_arrays(H, y, W), nan_ok=True)
    for bs in (0, -5, 2.5):
        with pytest.raises(NclabError, match="batch_size must be a positive integer"):
            metrics_from_arrays(H, y, batch_size=bs)


def test_more_api_argument_checks(tmp_path, capsys):
    from nclab.collapse import equiangular, equinorm, maxangle
    from nclab.finegrain import FineLabelRecovery, kmeans
    from nclab.train import load_config

    rng = np.random.default_rng(0)
    for fn in (equinorm, equiangular, maxangle):
        with pytest.raises(NclabError, match=r"needs a \(K, D\) matrix"):
            fn(rng.normal(size=5))
    x = rng.normal(size=(20, 3))
    for k in (2.5, "2", True):
        with pytest.raises(NclabError, match="integer number of clusters"):
            kmeans(x, k)
    assert kmeans(x, np.int64(2)).labels.shape == (20,)
    y = np.arange(20) % 4
    for h, msg in (([0, 0, 2, 2], "without fine classes"), ("mod:2", "is a spec"), ([[0, 1]], "1-D"),
                   ([0, -1, 1, 1], "1-D non-negative")):
        with pytest.raises(NclabError, match=msg):
            FineLabelRecovery(h).fit(x, np.asarray([0, 0, 1, 1])[y], y)
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    with pytest.raises(NclabError, match="is empty"):
        load_config(str(tmp_path / "empty.yaml"))
    for group in ("data", "ufm", "reproduce"):  # a group without its sub-command: usage, exit 2
        assert main([group]) == 2
        assert "usage:" in capsys.readouterr().err


def test_hungarian_names_and_hierarchy_metrics_check_their_inputs():
    from nclab.collapse import hierarchy_metrics_from_arrays
    from nclab.data import build_hierarchy
    from nclab.finegrain.recovery import hungarian_names

    assert list(hungarian_names([0, 0, 1, 1], [5, 5, 7, 7], 2, [5, 7])) == [5, 7]  # lists work
    for cl, fi, msg in (([0, 1, 1], [5, 7], "3 cluster ids but 2"), ([0, 2], [5, 7], "0..1"),
                        ([0.0, 1.0], [5, 7], "integers")):
        with pytest.raises(NclabError, match=msg):
            hungarian_names(cl, fi, 2, [5, 7])
    h = build_hierarchy("mod:2", list("abcd"))
    rng = np.random.default_rng(0)
    H, y = rng.normal(size=(40, 3)), np.arange(40) % 4
    assert "coarse" in hierarchy_metrics_from_arrays(H, y, h)
    with pytest.raises(NclabError, match=r"need features \(N, D\)"):
        hierarchy_metrics_from_arrays(H[:, 0], y, h)
    with pytest.raises(NclabError, match="must be a nclab Hierarchy"):
        hierarchy_metrics_from_arrays(H, y, h.fine_to_coarse)


def test_recovery_options_and_eval_split_are_checked(tmp_path):
    from nclab.finegrain import FineLabelRecovery
    from nclab.train import Trainer, load_config

    x, y = np.random.default_rng(0).normal(size=(20, 3)), np.arange(20) % 4
    c = y // 2
    for kw, msg in (({"n_init": "ten"}, "n_init must be a positive integer"), ({"n_init": 0}, "n_init"),
                    ({"max_samples": 2.5}, "max_samples"), ({"seed": -1}, "seed must be a non-negative"),
                    ({"whiten_var": "0.9"}, "whiten_var must be a number")):
        rec = FineLabelRecovery(**kw)  # __init__ only stores; fit checks
        with pytest.raises(NclabError, match=msg):
            rec.fit(x, c, y)
    # numpy ints and an int variance share are fine
    FineLabelRecovery(n_init=np.int64(3), whiten_var=1).fit(x, c, y)
    tr = Trainer(load_config("tiny", ["optim.epochs=1", "data.source=synthetic"]), tmp_path / "r")
    with pytest.raises(NclabError, match="split must be 'train' or 'test'"):
        tr.evaluate("val")
