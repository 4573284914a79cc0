"""Bad input to the command line and the Python API: each case must give one clear error instead of a traceback,
a silently wrong number, a poisoned process or a half-written folder (CLI: one ``error:`` line, exit 2, nothing
written)."""

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


def test_metrics_take_gradient_tracking_tensors_and_stay_usable():
    # features straight from a model and W = model.classifier.weight (an nn.Parameter) must work with the out=
    # work buffers, and must not leave the per-thread buffer failing every later call in the process
    import torch

    from nclab.collapse import metrics_from_arrays
    from nclab.models import build_model

    torch.manual_seed(0)
    m = build_model("mlp", 3, (4,), width=8, depth=1)
    x, y = torch.randn(60, 4), torch.arange(60) % 3
    want = metrics_from_arrays(m.features(x).detach(), y, m.classifier.weight.detach(), num_classes=3)
    got = metrics_from_arrays(m.features(x), y, m.classifier.weight, num_classes=3)
    assert got == pytest.approx(want, rel=1e-12, nan_ok=True)
    H = np.random.default_rng(1).normal(size=(90, 50))  # D > 2K: the projected route and its buffers
    yy = np.arange(90) % 3
    a = metrics_from_arrays(torch.from_numpy(H).requires_grad_(), yy)
    assert metrics_from_arrays(H, yy) == pytest.approx(a, rel=1e-12, nan_ok=True)


def test_recovery_score_checks_the_fine_labels():
    # a (N, 1) column or a length-1 array broadcast against the predictions into a wrong accuracy
    from nclab.data.synthetic import make_hierarchical_gaussian
    from nclab.finegrain import FineLabelRecovery

    x, y, h = make_hierarchical_gaussian(2, 2, 8, n_per_class=20, fine_sep=4)
    c = h.coarse_of(y)
    r = FineLabelRecovery(h).fit(x, c, y)
    assert r.score(x, c, y) == np.mean(r.predict(x, c) == y)
    for bad, msg in ((y.reshape(-1, 1), "shape"), (y[:1], "shape"), (y + 4, "outside 0..3"), (y - 1, "outside")):
        with pytest.raises(NclabError, match=msg):
            r.score(x, c, bad)


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


def test_coarse_of_refuses_labels_outside_the_hierarchy():
    import torch

    from nclab.data import build_hierarchy

    h = build_hierarchy("mod:2", list("abcd"))
    assert list(h.coarse_of(np.array([0, 1, 2, 3]))) == [0, 1, 0, 1]
    assert h.coarse_of(torch.tensor([[3, 2]])).tolist() == [[1, 0]]
    for bad, msg in ((np.array([-1, 0]), "fine label -1 is outside 0..3"), (np.array([4]), "fine label 4"),
                     (np.array([0.0, 1.0]), "integer"), (torch.tensor([-1]), "fine label -1"),
                     (torch.tensor([1.0]), "integer")):
        with pytest.raises(NclabError, match=msg):
            h.coarse_of(bad)


def test_linear_probe_checks_labels_like_the_recovery():
    from nclab.data.synthetic import make_hierarchical_gaussian
    from nclab.finegrain.probe import linear_probe

    x, y, h = make_hierarchical_gaussian(2, 2, 8, n_per_class=20, fine_sep=4)
    c = h.coarse_of(y)
    base = linear_probe(x, c, y, x, c, y, h)["test_acc"]
    assert linear_probe(x, c, y, x, c, y, h.fine_to_coarse)["test_acc"] == base  # an array hierarchy works
    for args, msg in (((x, c, y + 0.5, x, c, y, h), "integers"), ((x, c, y, x, c[:-1], y, h), "rows"),
                      ((x, c, y, x, c + 2, y, h), "predicted coarse label"), ((x, 1 - c, y, x, c, y, h), "disagree")):
        with pytest.raises(NclabError, match=msg):
            linear_probe(*args)


def test_second_pass_checks_labels_like_the_first():
    from nclab.collapse import ClassStats
    from nclab.collapse.second_pass import SecondPass

    rng = np.random.default_rng(0)
    H, y = rng.normal(size=(30, 4)), np.arange(30) % 3
    sp = SecondPass(ClassStats(3).update(H, y), rng.normal(size=(3, 4)))
    for bad, msg in ((y + 5, "label 7 outside 0..2"), (y - 1, "label -1 outside"), (y + 0.5, "must be integers")):
        with pytest.raises(NclabError, match=msg):
            sp.update(H, bad)
    sp.update(H, y.astype(np.float64))  # whole-number floats are labels, as in ClassStats
    assert sp.n == 30


