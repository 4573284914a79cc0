"""Theory experiments: run directories, results.json tables, and invariants of the numbers in them."""

from __future__ import annotations

import json

from nclab.cli import main


from nclab.rundir import RunDir
from nclab.experiments.theory_runs import run_dln_synthetic, run_hierarchy_synthetic


def test_dln_synthetic_small(tmp_path):
    res = run_dln_synthetic(str(tmp_path / "dln"), iters=1500, depths=[1, 2], lam=5e-3, width=8)
    rd = RunDir(tmp_path / "dln")
    assert rd.read_status()["status"] == "complete"
    assert rd.read_results()["subruns"] == res["subruns"] and len(res["subruns"]) == 2 * 2 * 2 * 2
    for name in res["subruns"]:
        rows = RunDir(rd.path / name).read_metrics()
        steps = [r["step"] for r in rows]
        assert steps[0] == 0 and steps[-1] == 1500 and steps == sorted(steps)
    mse = res["tables"][0]
    i_pred, i_meas = mse["columns"].index("f* predicted"), mse["columns"].index("f measured")
    for row in mse["rows"]:  # f* is the global minimum: no iterate can go below it
        assert row[i_meas] >= row[i_pred] * (1 - 1e-3)
    # M = 1 is convex: after 1500 momentum steps with λ = 5e-3 GD is at the optimum to table precision
    m1 = [r for r in mse["rows"] if r[1] == 1]
    assert all(abs(r[i_meas] - r[i_pred]) <= 2e-3 * r[i_pred] for r in m1)
    json.dumps(res)  # valid JSON (no nan)


def test_hierarchy_synthetic_small(tmp_path):
    res = run_hierarchy_synthetic(str(tmp_path / "h"), steps=150, fine_seps=[0.25, 4.0], noises=[1.0])
    t = res["tables"][0]
    col = {c: i for i, c in enumerate(t["columns"])}
    low, high = t["rows"]
    # raw-input recovery: fine classes 0.25 apart under unit noise are near chance (1/3); 4 apart are separable
    assert low[col["recovery raw inputs"]] < 0.5 and high[col["recovery raw inputs"]] > 0.95
    assert low[col["fine structure"]] == "no fine signal in the inputs"
    for row in t["rows"]:
        assert row[col["coarse test acc"]] > 0.95  # coarse_sep 6 with unit noise is easy
    for name in res["subruns"]:
        rows = RunDir(tmp_path / "h" / name).read_metrics()
        assert rows[-1]["step"] == 150 and "nc.train.fine_within_coarse.mean" in rows[-1]


def test_dln_cifar_experiment_with_a_bad_data_source_writes_nothing(tmp_path, capsys):
    out = tmp_path / "dln"
    assert main(["reproduce", "dln-cifar10-imbalanced", "--quick", "--data", f"imagefolder:{tmp_path}/none.tar.gz",
                 "--out", str(out), "--quiet"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    assert not out.exists()  # it left config.yaml and status "running" behind


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
