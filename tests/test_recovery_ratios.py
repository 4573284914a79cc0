"""Recovered / supervised ratios in results.json, the experiment table, the report rows and sweep cells."""

import json
from pathlib import Path

import pytest

from nclab.experiments.finegrain_runs import _table
from nclab.rundir import recovery_ratios

RES = {"experiment": "cifar10-coarse5", "coarse_test_acc": 0.95,
       "recovery": {"kind": "coarse", "test_acc": 0.8697, "oracle_test_acc": 0.9509},
       "recovery_pursuit": {"test_acc": 0.8861},
       "probe": {"test_acc": 0.90, "oracle_test_acc": 0.9817},
       "baselines": {"fine_trained": {"test_acc": 0.9091}}}


def test_ratios_hand_computed():
    r = recovery_ratios(RES)
    assert r == pytest.approx({"recovered_over_fine_trained": 0.8697 / 0.9091,
                               "pursuit_over_fine_trained": 0.8861 / 0.9091,
                               "recovered_over_probe": 0.8697 / 0.90,
                               "oracle_recovered_over_oracle_probe": 0.9509 / 0.9817})
    assert round(r["recovered_over_fine_trained"], 3) == 0.957  # the measured 86.97 % / 90.91 %


def test_ratios_only_where_both_numbers_exist():
    res = {"recovery": {"kind": "coarse", "test_acc": 0.5}, "probe": {"test_acc": 0.0}}
    assert recovery_ratios(res) == {}  # no baseline; a zero denominator gives no ratio
    assert recovery_ratios({**RES, "recovery": {**RES["recovery"], "kind": "split"}}) == {}


def test_table_and_report_show_ratios_as_numbers(tmp_path):
    from nclab.report.load import load_run
    from nclab.report.sections import results_rows, results_text
    from nclab.rundir import RunDir

    res = {**RES, "ratios": recovery_ratios(RES)}
    rows = dict(_table(res)["rows"])
    assert rows["ratio: recovery / same network trained on the fine labels"] == "0.957"
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    run.write_results(res)
    run.write_status("complete", "")
    got = {label: v for label, v, _ in results_rows(load_run(run.path))}
    assert got["Ratio: recovery (predicted routing) / same network trained on the fine labels"] == pytest.approx(
        0.8697 / 0.9091)
    line = next(ln for ln in results_text(load_run(run.path)).splitlines() if ln.startswith("Ratio: recovery (pred"))
    assert line.split()[-1] == "0.9567" and "%" not in line


def test_sweep_cell_row_carries_ratio_and_noise(tmp_path):
    from nclab.commands.sweep import cell_row

    res = {"recovery": {"test_acc": 0.8, "label_noise": {"recovery_train_acc_clean": 0.9,
                                                         "recovery_train_acc_corrupted_true_routing": 0.7}},
           "coarse_test_acc": 0.9, "ratios": {"recovered_over_probe": 0.95}}
    row = cell_row({"seed": 0}, Path(tmp_path), res)
    assert row["recovery_over_probe"] == 0.95
    assert (row["clean_train_recovery_acc"], row["corrupted_train_recovery_acc"]) == (0.9, 0.7)
    assert "clean_train_recovery_acc" not in cell_row({"seed": 0}, Path(tmp_path), {"recovery": {"test_acc": 0.8}})


def test_report_derives_ratios_for_results_written_without_them(tmp_path):
    from nclab.report.load import load_run
    from nclab.report.sections import results_rows
    from nclab.rundir import RunDir

    run = RunDir(tmp_path / "old")
    run.path.mkdir()
    (run.path / "results.json").write_text(json.dumps(RES))  # a version-0 file (no schema_version): no "ratios"
    run.write_status("complete", "")
    got = {label: v for label, v, _ in results_rows(load_run(run.path))}
    assert got["Ratio: recovery / linear probe (both true coarse routing)"] == pytest.approx(0.9509 / 0.9817)


def test_compare_report_lists_the_ratio_of_each_run(tmp_path):
    from nclab.report.compare import write_compare_report
    from nclab.rundir import RunDir

    dirs = []
    for name, fine_trained in (("a", 0.9091), ("b", 0.8697)):
        run = RunDir(tmp_path / name)
        run.path.mkdir()
        res = {**RES, "baselines": {"fine_trained": {"test_acc": fine_trained}}}
        run.write_results({**res, "ratios": recovery_ratios(res)})  # as run_experiment writes them
        run.write_status("complete", "")
        dirs.append(run.path)
    html = write_compare_report(dirs, tmp_path / "cmp").read_text()
    row = html[html.index("Ratio: recovery (predicted routing)"):]
    row = row[: row.index("</tr>")]
    assert "0.9567" in row and "1" in row and "%" not in row  # 0.8697 / 0.9091, then 0.8697 / 0.8697 = 1
