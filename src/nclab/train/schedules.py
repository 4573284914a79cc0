"""Learning-rate schedules as pure functions of the global step (so resuming needs only the step).

``lr_at(cfg_schedule, base_lr, step, steps_per_epoch, epochs)`` for step ``t`` in ``0..T-1``,
``T = steps_per_epoch * epochs``, ``W = round(warmup * T)``:

- warm-up (any schedule, when W > 0): ``t < W``: ``lr * (s + (1 - s) * t / W)`` with ``s = start_factor``.
- ``constant``: ``lr``.
- ``multistep``: ``lr * gamma ** #{m : epoch(t) >= floor(m * epochs)}`` for fractions ``m`` in ``milestones``
  (default 1/3, 2/3: the neural-collapse convention), ``epoch(t) = t // steps_per_epoch``.
- ``cosine``: ``f + (1 - f) * (1 + cos(pi * u)) / 2`` times ``lr``, ``u = (t - W) / (T - W)``, ``f = final_factor``.
- ``onecycle``: linear from ``lr`` at ``t = W`` to ``lr * final_factor`` at ``t = T``.
"""

from __future__ import annotations

import math


def lr_at(sched: dict, base_lr: float, step: int, steps_per_epoch: int, epochs: int) -> float:
    total = steps_per_epoch * epochs
    warm = int(round(sched.get("warmup", 0.0) * total))
    name = sched["name"]
    if step < warm:
        s = sched.get("start_factor", 0.0)
        return base_lr * (s + (1.0 - s) * step / warm)
    if name == "constant":
        return base_lr
    if name == "multistep":
        epoch = step // steps_per_epoch
        k = sum(1 for m in sched.get("milestones", [1 / 3, 2 / 3]) if epoch >= math.floor(m * epochs))
        return base_lr * sched.get("gamma", 0.1) ** k
    f = sched.get("final_factor", 0.0)
    u = (step - warm) / max(total - warm, 1)
    if name == "cosine":
        return base_lr * (f + (1.0 - f) * 0.5 * (1.0 + math.cos(math.pi * u)))
    if name == "onecycle":
        return base_lr * (1.0 + (f - 1.0) * u)
    raise ValueError(f"unknown schedule {name}")
