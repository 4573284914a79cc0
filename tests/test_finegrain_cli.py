"""`nclab recover` on arrays on disk, checked against the Python API and for one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nclab.cli import main
from nclab.finegrain.evaluate import evaluate_recovery
from test_finegrain_recovery import split
from helpers_cli import save_arrays as _save


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


def test_recover_rejects_bad_inputs_in_one_line(arrays, tmp_path, capsys):
    args, (xtr, ytr, xte, yte, f2c, pred), hfile = arrays

    def one_line_error(argv, needle):
        assert main(["recover", *argv]) == 2
        cap = capsys.readouterr()
        assert cap.err.startswith("error: ") and cap.err.count("\n") == 1 and needle in cap.err, cap.err
        assert cap.out == ""

    (tmp_path / "list.json").write_text("[0, 0, 1]")
    one_line_error([*args, "--hierarchy", str(tmp_path / "list.json")], "is not a hierarchy JSON")
    one_line_error([*args, "--tap", "group2", "--max-train", "10"], "--tap, --max-train apply to --run mode only")
    np.save(tmp_path / "empty.npy", np.zeros((0, xtr.shape[1]), np.float32))
    bad = list(args)
    bad[bad.index("--features-test") + 1] = str(tmp_path / "empty.npy")
    one_line_error(bad, "is empty")
    c = f2c[ytr].copy()
    c[5] = (c[5] + 1) % 3
    np.save(tmp_path / "c_bad.npy", c)
    bad = list(args)
    bad[bad.index("--coarse-train") + 1] = str(tmp_path / "c_bad.npy")
    one_line_error([*bad, "--hierarchy", str(hfile)], "1 of")
    z = yte.copy()
    z[0] = -1
    np.save(tmp_path / "z_neg.npy", z)
    bad = list(args)
    bad[bad.index("--fine-test") + 1] = str(tmp_path / "z_neg.npy")
    one_line_error([*bad, "--hierarchy", str(hfile)], "test fine label -1")


def test_recover_takes_a_file_spec_hierarchy_and_a_hierarchy_json(arrays, tmp_path, capsys):
    args, (xtr, ytr, xte, yte, f2c, pred), hfile = arrays
    (tmp_path / "map.json").write_text(json.dumps({"fine_to_coarse": f2c.tolist()}))
    outs = []
    for spec in (f"file:{tmp_path / 'map.json'}", str(hfile)):  # a builder spec ending in .json, a to_dict() file
        assert main(["recover", *args, "--hierarchy", spec, "--json"]) == 0, capsys.readouterr().err
        outs.append(json.loads(capsys.readouterr().out)["test_acc"])
    assert outs[0] == outs[1] == pytest.approx(evaluate_recovery(xtr, f2c[ytr], ytr, xte, pred, yte, f2c)["test_acc"])


def test_recover_json_is_strict_when_a_superclass_has_no_test_rows(arrays, tmp_path, capsys):
    args, (xtr, ytr, xte, yte, f2c, pred), hfile = arrays
    keep = f2c[yte] != 2  # no test sample of superclass 2: its test accuracy is undefined
    bad = list(args)
    for name, v in (("features-test", xte[keep]), ("coarse-pred", np.minimum(pred[keep], 1)), ("fine-test", yte[keep])):
        np.save(tmp_path / f"k_{name}.npy", v)
        bad[bad.index(f"--{name}") + 1] = str(tmp_path / f"k_{name}.npy")
    assert main(["recover", *bad, "--hierarchy", str(hfile), "--json"]) == 0

    def no_constants(c):
        raise AssertionError(f"non-standard JSON constant {c}")

    out = json.loads(capsys.readouterr().out, parse_constant=no_constants)
    per = {p["coarse"]: p for p in out["per_superclass"]}
    assert per[2]["test_acc"] is None and per[2]["n_test"] == 0 and per[0]["test_acc"] is not None


def test_recover_cli_passes_normalize_and_fit_on(tmp_path, capsys):
    from nclab.cli import main

    xtr, ytr, xte, yte, f2c = split(seed=2, noise=3.0, fine_sep=4.0)
    pred = f2c[yte].copy()
    pred[::7] = (pred[::7] + 1) % 3
    f = _save(tmp_path, xtr=xtr, ctr=f2c[ytr], ytr=ytr, xte=xte, pred=pred, yte=yte)
    base = ["recover", "--features-train", f["xtr"], "--coarse-train", f["ctr"], "--fine-train", f["ytr"],
            "--features-test", f["xte"], "--coarse-pred", f["pred"], "--fine-test", f["yte"], "--json", "--confusion"]
    default = evaluate_recovery(xtr, f2c[ytr], ytr, xte, pred, yte)
    for extra, kw in ((["--normalize", "none"], {"normalize": "none"}), (["--fit-on", "test"], {"fit_on": "test"})):
        assert main(base + extra) == 0
        out = json.loads(capsys.readouterr().out)
        ref = evaluate_recovery(xtr, f2c[ytr], ytr, xte, pred, yte, **kw)
        for k in ("test_acc", "oracle_test_acc", "train_acc", "ari", "nmi", "train_ari", "train_nmi"):
            assert out[k] == pytest.approx(ref[k]), (extra, k)
        assert out["confusion"] == ref["confusion"]
        for k, v in kw.items():
            assert out["options"][k] == v
        assert any(ref[k] != default[k] for k in ("train_acc", "train_ari", "test_acc"))  # the option matters
