"""Training tricks the trainer composes, each a few named lines with its own state.

- :class:`Lookahead` (``optim.lookahead_every``): every N steps the weights jump to a moving average of
  themselves (airbench94's lookahead).
- :class:`StemBiasFreeze` (``optim.stem_bias_epochs``): fastnet's whitening stem bias trains for N epochs, then is
  frozen (airbench's progressive freezing).
- :class:`TimeSlice` (``train.time_limit_s``): would one more epoch pass the time limit?

Each is a pure function of (step, epoch) plus a checkpointed state, so a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import time

import torch

from nclab.utils.errors import NclabError


class Lookahead:
    """Every ``every`` steps (and at the last step) the moving average a of every float tensor of the model state
    (weights and BatchNorm statistics) takes a step a <- d*a + (1 - d)*w towards the weights w, and the weights jump
    to it: w <- a. The decay ramps as d = decay*(t/T)^3 over the T steps of training, so early training follows the
    raw weights and late training averages them. ``average`` (None before the first sync) is checkpointed."""

    def __init__(self, every: int | None, decay: float, total_steps: int):
        self.every, self.decay, self.total = every, decay, total_steps
        self.average: list[torch.Tensor] | None = None

    def after_step(self, model: torch.nn.Module, step: int) -> None:
        """``step``: optimiser steps taken so far (1-based)."""
        if not self.every or (step % self.every and step != self.total):
            return
        live = [v for v in model.state_dict().values() if v.is_floating_point()]
        with torch.no_grad():
            if self.average is None:
                self.average = [v.detach().clone() for v in live]
            d = self.decay * (step / self.total) ** 3
            for a, w in zip(self.average, live):
                a.lerp_(w, 1 - d)
                w.copy_(a)

    def load(self, tensors: list[torch.Tensor] | None, device: torch.device) -> None:
        self.average = None if tensors is None else [t.to(device) for t in tensors]


def stem_bias(model: torch.nn.Module) -> torch.nn.Parameter | None:
    """fastnet's whitened stem's bias, or None for a model without one."""
    stem = getattr(getattr(model, "backbone", None), "stem", None)
    return getattr(stem, "bias", None) if getattr(stem, "whiten", False) else None


class StemBiasFreeze:
    """The whitening stem's bias trains in epochs 0..N-1 and is frozen from epoch N on (a pure function of the
    epoch, so a resumed run freezes at the same step). Frozen, it gets no gradient, hence no update or weight decay,
    and autograd skips the first conv's input gradient. ``epochs`` None: off."""

    def __init__(self, epochs: int | None, model: torch.nn.Module, model_name: str):
        self.epochs = epochs
        self.bias = stem_bias(model) if epochs is not None else None
        if epochs is not None and self.bias is None:
            raise NclabError(f"optim.stem_bias_epochs applies to fastnet with its whitened stem (model.whiten), "
                             f"not to model {model_name}; set it to null")

    @property
    def changes_params(self) -> bool:
        """Whether the set of trained parameters changes during training (DDP must know)."""
        return self.epochs is not None

    def on_epoch_start(self, epoch: int) -> None:
        if self.bias is not None:
            self.bias.requires_grad_(epoch < self.epochs)


class TimeSlice:
    """``limit_s`` seconds from ``t_start`` (a ``time.perf_counter`` value): one more epoch, at this slice's mean
    epoch time, would pass the limit? ``limit_s`` None: never."""

    def __init__(self, limit_s: float | None, t_start: float):
        self.limit_s, self.t_start = limit_s, t_start

    def is_up(self, t_fit: float, epochs_done_here: int) -> bool:
        if self.limit_s is None:
            return False
        now = time.perf_counter()
        per_epoch = (now - t_fit) / max(1, epochs_done_here)
        return now - self.t_start + per_epoch > self.limit_s

    def spent(self) -> float:
        return time.perf_counter() - self.t_start
