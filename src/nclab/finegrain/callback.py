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
``"every"`` / ``"all"``, or a list of 1-based epochs. Uses no global RNG. Under torchrun each rank extracts
the features of its shard, rank 0 alone clusters and every rank logs its numbers (docs/distributed.md).
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
        """The recovery keys of this epoch. One process: :func:`~nclab.finegrain.pipeline.recover_trainer`. Under
        torchrun every rank extracts the features of its rows of each batch, rank 0 gathers them (storage order)
        and alone clusters; its report and keys are broadcast, so every rank logs the same row."""
        from nclab.finegrain.pipeline import recover_trainer

        t0 = time.perf_counter()
        dev = torch.device(trainer.device)
        spec = self.spec(trainer)
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            if getattr(trainer, "distributed", False):
                rep, out = self._compute_sharded(trainer, spec, t0)
                self.last = rep
                return out
            rep = recover_trainer(trainer, tap=self.tap, spec=spec)
        self.last = rep
        return self._keys(rep, t0)

    def _compute_sharded(self, trainer, spec: RecoverySpec, t0: float) -> tuple[dict, dict[str, float]]:
        from nclab.finegrain.pipeline import recover_from_features, recovery_features
        from nclab.train import distributed as ddp

        feats = recovery_features(trainer, spec, tap=self.tap, shard=True)  # all rows on rank 0, None elsewhere

        def cluster() -> tuple[dict, dict[str, float]]:  # rank 0 only; an error there stops every rank
            rep = recover_from_features(trainer, spec, feats)
            return rep, self._keys(rep, t0)

        return ddp.main_first(cluster)

    @staticmethod
    def _keys(rep: dict, t0: float) -> dict[str, float]:
        out = {"recovery.test_acc": rep["test_acc"], "recovery.oracle_test_acc": rep["oracle_test_acc"],
               "recovery.train_acc": rep["train_acc"]}
        noise = rep.get("label_noise")
        if noise:  # data.label_noise: the fit set's clean rows, and the corrupted ones sent to their true superclass
            out["recovery.train_acc_clean"] = noise["recovery_train_acc_clean"]
            out["recovery.train_acc_corrupted_true_routing"] = noise["recovery_train_acc_corrupted_true_routing"]
        out["recovery.time_s"] = time.perf_counter() - t0
        return out
