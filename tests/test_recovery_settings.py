"""One recovery configuration per run: the settings table, the run's record, the CLI's visible overrides, and the
guard that keeps a normalisation from silently failing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml


def separable_gaussians(n_per: int, dim: int, seed: int, sep: float = 4.0):
    """2 superclasses x 2 fine classes; each fine class is a unit Gaussian shifted by ``sep`` along its own axis,
    so the signal lives in 4 of ``dim`` dimensions."""
    rng = np.random.default_rng(seed)
    x, coarse, fine = [], [], []
    for f in range(4):
        mu = np.zeros(dim)
        mu[f] = sep
        x.append(rng.normal(size=(n_per, dim)) + mu)
        fine += [f] * n_per
        coarse += [f // 2] * n_per
    return np.vstack(x).astype(np.float32), np.array(coarse), np.array(fine)


def naive_within_ss(z, labels):
    return sum(float(((z[labels == j] - z[labels == j].mean(0)) ** 2).sum()) for j in set(labels.tolist()))


# ---------------------------------------------------------------------------------------------- the table
def test_every_consumer_takes_its_defaults_and_choices_from_the_one_table():
    import inspect

    from nclab.cli import build_parser
    from nclab.contracts.recovery import PARAMS, RecoverySpec
    from nclab.finegrain.recovery import FineLabelRecovery
    from nclab.train import load_config

    sig = inspect.signature(FineLabelRecovery.__init__).parameters
    cfg = load_config(None)
    assert cfg.recovery.to_dict() == RecoverySpec().to_dict()
    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["recover"]
    flags = {a.dest: a for a in sub._actions}
    for p in PARAMS:
        assert getattr(cfg.recovery, p.name) == p.default
        if p.name != "max_train":
            assert sig[p.name].default == p.default, p.name
            assert flags[p.name].default is None  # unset = the run's recorded value
            assert tuple(flags[p.name].choices or ()) == tuple(p.choices or ()), p.name


@pytest.mark.parametrize("bad, needle", [({"normalize": "whitn"}, "recovery.normalize"),
                                         ({"whiten_var": 0.0}, "recovery.whiten_var"),
                                         ({"whiten_var": 1.5}, "too large"),
                                         ({"n_init": 0}, "recovery.n_init"),
                                         ({"guard": "yes"}, "recovery.guard")])
def test_the_config_section_is_validated_once_with_the_tables_domain(bad, needle):
    from nclab.train import load_config
    from nclab.utils.errors import NclabError

    with pytest.raises(NclabError, match=needle):
        load_config({"recovery": bad})


def test_differences_name_each_changed_setting_and_nothing_else():
    from nclab.contracts.recovery import RecoverySpec

    run = RecoverySpec(normalize="center+l2")
    assert run.replace(normalize="center+l2", seed=None).differences(run) == []
    assert run.replace(normalize="whiten", n_init=3).differences(run) == ["normalize=whiten (run: center+l2)",
                                                                          "n_init=3 (run: 10)"]


# ---------------------------------------------------------------------------------------------- the guard
@pytest.mark.parametrize("dim", [64, 256])
def test_default_recovery_of_separable_gaussians_is_within_a_point_of_no_normalisation(dim):
    from nclab.finegrain.recovery import FineLabelRecovery

    x, c, f = separable_gaussians(400, dim, seed=dim)
    xt, ct, ft = separable_gaussians(200, dim, seed=dim + 1)
    none = FineLabelRecovery(normalize="none").fit(x, c, f).score(xt, ct, ft)
    default = FineLabelRecovery().fit(x, c, f).score(xt, ct, ft)
    unguarded = FineLabelRecovery(guard=False).fit(x, c, f).score(xt, ct, ft)
    assert none > 0.98
    assert default >= none - 0.01
    # what the guard is for: whitening alone stalls near chance (1/2) on this data
    assert unguarded < 0.7


def test_the_guard_only_ever_lowers_the_normalised_objective():
    """Kept partitions have a lower within-cluster sum of squares in the normalised space than the unguarded fit
    (checked with a naive sum); superclasses where it is not lower keep the unguarded clusters exactly."""
    from nclab.finegrain.recovery import FineLabelRecovery

    x, c, f = separable_gaussians(300, 64, seed=5)
    x[c == 1, :4] *= 0.0  # superclass 1 carries no signal: nothing to gain there
    x[c == 1] += np.random.default_rng(1).normal(size=(int((c == 1).sum()), 64)).astype(np.float32) * 0.1
    g = FineLabelRecovery().fit(x, c, f)
    u = FineLabelRecovery(guard=False).fit(x, c, f)
    assert 0 in g.guarded_
    for sup in (0, 1):
        idx = np.flatnonzero(c == sup)
        z = g._transform(x[idx], g.groups_[sup])
        ours, theirs = naive_within_ss(z, g.labels_[idx]), naive_within_ss(z, u.labels_[idx] - u.labels_[idx].min())
        if sup in g.guarded_:
            assert ours < theirs
        else:
            np.testing.assert_array_equal(g.labels_[idx], u.labels_[idx])


def test_recover_arrays_reports_the_guarded_superclasses(tmp_path, capsys):
    from nclab.cli import main

    x, c, f = separable_gaussians(200, 64, seed=3)
    xt, ct, ft = separable_gaussians(100, 64, seed=4)
    files = {"features-train": x, "coarse-train": c, "fine-train": f, "features-test": xt, "coarse-pred": ct,
             "fine-test": ft}
    args = []
    for k, v in files.items():
        np.save(tmp_path / f"{k}.npy", v)
        args += [f"--{k}", str(tmp_path / f"{k}.npy")]
    assert main(["recover", *args, "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["guarded"] == [0, 1] and rep["options"]["guard"] is True and rep["test_acc"] > 0.98
    assert main(["recover", *args]) == 0
    assert "guard: in superclass(es) 0, 1" in capsys.readouterr().out
    assert main(["recover", *args, "--no-guard", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["guarded"] == [] and rep["test_acc"] < 0.7


# ---------------------------------------------------------------------------------------------- one answer per run
@pytest.fixture(scope="module")
def digits_demo(tmp_path_factory):
    """The demo's digits variant (a run folder whose recorded normalisation is center+l2, not the default)."""
    from nclab.experiments.demo import run_demo

    out = tmp_path_factory.mktemp("demo") / "demo"
    res = run_demo(out, data="digits", epochs=6, baseline=False)
    return out, res


