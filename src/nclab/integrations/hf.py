"""``NCTrainerCallback``: neural-collapse metrics in a Hugging Face ``Trainer`` (``pip install nclab[hf]``).

    cb = NCTrainerCallback(eval_loader, layers=["bert.encoder.layer.1", "classifier:input"],
                           classifier="classifier", num_classes=4)
    trainer = Trainer(model=model, args=args, train_dataset=ds)
    cb.attach(trainer)              # adds the callback and gives it the trainer, whose log() it uses
    trainer.train()

At the end of every scheduled epoch (``on="epoch"``, 1-based ``round(state.epoch)``) or after each
evaluation (``on="evaluate"``) it measures ``dataloader`` (dict batches with a ``labels`` key, or ``(x, y)``)
with a :class:`~nclab.track.CollapseTracker` and calls ``trainer.log`` with the ``nc.*`` keys, so they land in
``state.log_history`` and reach every ``report_to`` integration; ``run_dir`` also writes an nclab run directory.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch

from nclab.integrations.track import CollapseTracker
from nclab.utils.errors import NclabError
from nclab.utils.extras import require

_tf = require("transformers")
from transformers import TrainerCallback  # noqa: E402


class NCTrainerCallback(TrainerCallback):
    """Measure NC metrics of ``layers`` on ``dataloader``; keyword arguments as for
    :class:`~nclab.track.CollapseTracker`. ``on``: ``"epoch"`` or ``"evaluate"``."""

    def __init__(self, dataloader: Iterable, layers, *, on: str = "epoch", **tracker_kwargs: Any):
        if on not in ("epoch", "evaluate"):
            raise NclabError(f"on must be 'epoch' or 'evaluate', got {on!r}")
        if "loader" in tracker_kwargs or "steps" in tracker_kwargs:
            raise NclabError("NCTrainerCallback measures at epoch ends: pass the loader as dataloader and "
                             "the schedule as every_n_epochs= or epochs=")
        self.dataloader, self.layers, self.on, self.kwargs = dataloader, layers, on, tracker_kwargs
        self.trainer = None
        self.tracker: CollapseTracker | None = None

    def attach(self, trainer):
        """Register with ``trainer`` (``trainer.add_callback``) and keep it for ``trainer.log``; returns it."""
        if self not in trainer.callback_handler.callbacks:
            trainer.add_callback(self)
        self.trainer = trainer
        return trainer

    def on_train_begin(self, args, state, control, model=None, **kwargs) -> None:
        if self.trainer is None:
            raise NclabError("NCTrainerCallback is not attached to its Trainer; call cb.attach(trainer) "
                             "instead of passing it in callbacks=[...]")
        if self.tracker is None:
            self.tracker = CollapseTracker(model, self.layers, loader=self.dataloader, **self.kwargs)

    def _measure(self, state, model) -> None:
        tr = self.tracker
        epoch = int(round(state.epoch or 0))
        if tr is None or not tr.should_measure(epoch=epoch):
            return
        p = next(iter(model.parameters()), None)
        tr.model = model
        tr.device = p.device if p is not None else torch.device("cpu")
        keys = tr.measure()
        self.trainer.log({k: v for k, v in keys.items() if v is not None})
        tr.log(keys, epoch=epoch, step=int(state.global_step))

    def on_epoch_end(self, args, state, control, model=None, **kwargs) -> None:
        if self.on == "epoch":
            self._measure(state, model)

    def on_evaluate(self, args, state, control, model=None, **kwargs) -> None:
        if self.on == "evaluate":
            self._measure(state, model)

    def on_train_end(self, args, state, control, **kwargs) -> None:
        if self.tracker is not None:
            self.tracker.close()


__all__ = ["NCTrainerCallback"]
