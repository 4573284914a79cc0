"""Applications built on the collapse and recovery engines (``probe``: any model, any layer, streamed)."""

from nclab.experiments.run_model import load_run_model
from nclab.models.sources import register_loader

register_loader("run", load_run_model)
