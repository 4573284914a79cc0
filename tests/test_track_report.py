"""`nclab report` / `nclab compare` on run directories written by CollapseTracker from a plain PyTorch loop,
and the report opened in headless Chromium (as for the other reports)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from integration_utils import K_COARSE, K_FINE, toy_data, toy_model
from nclab.cli import main
from nclab.track import CollapseTracker

torch.set_num_threads(1)
F2C = np.arange(K_FINE) % K_COARSE


def user_loop(run: Path, epochs: int = 4, seed: int = 0) -> Path:
    """A user's own loop on coarse labels, tracked at every epoch with the fine hierarchy."""
    model = toy_model(seed, out=K_COARSE)
    x, y = toy_data(180, seed)
    loader = DataLoader(TensorDataset(x, y), batch_size=60)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    with CollapseTracker(model, ["0", "4:input"], hierarchy=F2C, loader=loader, classifier="4", recover=True,
                         split="train", run_dir=run, config={"lr": 0.05, "epochs": epochs}) as tr:
        for e in range(1, epochs + 1):
            total = 0.0
            for xb, yb in loader:
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(xb), torch.as_tensor(F2C)[yb])
                loss.backward()
                opt.step()
                total += float(loss.detach())
            tr.track(epoch=e, logs={"train_loss": total / len(loader)})
    return run


def test_nclab_report_and_compare_on_a_tracker_run(tmp_path, capsys):
    a, b = user_loop(tmp_path / "a"), user_loop(tmp_path / "b", epochs=3, seed=1)
    assert main(["report", str(a), "--quiet"]) == 0
    html = (a / "report.html").read_text()
    assert "Neural collapse (NC1–NC4) of the last-layer features, coarse labels" in html
    for section in ("Fine-label collapse within each coarse class", "Per-layer metrics, fine labels",
                    "Fine-label recovery from the features during training", "Training: loss"):
        assert section in html
    figs = list((a / "figures").glob("*.png"))
    assert figs and "nc.train.coarse.nc1" in (a / "metrics.jsonl").read_text()
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "cmp"), "--json", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert Path(out["report"]).is_file()


@pytest.mark.browser
def test_tracker_report_loads_cleanly_in_chromium(tmp_path):
    from test_report_browser import CHROMIUM, _check

    if CHROMIUM is None:
        pytest.skip("chromium not installed (Debian package `chromium`; `make test` installs it where it can)")
    from nclab.report import write_report

    run = user_loop(tmp_path / "loop")
    page = _check(write_report(run, strict=True), tmp_path)
    assert page["title"].startswith("nclab report")
    assert len(page["imgs"]) == len(list((run / "figures").glob("*.png")))
