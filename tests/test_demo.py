"""`nclab demo` end to end: no network, the printed table and report, and the phenomenon it claims."""

from __future__ import annotations

import json
import re
import socket

import numpy as np
import pytest

from test_report import check_images, section_ids


def test_demo_config_is_valid_and_coarse():
    from nclab.demo import demo_config

    cfg = demo_config(epochs=3, seed=1)
    assert cfg["data"] == {**cfg["data"], "source": "digits", "hierarchy": "mod:2", "labels": "coarse"}
    assert cfg["optim"]["epochs"] == 3 and cfg["seed"] == 1
    assert set(cfg["callbacks"]) == {"nc_metrics", "recovery"}


@pytest.mark.slow
def test_demo_end_to_end(tmp_path, monkeypatch, capsys):
    from nclab.cli import main
    from nclab.data import load_dataset
    from nclab.finegrain.evaluate import evaluate_recovery, flatten_pixels

    def no_network(*args, **kwargs):
        raise AssertionError("the demo tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert printed.strip().endswith(f"report: {out / 'report.html'}")
    assert re.search(r"predicted coarse routing\s+\d+\.\d\d %", printed)
    assert "raw inputs" in printed and "random-init" in printed and "trained on the fine labels" in printed

    res = json.loads((out / "results.json").read_text())
    rec, base = res["recovery"], res["baselines"]
    # the phenomenon: coarse labels learned, fine labels recoverable far above chance (1/5 per superclass)
    # and above the raw-input baseline measured with the same protocol and routing
    assert res["coarse_test_acc"] > 0.95
    assert rec["test_acc"] > 0.8 and rec["oracle_test_acc"] >= rec["test_acc"] - 1e-12
    assert rec["test_acc"] > base["raw_pixels"]["test_acc"] + 0.03
    assert base["fine_trained"]["test_acc"] > rec["test_acc"]
    # coarse NC1 falls over training (read from metrics.jsonl, not from the demo's own table)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    nc1 = [r["nc.train.coarse.nc1"] for r in rows if r.get("nc.train.coarse.nc1") is not None]
    assert len(nc1) >= 5 and nc1[-1] < 0.8 * nc1[0]
    assert rows[-1]["recovery.test_acc"] == pytest.approx(rec["test_acc"])  # callback = final protocol
    sens = next(t for t in res["tables"] if "normalisation" in t["title"])
    assert [r[0] for r in sens["rows"]] == ["none", "l2", "center+l2 (used)", "whiten"]
    used = sens["rows"][2]
    assert used[1:] == pytest.approx([rec["test_acc"], base["raw_pixels"]["test_acc"], base["random_init"]["test_acc"]])

    # recovery recomputed from the saved arrays gives the reported number
    f = {k: np.load(out / "features" / f"{k}.npy") for k in
         ("train_features", "train_coarse", "train_fine", "test_features", "test_coarse_pred", "test_fine")}
    again = evaluate_recovery(f["train_features"], f["train_coarse"], f["train_fine"], f["test_features"],
                              f["test_coarse_pred"], f["test_fine"], np.array([0, 1] * 5), seed=0,
                              normalize="center+l2")
    assert again["test_acc"] == pytest.approx(rec["test_acc"])
    # and the raw-pixel baseline, recomputed independently of the demo's wiring
    ds = load_dataset("digits")
    raw = evaluate_recovery(flatten_pixels(ds.train.x), ds.train.y.numpy() % 2, ds.train.y.numpy(),
                            flatten_pixels(ds.test.x), f["test_coarse_pred"], ds.test.y.numpy(),
                            np.array([0, 1] * 5), seed=0, normalize="center+l2")
    assert raw["test_acc"] == pytest.approx(base["raw_pixels"]["test_acc"])

    text = (out / "report.html").read_text()
    assert section_ids(text) == ["results", "curves", "superclasses", "tables", "subruns", "details"]
    assert check_images(out / "report.html") >= 6
    assert (out / "baseline" / "report.html").exists()
