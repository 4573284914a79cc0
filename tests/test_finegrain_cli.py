"""`nclab recover` on arrays on disk, checked against the Python API and for one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nclab.cli import main
from nclab.finegrain.evaluate import evaluate_recovery
from test_finegrain_recovery import split


@pytest.fixture()
def arrays(tmp_path):
    xtr, ytr, xte, yte, f2c = split(noise=3.0, fine_sep=4.0)
    pred = f2c[yte].copy()
    pred[::9] = (pred[::9] + 1) % 3  # some wrong coarse predictions
    files = {"features-train": xtr, "coarse-train": f2c[ytr], "fine-train": ytr, "features-test": xte,
             "coarse-pred": pred, "fine-test": yte}
    args = []
    for k, v in files.items():
        np.save(tmp_path / f"{k}.npy", v)
        args += [f"--{k}", str(tmp_path / f"{k}.npy")]
    hfile = tmp_path / "h.json"
    from nclab.data.hierarchy import Hierarchy

    hfile.write_text(json.dumps(Hierarchy.from_mapping(f2c, [f"f{i}" for i in range(len(f2c))]).to_dict()))
    return args, (xtr, ytr, xte, yte, f2c, pred), hfile


def test_recover_arrays_json_matches_api(arrays, capsys):
    args, (xtr, ytr, xte, yte, f2c, pred), hfile = arrays
    assert main(["recover", *args, "--hierarchy", str(hfile), "--json", "--confusion"]) == 0
    out = json.loads(capsys.readouterr().out)
    ref = evaluate_recovery(xtr, f2c[ytr], ytr, xte, pred, yte, f2c)
    for k in ("test_acc", "oracle_test_acc", "train_acc", "coarse_test_acc", "ari", "nmi"):
        assert out[k] == pytest.approx(ref[k])
    assert out["confusion"] == ref["confusion"] and out["fine_names"][0] == "f0"
    assert out["test_acc"] < out["oracle_test_acc"]  # the wrong coarse predictions cost accuracy
    # inferred hierarchy (no --hierarchy) and the oracle flag give the oracle number
    assert main(["recover", *args[:8], *args[10:], "--oracle", "--json"]) == 0
    orc = json.loads(capsys.readouterr().out)
    assert orc["test_acc"] == pytest.approx(ref["oracle_test_acc"])
    # --probe adds the supervised probe, equal to the API's on the same arrays and routing
    from nclab.finegrain.evaluate import as_hierarchy
    from nclab.finegrain.probe import linear_probe

    assert main(["recover", *args, "--json", "--probe"]) == 0
    got = json.loads(capsys.readouterr().out)["probe"]
    pref = linear_probe(xtr, f2c[ytr], ytr, xte, pred, yte, as_hierarchy(f2c))
    assert got["test_acc"] == pytest.approx(pref["test_acc"]) and got["oracle_test_acc"] >= got["test_acc"]


def test_recover_errors_are_one_line(arrays, tmp_path, capsys):
    args, data, _ = arrays
    assert main(["recover", *args[:4], "--json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: arrays mode needs") and err.count("\n") == 1
    np.save(tmp_path / "short.npy", data[1][:-3])
    bad = list(args)
    bad[bad.index("--fine-train") + 1] = str(tmp_path / "short.npy")
    assert main(["recover", *bad]) == 2
    assert "rows" in capsys.readouterr().err
    assert main(["recover", "--run", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["recover"]) == 2
