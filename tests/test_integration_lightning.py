"""NCLightningCallback in a real Lightning Trainer (CPU, 2 epochs, tiny synthetic set): the NC1 that Lightning's
CSV logger received equals metrics_from_arrays on features extracted by hand from the saved checkpoint."""

from __future__ import annotations

import csv
import json
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

pl = pytest.importorskip("lightning.pytorch", reason="lightning not installed (pip install nclab[lightning])")

from integration_utils import K_FINE, hand_features, toy_data, toy_model  # noqa: E402
from nclab.collapse import metrics_from_arrays  # noqa: E402
from nclab.integrations import NCLightningCallback  # noqa: E402

torch.set_num_threads(1)


class Module(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = toy_model()

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, i):
        x, y = batch
        return torch.nn.functional.cross_entropy(self(x), y)

    def validation_step(self, batch, i):
        x, y = batch
        self.log("val_loss", torch.nn.functional.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def _fit(tmp_path, **cb_kwargs):
    pl.seed_everything(0, verbose=False)
    x, y = toy_data(192)
    train = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
    val = DataLoader(TensorDataset(x, y), batch_size=64)
    cb = NCLightningCallback(val, ["net.0", "net.4:input"], num_classes=K_FINE, classifier="net.4", **cb_kwargs)
    logger = pl.loggers.CSVLogger(tmp_path, name="lg", version=0)
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=logger, callbacks=[cb],
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         num_sanity_val_steps=1)
    module = Module()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, train, val)
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    return trainer, cb, val, logger


def test_lightning_logged_nc1_equals_hand_extracted(tmp_path):
    trainer, cb, val, logger = _fit(tmp_path, run_dir=tmp_path / "nc_run")
    rows = list(csv.DictReader(open(logger.log_dir + "/metrics.csv")))
    nc_rows = [r for r in rows if r.get("nc.val.fine.nc1")]
    assert [int(r["epoch"]) for r in nc_rows] == [0, 1]  # Lightning's 0-based epoch: both epochs, no sanity run
    # the model as saved in the checkpoint, features by a plain hook
    fresh = Module()
    state = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    fresh.load_state_dict(state)
    H, y = hand_features(fresh, fresh.net[4], val, use_input=True)
    W, b = fresh.net[4].weight.detach().double(), fresh.net[4].bias.detach().double()
    ref = metrics_from_arrays(H.astype(np.float64), y, W, b, num_classes=K_FINE)
    assert float(nc_rows[-1]["nc.val.fine.nc1"]) == pytest.approx(ref["nc1"], rel=1e-8)
    assert float(nc_rows[-1]["nc.val.fine.self_duality"]) == pytest.approx(ref["self_duality"], rel=1e-8)
    H0, _ = hand_features(fresh, fresh.net[0], val)
    ref0 = metrics_from_arrays(H0.astype(np.float64), y, num_classes=K_FINE)
    assert float(nc_rows[-1]["nc.val.fine.net.0.nc1"]) == pytest.approx(ref0["nc1"], rel=1e-8)
    # the same numbers in the nclab run directory, with the Lightning global step
    lines = [json.loads(s) for s in (tmp_path / "nc_run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2] and lines[-1]["step"] == trainer.global_step
    assert lines[-1]["nc.val.fine.nc1"] == pytest.approx(ref["nc1"], rel=1e-8)
    assert json.loads((tmp_path / "nc_run" / "status.json").read_text())["status"] == "complete"


def test_lightning_train_epoch_end_and_schedule(tmp_path):
    _, cb, _, logger = _fit(tmp_path, on="train", epochs=[2], metrics=["nc1"])
    rows = list(csv.DictReader(open(logger.log_dir + "/metrics.csv")))
    nc = [r for r in rows if r.get("nc.val.fine.nc1")]
    assert [int(r["epoch"]) for r in nc] == [1]
    assert "nc.val.fine.cdnv" not in rows[0]
