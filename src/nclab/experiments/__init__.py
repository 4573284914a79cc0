"""Applications built on the collapse, recovery and theory engines: ``probe`` (any model, any layer, streamed),
``tokens``, ``run_model``, ``finegrain_runs`` (paper A's experiments), ``theory_runs`` (the deep linear and
synthetic ones), ``demo``. No argument parsing here: the parsers are in ``nclab.commands``."""

from nclab.experiments.run_model import load_run_model
from nclab.models.sources import register_loader

register_loader("run", load_run_model)
