"""Hand-built run directories following the run-directory contract (docs/architecture.md), for report tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from nclab.utils.io import atomic_save_npy

K, M, D = 2, 3, 8  # coarse classes, fine per coarse, feature dim
F2C = [f // M for f in range(K * M)]
FINE_NAMES = [f"f{f}<b>" for f in range(K * M)]  # markup in names: the report must escape it


def metrics_rows(epochs: int, nan_from: int | None = None) -> list[dict]:
    rows = []
    for e in range(1, epochs + 1):
        r = {"epoch": e, "lr": 0.1 / e, "train_loss": 1 / e, "test_loss": 1.2 / e, "train_acc": 1 - 0.5 / e,
             "test_acc": 1 - 0.6 / e, "epoch_time_s": 1.5, "time_s": 1.5 * e,
             "nc.train.coarse.nc1": 10 ** (-e / 2), "nc.test.coarse.nc1": 2 * 10 ** (-e / 2),
             "nc.train.coarse.etf_error_means": 0.5 / e, "nc.train.coarse.self_duality": 0.3 / e,
             "nc.train.coarse.ncc_mismatch": 0.1 / e, "nc.train.coarse.n_samples": 300.0,
             "nc.train.coarse.trace_within": 2.0 / e,
             "nc.train.fine_within_coarse.mean": 1.0 + e, "nc.train.fine_within_coarse.0": 0.5 + e,
             "nc.train.fine_within_coarse.1": 1.5 + e,
             "nc.train.coarse.head.0.nc1": 2.0 / e, "nc.train.coarse.head.1.nc1": 1.0 / e, "nc.train.time_s": 0.1,
             "recovery.test_acc": 0.5 + 0.05 * e, "recovery.oracle_test_acc": 0.55 + 0.05 * e}
        if nan_from is not None and e >= nan_from:
            r["train_loss"] = None  # how flatten() writes a non-finite value
        rows.append(r)
    return rows


def results(grid: bool = False) -> dict:
    conf = np.diag(np.full(K * M, 15))
    conf[0, 1], conf[0, 4] = 3, 2
    res = {
        "experiment": "hand-built <test>",
        "paper": {"fine_test_acc": 0.93},
        "coarse_test_acc": 0.91,
        "recovery": {"test_acc": 0.8, "oracle_test_acc": 0.85, "train_acc": 0.9, "ari": 0.6, "nmi": 0.7,
                     "per_superclass": [{"coarse": c, "name": "AB"[c], "fine": list(range(c * M, (c + 1) * M)),
                                         "train_acc": 0.9, "test_acc": 0.8 - 0.1 * c} for c in range(K)],
                     "confusion": conf.tolist(), "fine_names": FINE_NAMES},
        "baselines": {"raw_pixels": {"test_acc": 0.4}, "random_init": {"test_acc": 0.45},
                      "fine_trained": {"test_acc": 0.95}},
        "tables": [{"title": "Geometry <measured>", "columns": ["layer", "nc1", "predicted nc1"],
                    "rows": [["head.0", 0.1, 0.09], ["head.1", 0.01, 0.011]]}],
        "wall_time_s": 12.0,  # an experiment's last results write adds it
    }
    if grid:
        cells = [{"lr": lr, "wd": wd, "run": f"cells/lr{lr}_wd{wd}", "recovery_acc": 0.5 + lr + wd * 100,
                  "coarse_acc": 0.9, "nc1": 0.1 * lr + 1e-3} for lr in (0.01, 0.1) for wd in (0.0, 5e-4)]
        res["grid"] = {"axes": {"lr": [0.01, 0.1], "wd": [0.0, 5e-4]}, "cells": cells}
        res["subruns"] = [c["run"] for c in cells]
    return res


def make_run(d: str | Path, *, status: str = "complete", epochs: int = 6, nan_from: int | None = None,
             grid: bool = False, features: bool = True, with_results: bool = True) -> Path:
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    cfg = {"name": d.name, "seed": 0, "data": {"source": "synthetic:coarse=2", "hierarchy": None, "labels": "coarse"},
           "model": {"name": "mlp"}, "optim": {"lr": 0.1, "epochs": epochs}}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    (d / "run.json").write_text(json.dumps({
        "argv": ["nclab", "train", "--config", "x.yaml"], "nclab_version": "0.1.0", "torch_version": "2.13.0",
        "python_version": "3.11", "git_commit": "abc123", "device": "cpu", "dataset": "synthetic",
        "source": "synthetic:coarse=2", "checksum": "deadbeef", "labels": "coarse",
        "hierarchy": {"spec": "synthetic", "fine_to_coarse": F2C, "fine_names": FINE_NAMES,
                      "coarse_names": ["A", "B"]}}))
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics_rows(epochs, nan_from)))
    msg = {"stopped_nan": "training loss became nan at epoch 5, step 3; last good checkpoint: last.pt (epoch 4)",
           "interrupted": "interrupted; resume from epoch 4 with --resume"}.get(status, "")
    (d / "status.json").write_text(json.dumps({"status": status, "message": msg, "epoch": 4,
                                               "wall_time_s": 9.0, "resumed": False}))
    (d / "checkpoints").mkdir(exist_ok=True)
    (d / "checkpoints" / "last.pt").write_bytes(b"")
    if features:
        rng = np.random.default_rng(0)
        means = rng.normal(size=(K * M, D)) * 3
        for sp, n in (("train", 300), ("test", 120)):
            yf = rng.integers(0, K * M, n)
            x = (means[yf] + rng.normal(size=(n, D))).astype(np.float32)
            atomic_save_npy(d / "features" / f"{sp}_features.npy", x)
            atomic_save_npy(d / "features" / f"{sp}_fine.npy", yf)
            atomic_save_npy(d / "features" / f"{sp}_coarse.npy", np.array(F2C)[yf])
        cents = {}
        for c in range(K):
            cents[f"c{c}"] = means[c * M:(c + 1) * M].astype(np.float32)
            cents[f"c{c}_fine"] = np.arange(c * M, (c + 1) * M)
        np.savez(d / "features" / "centroids.npz", **cents)
    if with_results:
        res = results(grid)
        (d / "results.json").write_text(json.dumps(res))
        for sub in res.get("subruns", []):
            make_run(d / sub, epochs=3, features=False)
    return d


# ---- the run folders kept under docs/results (older files, written before run.json/results.json had versions) ----
DOCS_RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


def docs_result_dirs() -> list[Path]:
    """Every run folder under docs/results (an experiment's, with results.json, or a plain training run's)."""
    return sorted(p for p in DOCS_RESULTS.iterdir() if p.is_dir())


def test_nclab_report_renders_every_docs_results_folder(tmp_path):
    import shutil

    from nclab.cli import main

    dirs = docs_result_dirs()
    assert len(dirs) >= 10
    for d in dirs:
        run = shutil.copytree(d, tmp_path / d.name)  # the report writes report.html and figures/ into the folder
        assert main(["report", str(run), "--quiet"]) == 0, d.name
        html = (run / "report.html").read_text()
        assert '<section id="results">' in html or '<section id="grid">' in html, d.name  # sweeps: the grid
        assert "could not be drawn" not in html and "schema_version" not in html.split("Run info")[0], d.name
