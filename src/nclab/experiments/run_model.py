"""``run:RUN_DIR`` model specs: a run trained by nclab, rebuilt with its trainer (registered with
:func:`nclab.models.sources.register_loader` when :mod:`nclab.experiments` is imported)."""

from __future__ import annotations

from nclab.models.sources import LoadedModel
from nclab.utils.errors import NclabError


def load_run_model(path: str, num_classes: int | None = None) -> LoadedModel:
    """``run:RUN_DIR``: the last checkpoint of a run trained by nclab, with the run's own input normalisation."""
    from nclab.rundir import RunDir
    from nclab.train import Trainer, load_config

    run = RunDir(path)
    ckpt = run.checkpoints / "last.pt"
    if not run.config_path.is_file() or not ckpt.is_file():
        raise NclabError(f"{path} is not a finished nclab run (needs config.yaml and checkpoints/last.pt); "
                         "pass run:RUN_DIR of a run trained by nclab train")
    # the model and its normalisation only: no callbacks
    cfg = load_config(run.config_path, overrides=["train.device=cpu"]).replace(callbacks={})
    trainer = Trainer(cfg, run.path)  # builds the model and the run's own normalisation exactly as trained
    state = trainer.load_checkpoint(ckpt, model_only=True)  # checked: one error line for a damaged file
    ds = trainer.dataset
    mean, std = trainer._stats()
    return LoadedModel(trainer.model, "", "run", kind="vision" if ds.is_image else "features",
                       mean=None if mean is None else tuple(mean), std=None if std is None else tuple(std),
                       preprocess="the run's own normalisation", input_shape=tuple(ds.input_shape),
                       info={"run": str(run.path), "epoch": int(state.get("epoch", 0)),
                             "hierarchy": None if trainer.hierarchy is None else trainer.hierarchy.spec})
