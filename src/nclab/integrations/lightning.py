"""``NCLightningCallback``: neural-collapse metrics in a Lightning ``Trainer`` (``pip install nclab[lightning]``).

    cb = NCLightningCallback(val_loader, layers=["backbone.layer4", "fc:input"], classifier="fc",
                             hierarchy="adjacent:5", num_classes=10, every_n_epochs=1)
    lightning.pytorch.Trainer(callbacks=[cb]).fit(module)

At the end of every scheduled validation epoch (``on="validation"``, the default; the sanity check is skipped)
or training epoch (``on="train"``) it measures ``dataloader`` with a :class:`~nclab.track.CollapseTracker`
on the module's device and logs the ``nc.*`` keys through ``pl_module.log`` (float64, epoch-level), so every
Lightning logger receives them; ``run_dir`` also writes an nclab run directory. Epochs are 1-based
(``trainer.current_epoch + 1``). Under DDP each rank measures the loader it is given (rank-local statistics,
with a warning); give every rank the same unsharded loader for whole-set numbers.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch

from nclab.utils.extras import require
from nclab.integrations.track import CollapseTracker
from nclab.utils.errors import NclabError

_pl = require("lightning")
from lightning.pytorch import Callback  # noqa: E402


class NCLightningCallback(Callback):
    """Measure NC metrics of ``layers`` on ``dataloader`` at scheduled epochs; keyword arguments as for
    :class:`~nclab.track.CollapseTracker` (``hierarchy``, ``num_classes``, ``metrics``, ``every_n_epochs``,
    ``epochs``, ``classifier``, ``recover``, ``split``, ``run_dir``, ...). ``on``: ``"validation"`` or
    ``"train"``. ``tracker`` is built at ``setup`` (the module is known then)."""

    def __init__(self, dataloader: Iterable, layers, *, on: str = "validation", **tracker_kwargs: Any):
        if on not in ("validation", "train"):
            raise NclabError(f"on must be 'validation' or 'train', got {on!r}")
        if "loader" in tracker_kwargs or "steps" in tracker_kwargs:
            raise NclabError("NCLightningCallback measures at epoch ends: pass the loader as dataloader and "
                             "the schedule as every_n_epochs= or epochs=")
        self.dataloader, self.layers, self.on = dataloader, layers, on
        self.kwargs = tracker_kwargs
        self.tracker: CollapseTracker | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.tracker is None:
            self.tracker = CollapseTracker(pl_module, self.layers, loader=self.dataloader, device=pl_module.device,
                                           **self.kwargs)

    def _measure(self, trainer, pl_module) -> None:
        tr = self.tracker
        epoch = int(trainer.current_epoch) + 1
        if tr is None or not tr.should_measure(epoch=epoch):
            return
        tr.device = torch.device(pl_module.device)
        keys = tr.measure()
        for k, v in keys.items():
            if v is not None:
                pl_module.log(k, torch.tensor(v, dtype=torch.float64), on_step=False, on_epoch=True,
                              batch_size=1, sync_dist=False)
        tr.log(keys, epoch=epoch, step=int(trainer.global_step))

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self.on == "validation" and not trainer.sanity_checking:
            self._measure(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.on == "train":
            self._measure(trainer, pl_module)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        if self.tracker is not None and stage == "fit":
            self.tracker.close()


__all__ = ["NCLightningCallback"]