def test_recover_run_gives_the_runs_own_number_to_the_last_digit(digits_demo, capsys):
    from nclab.cli import main

    out, res = digits_demo
    assert yaml.safe_load((out / "config.yaml").read_text())["recovery"]["normalize"] == "center+l2"
    assert main(["recover", "--run", str(out), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["test_acc"] == res["recovery"]["test_acc"]
    assert rep["oracle_test_acc"] == res["recovery"]["oracle_test_acc"]
    assert rep["options"]["normalize"] == "center+l2"
    assert rep["settings"] == {"recorded_in": "config.yaml", "changed": []}
    # the callback clustered with the same settings, so its last point is the final number
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["recovery.test_acc"] == res["recovery"]["test_acc"]


def test_an_override_is_named_in_the_output(digits_demo, capsys):
    from nclab.cli import main

    out, res = digits_demo
    assert main(["recover", "--run", str(out), "--normalize", "none"]) == 0
    printed = capsys.readouterr().out
    assert "settings changed from the run's: normalize=none (run: center+l2)" in printed
    assert main(["recover", "--run", str(out), "--normalize", "center+l2", "--json"]) == 0  # the run's own: no change
    assert json.loads(capsys.readouterr().out)["settings"]["changed"] == []


def test_a_run_without_a_recovery_section_uses_its_results_record(digits_demo, tmp_path, capsys):
    import shutil

    from nclab.cli import main

    src, res = digits_demo
    old = tmp_path / "old"
    shutil.copytree(src, old)
    cfg = yaml.safe_load((old / "config.yaml").read_text())
    del cfg["recovery"]  # as written before configs recorded it
    (old / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["recover", "--run", str(old), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["settings"]["recorded_in"] == "results.json"
    assert rep["options"]["normalize"] == "center+l2" and rep["test_acc"] == res["recovery"]["test_acc"]


# ---------------------------------------------------------------------------------------------- newcomer frictions
def test_nclab_lists_its_public_api_and_loads_subpackages_lazily():
    import subprocess
    import sys

    code = ("import sys, nclab; assert 'torch' not in sys.modules; "
            "import pydoc; text = pydoc.render_doc(nclab); "
            "missing = [n for n in nclab.__all__ if n != '__version__' and n not in text]; "
            "assert not missing, missing; "
            "assert nclab.collapse.metrics_from_arrays is nclab.metrics_from_arrays; "
            "assert callable(nclab.FineLabelRecovery) and nclab.RecoverySpec().normalize == 'whiten'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bars_stay_out_of_logs_and_the_epoch_lines_remain(tmp_path, capsys):
    """stderr captured by pytest is not a terminal: no carriage-return redraws, one line per epoch."""
    from nclab.cli import main
    from nclab.utils.progress import bars_enabled

    assert not bars_enabled()
    assert main(["train", "--config", "tiny", "--run-dir", str(tmp_path / "r"), "--set", "optim.epochs=3"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    assert [ln.split()[1] for ln in err.splitlines() if ln.startswith("epoch ")] == ["1/3", "2/3", "3/3"]


def test_resume_names_its_epoch_and_ctrl_c_names_the_resume_command(tmp_path, capsys, monkeypatch):
    from nclab.cli import main, resume_command
    from nclab.train import Trainer

    run = str(tmp_path / "r")
    argv = ["train", "--config", "tiny", "--run-dir", run, "--set", "optim.epochs=2", "--quiet"]
    assert main(argv) == 0
    capsys.readouterr()
    from nclab.utils import progress

    progress.set_quiet(False)  # --quiet is process-wide
    assert main(["train", "--config", "tiny", "--run-dir", run, "--set", "optim.epochs=3", "--resume"]) == 0
    assert f"resuming {run} from epoch 2 of 3" in capsys.readouterr().err

    def interrupted(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_fit", interrupted)
    forced = ["train", "--config", "tiny", "--run-dir", run, "--force"]
    assert main(forced) == 130
    assert capsys.readouterr().err.strip().endswith(
        f"interrupted; continue with: nclab train --config tiny --run-dir {run} --resume")
    assert resume_command(["reproduce", "cifar10-coarse5", "--resume"]) == "nclab reproduce cifar10-coarse5 --resume"


def test_closed_form_verdict_names_why_a_cell_misses():
    from nclab.experiments.theory_runs import closed_form_verdict

    ok = {"collapsed_but_optimum_keeps": [], "objective_rel_diff": 1e-9, "max_rel_diff": 1e-8}
    assert closed_form_verdict(ok, 100) == "yes"
    stuck = {**ok, "collapsed_but_optimum_keeps": [2, 3]}
    assert closed_form_verdict(stuck, 100).startswith("no: GD sent classes [2, 3] to zero")
    slow = {**ok, "objective_rel_diff": 3e-3}
    assert closed_form_verdict(slow, 100).startswith("no: not converged after 100 steps")
    assert closed_form_verdict({**ok, "max_rel_diff": 5e-3}, 100).startswith("no: not converged")


def test_k2_views_leave_out_the_curves_fixed_by_the_class_counts():
    import numpy as np

    from nclab.report.curves import constant_by_construction, group_keys

    ones = np.ones(4)
    values = {"nc.train.coarse.n_classes": 2 * ones, "nc.train.coarse.etf_error_means": ones,
              "nc.train.coarse.etf_error_weights": ones, "nc.train.coarse.equiangular_weights": ones,
              "nc.train.coarse.nc1": ones, "nc.train.fine.n_classes": 10 * ones,
              "nc.train.fine.etf_error_means": ones, "nc.train.coarse.head.0.n_classes": 2 * ones,
              "nc.train.coarse.head.0.equinorm_means": ones}
    drop = constant_by_construction(values)
    assert drop == {"nc.train.coarse.etf_error_means", "nc.train.coarse.equiangular_weights",
                    "nc.train.coarse.head.0.equinorm_means"}
    drawn = {ln.key for g in group_keys(list(values), drop=drop) for p in g.panels for ln in p.lines}
    assert not drawn & drop and {"nc.train.coarse.etf_error_weights", "nc.train.fine.etf_error_means"} <= drawn
