"""Trainer callback: fine-label recovery accuracy at chosen epochs (next to NC1 in metrics.jsonl).

Keys: ``recovery.test_acc`` (predicted routing), ``recovery.oracle_test_acc`` (true-coarse routing),
``recovery.train_acc`` (clustering accuracy on the fit set), ``recovery.time_s``. Config::

    callbacks:
      recovery: {epochs: log, log_points: 8, max_train: 10000, normalize: whiten}

``epochs``: ``"log"`` (about ``log_points`` log-spaced epochs incl. first and last), ``"every"`` / ``"all"``,
or a list of 1-based epochs. ``max_train``: cluster a fixed random subset of the train split (own RNG) to
bound the cost. Other keyword arguments go to :class:`FineLabelRecovery`. Uses no global RNG.
"""

from __future__ import annotations

import time
from typing import Sequence

import torch

from nclab.finegrain.recovery import METHODS, NORMALIZATIONS
from nclab.train.callbacks import Callback, log_epochs, parse_epochs
from nclab.utils.errors import NclabError


class RecoveryCallback(Callback):
    def __init__(self, epochs: str | Sequence[int] = "log", log_points: int = 8, max_train: int | None = None,
                 tap: str | None = None, seed: int = 0, normalize: str = "whiten", method: str = "kmeans",
                 n_init: int = 10, **options):
        epochs = parse_epochs(epochs, "recovery.epochs", ("log", "every", "all"))
        if normalize not in NORMALIZATIONS:
            raise NclabError(f"recovery.normalize must be one of {', '.join(NORMALIZATIONS)}, got {normalize!r}")
        if method not in METHODS:
            raise NclabError(f"recovery.method must be one of {', '.join(METHODS)}, got {method!r}")
        self.epochs = epochs
        self.log_points = int(log_points)
        self.max_train = None if max_train is None else int(max_train)
        self.tap = tap
        self.seed = int(seed)
        self.options = {"normalize": normalize, "method": method, "n_init": int(n_init), **options}
        self.last: dict | None = None

    def should_log(self, trainer, epoch: int) -> bool:
        if self.epochs in ("every", "all"):
            return True
        if self.epochs == "log":
            return epoch in set(log_epochs(int(trainer.cfg["optim"]["epochs"]), self.log_points))
        return epoch in self.epochs

    def on_epoch_end(self, trainer, epoch: int, logs: dict) -> None:
        if self.should_log(trainer, epoch):
            logs.update(self.compute(trainer))

    def compute(self, trainer) -> dict[str, float]:
        from nclab.finegrain.pipeline import recover_trainer

        t0 = time.perf_counter()
        dev = torch.device(trainer.device)
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            rep = recover_trainer(trainer, tap=self.tap, max_train=self.max_train, seed=self.seed, **self.options)
        self.last = rep
        return {"recovery.test_acc": rep["test_acc"], "recovery.oracle_test_acc": rep["oracle_test_acc"],
                "recovery.train_acc": rep["train_acc"], "recovery.time_s": time.perf_counter() - t0}
