"""`nclab demo` end to end: no network, the printed table and report, and the effect it claims."""

from __future__ import annotations

import json
import re
import socket

import numpy as np
import pytest

from test_report import check_images, section_ids


def test_demo_config_is_cifar10_coarse_and_falls_back_to_digits(cifar_jpeg):
    from nclab.experiments.demo import demo_config

    cfg = demo_config(epochs=3, seed=1, data=f"imagefolder:{cifar_jpeg}")
    data = cfg.data.to_dict()
    assert data == {**data, "source": f"imagefolder:{cifar_jpeg}", "hierarchy": "mod:5",
                    "labels": "coarse", "subsample": [1000] * 10}
    assert cfg.optim.epochs == 3 and cfg.seed == 1
    assert set(cfg.callbacks) == {"nc_metrics", "recovery"}
    assert cfg.callbacks["recovery"]["epochs"] == [3]  # the curve's points stay inside a shorter run
    digits = demo_config(data="digits")
    assert digits.data.source == "digits" and digits.recovery.normalize == "center+l2"


@pytest.mark.slow
def test_demo_end_to_end(cifar_jpeg, tmp_path, monkeypatch, capsys):
    from nclab.cli import main
    from nclab.finegrain.evaluate import evaluate_recovery

    def no_network(*args, **kwargs):
        raise AssertionError("the demo tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--data", f"imagefolder:{cifar_jpeg}", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert printed.strip().endswith(f"report: {out / 'report.html'}")
    m = re.search(r"Fine-label recovery, test — predicted coarse routing\s+(\d+\.\d\d) %", printed)
    assert m and "raw inputs" in printed and "random-init" in printed and "trained on the fine labels" in printed

    res = json.loads((out / "results.json").read_text())
    rec, base = res["recovery"], res["baselines"]
    # the effect: features trained on 5 coarse labels recover the 10 fine ones clearly better than raw pixels and
    # than a random network, with the same clustering protocol and the same (predicted) routing
    assert f"{100 * rec['test_acc']:.2f}" == m.group(1)
    assert rec["test_acc"] > base["raw_pixels"]["test_acc"] + 0.05
    assert rec["test_acc"] > base["random_init"]["test_acc"] + 0.05
    assert rec["oracle_test_acc"] >= rec["test_acc"] - 1e-12
    assert res["coarse_test_acc"] > 0.6 and base["fine_trained"]["test_acc"] > 0.5
    # coarse NC1 falls over training (read from metrics.jsonl, not from the demo's own table)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    nc1 = [r["nc.train.coarse.nc1"] for r in rows if r.get("nc.train.coarse.nc1") is not None]
    assert len(nc1) >= 5 and nc1[-1] < 0.8 * nc1[0]
    assert rows[-1]["recovery.test_acc"] == rec["test_acc"]  # callback = final protocol

    # one answer per run: `nclab recover --run` reads the run's recorded settings and gives the same number
    assert main(["recover", "--run", str(out), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["test_acc"] == rec["test_acc"] and again["settings"]["changed"] == []
    # and recovery recomputed from the saved arrays, outside the demo's wiring, gives it too
    f = {k: np.load(out / "features" / f"{k}.npy") for k in
         ("train_features", "train_coarse", "train_fine", "test_features", "test_coarse_pred", "test_fine")}
    direct = evaluate_recovery(f["train_features"], f["train_coarse"], f["train_fine"], f["test_features"],
                               f["test_coarse_pred"], f["test_fine"], np.arange(10) % 5, **{
                                   k: v for k, v in rec["options"].items()
                                   if k in ("method", "normalize", "whiten_var", "guard", "clustering", "n_init",
                                            "seed")})
    assert direct["test_acc"] == rec["test_acc"]

    text = (out / "report.html").read_text()
    assert section_ids(text) == ["results", "curves", "superclasses", "tables", "subruns", "details"]
    assert check_images(out / "report.html") >= 6
    assert (out / "baseline" / "report.html").exists()
