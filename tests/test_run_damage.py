"""Readers that check what they read: damaged metrics.jsonl / results.json are named (file and line) under the
report's "Problems", and the report's status says "damaged", not "complete"."""

import json
import subprocess
import sys

import pytest

from nclab.report import load_run, write_report
from nclab.rundir import RunDir, check_jsonl
from nclab.utils.errors import NclabError

ROWS = [{"epoch": e, "lr": 0.1, "train_loss": 1.0 / e, "train_acc": 0.5, "test_acc": None} for e in (1, 2, 3)]


def _run(tmp_path, metrics_text=None, results=None):
    rd = RunDir(tmp_path / "r")
    rd.path.mkdir()
    rd.write_config({"name": "r", "data": {"source": "synthetic:"}})
    rd.write_status("complete", "", epoch=3)
    rd.metrics_path.write_text(metrics_text if metrics_text is not None
                               else "".join(json.dumps(r) + "\n" for r in ROWS))
    if results is not None:
        rd.write_results(results)
    return rd


def _report(rd):
    html = write_report(rd.path).read_text()
    return html, load_run(rd.path)


def test_clean_run_is_complete(tmp_path):
    html, run = _report(_run(tmp_path))
    assert run.status_name == "complete" and run.damage == []
    assert "Problems reading this run" not in html
    assert len(run.series) == 3


def test_nul_filled_metrics_is_damaged_not_empty(tmp_path):
    rd = _run(tmp_path)
    rd.metrics_path.write_bytes(b"\0" * 4096)  # a power cut: the file's blocks read back as zeros
    html, run = _report(rd)
    assert run.status_name == "damaged"
    assert run.damage == ["metrics.jsonl line 1: 4096 NUL bytes (the file was damaged, e.g. by a power cut)"]
    assert "metrics.jsonl line 1: 4096 NUL bytes" in html
    assert 'class="pill damaged">damaged (status.json: complete)' in html


def test_nul_tail_after_good_rows(tmp_path):
    text = "".join(json.dumps(r) + "\n" for r in ROWS[:2]) + "\0" * 100
    rows, problems = check_jsonl(_run(tmp_path, text).metrics_path)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert problems == ["metrics.jsonl line 3: 100 NUL bytes (the file was damaged, e.g. by a power cut)"]


@pytest.mark.parametrize("line, problem", [
    ('[1, 2]', "metrics.jsonl line 2: a list, not an object"),
    ('"epoch 2"', "metrics.jsonl line 2: a string, not an object"),
    ('{"epoch": 2, "train_loss": "low"}', "metrics.jsonl line 2: 'train_loss' is a string, expected a number or null"),
    ('{"epoch": 2, "train_acc": true}', "metrics.jsonl line 2: 'train_acc' is a boolean, expected a number or null"),
    ('{"epoch": "2"}', "metrics.jsonl line 2: 'epoch' is a string, expected a number or null"),
    ('{"epoch": 1}', "metrics.jsonl line 2: epoch 1 repeats line 1"),
    ('{not json', "metrics.jsonl line 2: not valid JSON (Expecting property name enclosed in double quotes)"),
])
def test_bad_rows_are_named_with_file_and_line(tmp_path, line, problem):
    text = json.dumps(ROWS[0]) + "\n" + line + "\n" + json.dumps(ROWS[2]) + "\n"
    html, run = _report(_run(tmp_path, text))
    assert problem in run.damage, run.damage
    assert run.status_name == "damaged"
    assert problem.replace("'", "&#x27;") in html or problem in html
    assert run.series is not None and 1.0 in run.series.x and 3.0 in run.series.x  # the good rows still drawn


def test_out_of_order_epoch(tmp_path):
    text = "".join(json.dumps(ROWS[i]) + "\n" for i in (0, 2, 1))
    rows, problems = check_jsonl(_run(tmp_path, text).metrics_path)
    assert [r["epoch"] for r in rows] == [1, 3]
    assert problems == ["metrics.jsonl line 3: epoch 2 comes after epoch 3 (out of order)"]


def test_torn_last_line_is_not_damage(tmp_path):
    text = "".join(json.dumps(r) + "\n" for r in ROWS[:2]) + '{"epoch": 3, "lr'
    html, run = _report(_run(tmp_path, text))
    assert run.damage == [] and run.status_name == "complete"
    assert len(run.series) == 2


@pytest.mark.parametrize("results, problem", [
    ({"tables": "a table"}, "results.json: 'tables' is str, expected a list of tables"),
    ({"tables": [{"columns": ["a"], "rows": 3}]}, "results.json: 'tables' item 1 is not an object with 'columns' and"),
    ({"grid": {"axes": {}, "cells": [1, 2]}}, "results.json: 'grid'.'cells' holds an item that is not an object"),
    ({"grid": []}, "results.json: 'grid' is not an object"),
    ({"subruns": "a"}, "results.json: 'subruns' is not a list of folder names"),
    ({"coarse_test_acc": "0.9"}, "results.json: 'coarse_test_acc' is str, expected a number or null"),
    ({"recovery": {"test_acc": [0.5]}}, "results.json: 'recovery.test_acc' is list, expected a number or null"),
    ({"recovery": 0.5}, "results.json: 'recovery' is float, expected an object"),
])
def test_malformed_results_sections_are_named(tmp_path, results, problem):
    html, run = _report(_run(tmp_path, results=results))
    assert any(d.startswith(problem) for d in run.damage), run.damage
    assert run.status_name == "damaged"
    assert "Problems reading this run" in html


def test_well_formed_results_are_no_problem(tmp_path):
    res = {"coarse_test_acc": 0.9, "recovery": {"test_acc": 0.5, "per_superclass": []},
           "tables": [{"title": "t", "columns": ["a"], "rows": [[1]]}], "subruns": []}
    _, run = _report(_run(tmp_path, results=res))
    assert run.damage == []


def test_report_cli_warns_on_damage(tmp_path):
    rd = _run(tmp_path)
    rd.metrics_path.write_bytes(b"\0" * 10)
    p = subprocess.run([sys.executable, "-m", "nclab.cli", "report", str(rd.path)], capture_output=True, text=True)
    assert p.returncode == 0
    assert "warning:" in p.stderr and "is damaged: metrics.jsonl line 1: 10 NUL bytes" in p.stderr


@pytest.mark.parametrize("content", ["[1]", "null", "3"])
def test_run_json_files_must_hold_objects(tmp_path, content):
    rd = RunDir(tmp_path)
    rd.path.mkdir(exist_ok=True)
    rd.status_path.write_text(content)
    with pytest.raises(NclabError, match="not an object"):
        rd.read_status()