def test_solve_ufm_refuses_a_prediction_for_another_problem():
    # it ran and reported objective_rel_diff 34 against the optimum of a different problem
    from nclab.theory import predict_ufm, solve_ufm

    sol = solve_ufm([4, 2], iters=5, prediction=predict_ufm([4, 2], 1, 5e-4, 5e-4))
    assert "objective_rel_diff" in sol.history[-1]
    for pred in (predict_ufm([4, 3], 1, 5e-4, 5e-4), predict_ufm([4, 2], 2, 5e-4, 5e-4),
                 predict_ufm([4, 2], 1, 1e-3, 5e-4), predict_ufm([4, 2], 1, 5e-4, 5e-4, bias=True)):
        with pytest.raises(NclabError, match="pass predict_ufm\\(\\) of the same problem"):
            solve_ufm([4, 2], iters=5, prediction=pred)


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


# --- found by the crash-safety audit (SIGKILL at chosen calls, then --resume) --------------------------------

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


# --- saved runs, CLI options, sweeps and API argument checks -------------------------------------------------

def test_a_saved_run_with_head_width_and_a_one_layer_head_still_loads(tmp_path):
    # runs saved before the head_width rule (dln-cifar10-imbalanced's M = 1 sub-runs) must resume and measure;
    # a new config with the same keys is still an error
    from nclab.train import load_config

    run = tmp_path / "old"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"model": {"name": "mlp", "head_depth": 1, "head_width": 16}}))
    assert load_config(str(run / "config.yaml")).model.head_width is None
    (tmp_path / "new.yaml").write_text((run / "config.yaml").read_text())
    with pytest.raises(NclabError, match="head_width"):
        load_config(str(tmp_path / "new.yaml"))


def test_end_of_options_marker_is_left_alone(tmp_path, capsys):
    # `nclab report -- -1` (a folder named -1) became "--=-1": an ambiguous-option error
    one_line_error(capsys, ["report", "--", "-1"], "-1")


def test_whole_float_batch_size_and_trimmed_buffers():
    from nclab.collapse import metrics_from_arrays
    from nclab.collapse.stats import thread_scratch

    rng = np.random.default_rng(0)
    H, y = rng.normal(size=(3000, 8)), np.arange(3000) % 3
    a = metrics_from_arrays(H, y, batch_size=np.float64(512))
    assert metrics_from_arrays(H, y, batch_size=512) == pytest.approx(a, nan_ok=True)
    H = rng.normal(size=(40_000, 300))  # 40,000 x 300 float64 buffers (96 MB each) must not stay pinned
    metrics_from_arrays(H, np.arange(40_000) % 3, batch_size=40_000)
    assert max((t.numel() * t.element_size() for t in thread_scratch()._t.values()), default=0) <= 64 << 20


def test_force_does_not_clean_a_folder_that_holds_no_run(tmp_path):
    from nclab.train import Trainer, load_config

    other = tmp_path / "project" / ".data.12345678.tmp"  # a user's file with a temp-like name
    other.parent.mkdir(parents=True)
    other.write_bytes(b"x")
    Trainer(load_config("tiny", ["optim.epochs=1", "data.source=synthetic"]), tmp_path).fit(force=True)
    assert other.exists()


def test_sweep_force_does_not_inherit_a_time_limit(tmp_path):
    from argparse import Namespace

    from nclab.commands.sweep import _inherited_time_limit

    rd = RunDir(tmp_path / "lr=0.1")
    rd.path.mkdir()
    rd.write_config({"train": {"time_limit_s": 60}})
    assert _inherited_time_limit(Namespace(time_limit=None, overrides=[], force=True), [rd.path]) == []


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


# --- API input checks (subsample counts, theory domains, callbacks spec, report loading) ---------------------

def test_subsample_refuses_a_class_with_no_train_samples():
    from nclab.data import load_dataset, subsample

    ds = load_dataset("digits")
    # count 0 silently dropped the class from training while it stayed in num_classes, the test split and the
    # metrics (counts=0 gave an empty train split); the geometric profile already keeps >= 1 per class
    for counts in (0, "0," + ",".join(["5"] * 9), [5] * 9 + [0]):
        with pytest.raises(NclabError, match=r"subsample count for class \d is 0; every class needs >= 1"):
            subsample(ds, counts=counts)
    with pytest.raises(NclabError, match=r"class 0 is -1"):
        subsample(ds, counts="-1," + ",".join(["5"] * 9))
    for counts in (["a"] * 10, [float("nan")] * 10, 5.5, [float("inf")] * 10):  # ValueError/TypeError before
        with pytest.raises(NclabError, match="whole numbers"):
            subsample(ds, counts=counts)
    assert np.bincount(subsample(ds, counts=[1] * 9 + [2]).train.y.numpy()).tolist() == [1] * 9 + [2]


