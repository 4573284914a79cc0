"""``nclab data info``: text and JSON output agree with counts computed directly."""

import json

import numpy as np

from nclab.cli import main as cli_main
from nclab.data import build_hierarchy, load_dataset, split_labels

SRC = "synthetic:coarse=3,fine_per_coarse=2,dim=4,n_train=7,n_test=3"


def run(capsys, *argv):
    rc = cli_main(["data", "info", *argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_info_json_uses_the_dataset_hierarchy(capsys):
    rc, out, _ = run(capsys, "--source", SRC, "--json")
    assert rc == 0
    info = json.loads(out)
    assert info["splits"]["train"]["n"] == 42 and info["splits"]["test"]["n"] == 18
    assert [e["count"] for e in info["splits"]["train"]["coarse"]] == [14, 14, 14]
    assert info["hierarchy"]["coarse_names"] == ["c0", "c1", "c2"]


def test_info_split_hierarchy_counts_pseudo_classes(capsys):
    rc, out, _ = run(capsys, "--source", SRC, "--hierarchy", "split:2:1", "--json")
    info = json.loads(out)
    ds = load_dataset(SRC)
    h = build_hierarchy("split:2:1", ds.class_names)
    want = np.bincount(split_labels(ds.train.y.numpy(), h), minlength=12)
    assert [e["count"] for e in info["splits"]["train"]["fine"]] == want.tolist()
    assert [e["count"] for e in info["splits"]["train"]["coarse"]] == [7] * 6


def test_info_text_and_subsample(capsys):
    rc, out, _ = run(capsys, "--source", "digits", "--hierarchy", "mod:2", "--subsample", "5,5,5,5,5,9,9,9,9,9")
    assert rc == 0
    lines = out.splitlines()
    assert "train=70  test=450" in out
    row = next(ln for ln in lines if ln.split()[:2] == ["5", "5"])
    assert row.split()[2] == "9"  # fine class 5: 9 train images kept
    coarse = next(ln for ln in lines if "0+2+4+6+8" in ln)
    assert coarse.split()[2] == "33"  # mod:2 -> even digits: 0, 2, 4 keep 5 each, 6, 8 keep 9 each


def test_info_errors_exit_2_with_one_line(capsys):
    rc, out, err = run(capsys, "--source", "nope:x")
    assert rc == 2 and out == "" and err.strip().count("\n") == 0 and "unknown data source 'nope'" in err
    rc, out, err = run(capsys, "--source", "digits", "--hierarchy", "mod:99")
    assert rc == 2 and "K=99" in err
