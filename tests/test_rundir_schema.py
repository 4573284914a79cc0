"""The typed schemas of run.json (RunInfo) and results.json (Results): versions, round trips, the version-0 files
under docs/results, and what a fresh run writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nclab.rundir import Results, RunDir, RunInfo, read_results, read_run_info, recovery_hierarchy
from nclab.utils.errors import NclabError
from test_report_rundirs import docs_result_dirs, make_run


def test_round_trip_keeps_every_key():
    info = {"schema_version": RunInfo.SCHEMA_VERSION, "argv": ["nclab", "train"], "device": "cpu",
            "cuda_device": None, "num_classes": 2, "labels": "coarse", "my_key": {"a": 1},
            "hierarchy": {"spec": "mod:2", "fine_to_coarse": [0, 1, 0, 1], "fine_names": list("abcd"),
                          "coarse_names": ["a+c", "b+d"], "meta": {}, "kind": "group"}}
    ri = RunInfo.from_dict(info)
    assert ri.hierarchy.spec == "mod:2" and ri.hierarchy_spec == "mod:2" and ri.num_classes == 2
    assert ri.extra == {"cuda_device": None, "my_key": {"a": 1}}  # null and unknown keys are kept verbatim
    assert ri.to_dict() == info and RunInfo.from_dict(ri.to_dict()) == ri
    res = {"schema_version": Results.SCHEMA_VERSION, "experiment": "x", "coarse_test_acc": 0.9,
           "recovery": {"test_acc": 0.8}, "ratios": {}, "setting": "theory-only key", "wall_time_s": None}
    r = Results.from_dict(res)
    assert (r.experiment, r.coarse_test_acc, r.recovery, r.extra) == (
        "x", 0.9, {"test_acc": 0.8}, {"setting": "theory-only key", "wall_time_s": None})
    assert r.to_dict() == res and Results.from_dict(r.to_dict()) == r
    assert RunInfo().to_dict() == {"schema_version": RunInfo.SCHEMA_VERSION}


def test_a_value_of_the_wrong_type_stays_in_extra():
    r = Results.from_dict({"coarse_test_acc": "high", "tables": {"not": "a list"}})
    assert r.coarse_test_acc is None and r.tables is None
    assert r.to_dict()["coarse_test_acc"] == "high" and r.to_dict()["tables"] == {"not": "a list"}


def test_a_newer_schema_version_fails_with_one_line():
    for cls, name in ((RunInfo, "run.json"), (Results, "results.json")):
        with pytest.raises(NclabError) as e:
            cls.from_dict({"schema_version": cls.SCHEMA_VERSION + 1})
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith(f"{name} has schema_version {cls.SCHEMA_VERSION + 1}, newer than")
        assert "upgrade nclab" in msg
    with pytest.raises(NclabError, match="schema_version is 'x'"):
        Results.from_dict({"schema_version": "x"})


def test_a_newer_results_json_is_one_problem_in_the_report_not_damage(tmp_path):
    from nclab.report import load_run, write_report

    run = make_run(tmp_path / "r", features=False)
    res = json.loads((run / "results.json").read_text())
    (run / "results.json").write_text(json.dumps({**res, "schema_version": 99}))
    data = load_run(run)
    assert data.results == {} and not data.damage and data.status_name == "complete"
    assert any("results.json has schema_version 99, newer than this nclab reads" in p for p in data.problems)
    assert "newer than this nclab reads" in write_report(run).read_text()


def test_a_version_0_file_maps_onto_the_current_keys():
    # results.json before it had "ratios": derived, in rundir's legacy table, from the accuracies it holds
    old = {"experiment": "cifar10-coarse5", "recovery": {"kind": "coarse", "test_acc": 0.87},
           "baselines": {"fine_trained": {"test_acc": 0.9}}}
    r = Results.from_dict(old)
    assert r.file_version == 0 and r.ratios == {"recovered_over_fine_trained": pytest.approx(0.87 / 0.9)}
    assert "ratios" not in old  # the caller's dict is not changed
    assert Results.from_dict({**old, "schema_version": 1}).ratios is None  # a current file is read as written
    # run.json whose hierarchy predates "kind" (a split one carried meta.split)
    h = {"spec": "split:2", "fine_to_coarse": [0, 0, 1, 1], "fine_names": ["a/0", "a/1", "b/0", "b/1"],
         "coarse_names": ["a", "b"], "meta": {"split": 2, "seed": None}}
    ri = RunInfo.from_dict({"hierarchy": h})
    assert ri.file_version == 0 and ri.hierarchy.kind == "split" and ri.to_dict()["hierarchy"]["kind"] == "split"
    # a split run recovers its true classes in one group
    g = recovery_hierarchy(ri, Results())
    assert g.coarse_names == ["all"] and g.fine_names == ["a", "b"] and g.fine_to_coarse.tolist() == [0, 0]


@pytest.mark.parametrize("d", docs_result_dirs(), ids=lambda p: p.name)
def test_every_docs_results_folder_loads(d):
    for name, read, cls in (("run.json", read_run_info, RunInfo), ("results.json", read_results, Results)):
        if not (d / name).exists():
            continue
        raw = json.loads((d / name).read_text())
        obj = read(d)
        assert obj.file_version == raw.get("schema_version", 0) == 0
        back = obj.to_dict()
        assert set(raw) <= set(back), name  # nothing is lost
        assert all(back[k] == raw[k] for k in raw if k != "hierarchy"), name
        assert cls.from_dict(back) == obj
    res, info = read_results(d), read_run_info(d)
    assert res.experiment or not (d / "results.json").exists()  # a plain training run (no experiment) writes none
    if res.recovery:  # the grouping the report draws is the one the recovery recorded
        h, per = recovery_hierarchy(info, res), res.recovery["per_superclass"]
        assert h is not None and h.num_coarse == len(per)
        assert [h.fine_classes(c) for c in range(h.num_coarse)] == [s["fine"] for s in per]
        assert h.coarse_names == [s["name"] for s in per]


def test_the_report_reads_no_guessed_key_names():
    from pathlib import Path

    import nclab.report as report

    src = "".join(p.read_text() for p in Path(report.__file__).parent.glob("*.py"))
    for key in ("dataset_source", "data_source", "hierarchy_spec\")", "dataset_checksum", "data_checksum",
                "dataset_name", "class_names", 'get("command")'):
        assert key not in src, key


def test_writers_stamp_the_schema_version(tmp_path):
    rd = RunDir(tmp_path / "r")
    rd.path.mkdir()
    res = {"experiment": "x", "coarse_test_acc": 0.5}
    rd.write_results(res)
    rd.write_run_info({"experiment": "x"})
    assert "schema_version" not in res  # the caller's dict (what --json prints) is not changed
    assert json.loads(rd.results_path.read_text()) == {"schema_version": Results.SCHEMA_VERSION, **res}
    assert json.loads(rd.run_info_path.read_text())["schema_version"] == RunInfo.SCHEMA_VERSION
    with pytest.raises(NclabError, match="newer than this nclab reads"):  # never relabel a newer file as ours
        rd.write_results({"schema_version": Results.SCHEMA_VERSION + 1})


@pytest.mark.parametrize("name", ["cifar10-coarse5", "cifar10-finer"])
def test_a_fresh_tiny_run_writes_versioned_files(tmp_path, name):
    pytest.importorskip("sklearn")
    from nclab.experiments.finegrain_runs import run_experiment
    from nclab.report import load_run

    out = tmp_path / name
    run_experiment(name, recipe="tiny", data="digits", epochs=1, out=out, baseline=False, random_init=False,
                   raw_pixels=False, probe=False)
    raw_info, raw_res = (json.loads((out / f).read_text()) for f in ("run.json", "results.json"))
    assert raw_info["schema_version"] == RunInfo.SCHEMA_VERSION
    assert raw_res["schema_version"] == Results.SCHEMA_VERSION
    info, res = read_run_info(out), read_results(out)
    assert info.file_version == res.file_version == 1 and info.argv and info.source and info.n_train
    assert res.experiment == name and res.recovery is not None and res.ratios is not None
    assert info.hierarchy.kind == ("split" if name == "cifar10-finer" else "group")
    # run.json's hierarchy gives the grouping the recovery recorded (a split run: its true classes, one group)
    h, per = recovery_hierarchy(info, res), res.recovery["per_superclass"]
    assert [h.fine_classes(c) for c in range(h.num_coarse)] == [s["fine"] for s in per]
    assert h.coarse_names == [s["name"] for s in per]
    assert h.fine_names == res.recovery["fine_names"]
    run = load_run(out)
    assert run.info == info and run.results["schema_version"] == 1 and not run.problems
    assert np.isfinite(run.res.wall_time_s)
