"""Trainer callback: fine-label recovery accuracy at chosen epochs (next to NC1 in metrics.jsonl).

Keys: ``recovery.test_acc`` (predicted routing), ``recovery.oracle_test_acc`` (true-coarse routing),
``recovery.train_acc`` (clustering accuracy on the fit set), ``recovery.time_s``; under ``data.label_noise``
also ``recovery.train_acc_clean`` and ``recovery.train_acc_corrupted_true_routing``
(:mod:`nclab.finegrain.noisy`). Config::

    recovery: {normalize: whiten, whiten_var: 0.95}        # the run's settings (nclab.contracts.recovery)
    callbacks:
      recovery: {epochs: log, log_points: 8, max_train: 10000}

The callback clusters with the run's ``recovery`` settings, so its curve and the final recovery agree; a
setting given here as well overrides the run's for the curve only (e.g. a cheaper ``max_train``), and the
report names it. ``epochs``: ``"log"`` (about ``log_points`` log-spaced epochs incl. first and last),
``"every"`` / ``"all"``, or a list of 1-based epochs. Uses no global RNG.
"""

from __future__ import annotations

import time
from typing import Sequence

import torch

from nclab.contracts.recovery import RecoverySpec
from nclab.train.callbacks import Callback, log_epochs, parse_epochs


class RecoveryCallback(Callback):
    def __init__(self, epochs: str | Sequence[int] = "log", log_points: int = 8, tap: str | None = None,
                 **overrides):
        self.epochs = parse_epochs(epochs, "recovery.epochs", ("log", "every", "all"))
        self.log_points = int(log_points)
        self.tap = tap
        RecoverySpec.from_mapping(overrides, "callbacks.recovery")  # names a bad key/value at construction
        self.overrides = dict(overrides)  # applied over the run's recovery settings when measuring
        self.last: dict | None = None

    def spec(self, trainer) -> RecoverySpec:
        """The run's recovery settings (config ``recovery``) with this callback's overrides."""
        return RecoverySpec.of_config(trainer.cfg).replace_checked(self.overrides, "callbacks.recovery")

    def should_log(self, trainer, epoch: int) -> bool:
        if self.epochs in ("every", "all"):
            return True
        if self.epochs == "log":
            return epoch in set(log_epochs(int(trainer.cfg.optim.epochs), self.log_points))
        return epoch in self.epochs

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        if self.should_log(trainer, epoch):
            logs.update(self.compute(trainer))

    def compute(self, trainer) -> dict[str, float]:
        from nclab.finegrain.pipeline import recover_trainer

        t0 = time.perf_counter()
        dev = torch.device(trainer.device)
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            rep = recover_trainer(trainer, tap=self.tap, spec=self.spec(trainer))
        self.last = rep
        out = {"recovery.test_acc": rep["test_acc"], "recovery.oracle_test_acc": rep["oracle_test_acc"],
               "recovery.train_acc": rep["train_acc"]}
        noise = rep.get("label_noise")
        if noise:  # data.label_noise: the fit set's clean rows, and the corrupted ones sent to their true superclass
            out["recovery.train_acc_clean"] = noise["recovery_train_acc_clean"]
            out["recovery.train_acc_corrupted_true_routing"] = noise["recovery_train_acc_corrupted_true_routing"]
        out["recovery.time_s"] = time.perf_counter() - t0
        return out