def test_theory_helpers_refuse_inputs_outside_their_domain():
    import math

    from nclab.theory.closed_form import b_M, solve_scalar

    # each was "ValueError: math domain error" (or a misleading "outside float64's range" for nan/inf)
    for args, msg in (((0, [1e-3], 1e-3), "N .* must be a positive finite number"),
                      ((-5, [1e-3], 1e-3), "N .* must be a positive finite number"),
                      ((math.nan, [1e-3], 1e-3), "N .* must be a positive finite number"),
                      ((10, [], 1e-3), "one weight decay per layer"),
                      ((10, 1e-3, 1e-3), "one weight decay per layer"),
                      ((10, [1e-3, 0.0], 1e-3), "lambda_w for layer 2 must be a positive finite number"),
                      ((10, [-1e-3, -1e-3], 1e-3), "lambda_w for layer 1 must be a positive finite number"),
                      ((10, [math.nan], 1e-3), "lambda_w for layer 1 must be a positive finite number"),
                      ((10, [1e-3], 0.0), "lambda_h must be a positive finite number"),
                      ((10, [1e-3], math.inf), "lambda_h must be a positive finite number")):
        with pytest.raises(NclabError, match=msg):
            b_M(*args)
    # M < 1 was a ZeroDivisionError, a string/None a TypeError, M = 1.5 a silent answer for a non-existent depth
    for beta, M, msg in ((0.1, 0, "M .* must be an integer >= 1"), (0.1, -1, "M .* must be an integer >= 1"),
                         (0.1, 1.5, "M .* must be an integer >= 1"), (0.1, None, "M .* must be an integer >= 1"),
                         ("0.1", 2, "beta must be a positive finite number"),
                         (None, 2, "beta must be a positive finite number")):
        with pytest.raises(NclabError, match=msg):
            solve_scalar(beta, M)
    assert solve_scalar(0.1, 2.0) == solve_scalar(0.1, 2)  # a whole float depth is still fine
    # a tiny β (which b_M allows down to ~1e-304) was "OverflowError: Numerical result out of range"; for β -> 0
    # the root tends to (M/β)^(1/(M+1)). A subnormal β made the root search answer "collapses": refused
    r = solve_scalar(1e-300, 3)
    assert not r["collapses"] and r["x"] == pytest.approx((3 / 1e-300) ** 0.25, rel=1e-12)
    with pytest.raises(NclabError, match="below float64's normal range"):
        solve_scalar(1e-316, 3)
    assert b_M(10, (1e-3, 1e-3), 1e-3) == pytest.approx(2 * 10 * math.sqrt(10 * 1e-9), rel=1e-13)


def test_build_callbacks_names_a_spec_that_is_not_a_mapping():
    from nclab.train.callbacks import build_callbacks

    # a list/str/tuple spec was "AttributeError: 'list' object has no attribute 'items'"
    for spec in (["nc_metrics"], [{"nc_metrics": {}}], "nc_metrics", ("nc_metrics",), []):
        with pytest.raises(NclabError, match=r"callbacks must be a mapping \{name: kwargs\}"):
            build_callbacks(spec)
    with pytest.raises(NclabError, match="callback names must be strings"):  # TypeError before
        build_callbacks({3: {}})
    assert build_callbacks(None) == [] and build_callbacks({}) == []


def test_load_run_and_results_text_refuse_a_folder_that_is_not_a_run(tmp_path):
    from nclab.report import load_run, results_text

    # a mistyped path read as a run with nothing in it: results_text printed "(no results recorded)"
    with pytest.raises(NclabError, match="does not exist"):
        load_run(tmp_path / "nope")
    (tmp_path / "f.txt").write_text("hi")
    with pytest.raises(NclabError, match="is a file"):
        load_run(tmp_path / "f.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NclabError, match="is not a run directory"):
        load_run(tmp_path / "empty")
    # a path instead of what load_run returns was "AttributeError: 'str' object has no attribute 'results'"
    for bad in (str(tmp_path / "empty"), None):
        with pytest.raises(NclabError, match=r"results_text takes what load_run returns"):
            results_text(bad)
    rd = RunDir(tmp_path / "r")
    rd.path.mkdir()
    rd.write_results({"coarse_test_acc": 0.5})
    assert "50.00" in results_text(load_run(rd.path))


def test_sweep_with_an_unknown_data_source_writes_nothing(tmp_path, capsys):
    # the source name is checked with the config: before, the sweep folder was created and left marked "failed"
    out = tmp_path / "s"
    code = main(["sweep", "cifar10-coarse5", "--recipe", "tiny", "--data", "nosuch:x", "--grid", "seed=0,1",
                 "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown data source 'nosuch'" in err and "data.source" in err
    assert not out.exists()


def test_theory_experiments_refuse_to_overwrite_a_run_without_force(tmp_path, capsys):
    # a --quick rerun replaced a finished run's results silently; now it takes --force, checked before any work
    from nclab.experiments.theory_runs import run_hierarchy_synthetic

    out = tmp_path / "h"
    run_hierarchy_synthetic(str(out), steps=5, fine_seps=[4.0], noises=[1.0])
    before = (out / "results.json").read_text()
    for cmd in ("hierarchy-synthetic", "dln-synthetic", "dln-cifar10-imbalanced"):
        assert main(["reproduce", cmd, "--quick", "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "already holds a run" in err and "--force" in err
    assert (out / "results.json").read_text() == before
    res = run_hierarchy_synthetic(str(out), steps=5, fine_seps=[4.0], noises=[1.0], seed=1, force=True)
    assert RunDir(out).read_results()["tables"] == json.loads(json.dumps(res["tables"]))


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
