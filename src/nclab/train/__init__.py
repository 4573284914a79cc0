"""Training: validated configs, the crash-safe :class:`Trainer`, callbacks, schedules, losses."""

from nclab.train.callbacks import Callback, build_callbacks
from nclab.train.config import Config, load_config
from nclab.train.trainer import Trainer

__all__ = ["Trainer", "Callback", "Config", "load_config", "build_callbacks"]
