"""The scripts in examples/ run and print what their docstrings promise (each checked independently)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_example_is_tested():
    tested = {"nc_metrics_on_arrays", "recover_fine_labels", "train_coarse_watch_collapse", "deep_linear_ufm",
              "probe_any_model"}
    assert {p.stem for p in EXAMPLES.glob("*.py")} == tested


def test_nc_metrics_example_matches_the_closed_form():
    m, expected = _load("nc_metrics_on_arrays").main()
    assert m["nc1"] == pytest.approx(expected, rel=0.03)  # sampling noise of 20,000 x 64 Gaussian draws
    # W = the means and equal mean norms: argmax_k μ_k·h is the nearest mean, for every sample
    assert m["ncc_mismatch"] == 0.0
    assert m["etf_error_means"] < 0.05 and m["self_duality"] < 1e-2


def test_recovery_example_is_capped_by_routing():
    r = _load("recover_fine_labels").main()
    assert r["oracle_acc"] >= 0.98  # well separated fine clusters
    # a wrongly routed sample gets a fine label of another superclass: always an error
    assert r["routed_acc"] <= r["coarse_acc"]
    assert r["routed_acc"] >= r["coarse_acc"] - (1 - r["oracle_acc"]) - 1e-9
    assert r["report"]["test_acc"] == pytest.approx(r["routed_acc"])  # estimator and report agree


def test_training_example_logs_collapse_and_recovery_each_epoch(tmp_path):
    rows = _load("train_coarse_watch_collapse").main(str(tmp_path / "run"), epochs=3)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    last = rows[-1]
    assert last["test_acc"] > 0.9  # the 2 superclasses are far apart
    assert last["recovery.test_acc"] > 0.9  # fine classes survive inside them (fine_sep = 3 noise widths)
    assert last["recovery.test_acc"] <= last["test_acc"] + 1e-9  # routing cap, as above
    assert np.isfinite(last["nc.train.fine_within_coarse.mean"]) and last["nc.train.coarse.nc1"] > 0


def test_ufm_example_solver_reaches_the_closed_form():
    r = _load("deep_linear_ufm").main()
    assert r["worst_rel_diff"] < 1e-5
    assert r["objective"] == pytest.approx(r["pred_objective"], rel=1e-8)
    assert r["collapsed"] == [2, 3]  # the two small classes, not the large ones
    assert all(p["h_norm2"] == 0 for p in r["strong"].per_class if p["collapses"])


def test_examples_run_as_scripts():
    """The shortest one end to end as a user runs it (python examples/X.py)."""
    out = subprocess.run([sys.executable, str(EXAMPLES / "nc_metrics_on_arrays.py")], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "closed form" in out.stdout and "ncc_mismatch" in out.stdout


def test_probe_example_matches_metrics_on_hand_computed_features():
    from nclab.collapse import hierarchy_metrics_from_arrays

    out = _load("probe_any_model").main()
    res, net, ds = out["result"], out["net"], out["dataset"]
    import torch

    with torch.no_grad():
        a2 = net.a2(net.l2(net.a1(net.l1(ds.train.x))))  # the layer written out by hand
    ref = hierarchy_metrics_from_arrays(a2.double(), ds.train.y, ds.hierarchy)
    got = res.metrics["train"]["a2"]
    assert got["coarse"]["nc1"] == pytest.approx(ref["coarse"]["nc1"], rel=1e-6)
    assert got["fine_within_coarse"]["mean"] == pytest.approx(ref["fine_within_coarse"]["mean"], rel=1e-6)
    # trained on the coarse labels: the coarse classes collapse far more than the fine ones
    assert got["coarse"]["nc1"] < 0.2 * got["fine"]["nc1"]
    assert 0.0 <= res.recovery["a1"]["test_acc"] <= 1.0 and res.recovery["a1"]["options"]["routing"] == "predicted"
