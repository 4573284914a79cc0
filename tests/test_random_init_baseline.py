"""The random-init baseline's network is built by the trainer's own builder (docs/architecture.md: model building
has one home): the same weights as the trained network at initialisation, the data-dependent init (fastnet's
whitening stem) on the same strided training rows, and the global RNG left alone."""

from __future__ import annotations

import torch

from nclab.data.types import Dataset, Split

# data.source only passes the config check: the in-memory dataset below is passed to the Trainer
CFG = {"name": "ri", "seed": 3,
       "data": {"source": "synthetic", "labels": "fine", "augment": {"crop": 0, "flip": False}},
       "model": {"name": "fastnet", "widths": [8, 8, 8]},
       "optim": {"name": "sgd", "lr": 0.01, "batch_size": 64, "epochs": 1},
       "train": {"device": "cpu", "bf16": False, "channels_last": False, "threads": 1}}


def _images(n: int, seed: int) -> Split:
    """Stored class by class (as many files are) with a class-dependent brightness, so the first 5000 rows and
    5000 strided rows have different patch statistics."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(2).repeat_interleave(n // 2)
    x = (torch.rand(n, 3, 10, 10, generator=g) * (60 + 120 * y.view(-1, 1, 1, 1))).to(torch.uint8)
    return Split(x, y)


def _dataset() -> Dataset:
    return Dataset("inline", _images(10000, 0), _images(100, 1), ["a", "b"], source="inline")


def test_random_init_model_is_the_trainers_initial_model_and_keeps_the_rng(tmp_path):
    from nclab.finegrain.pipeline import random_init_model
    from nclab.train import Trainer

    ds = _dataset()
    initial = {k: v.clone() for k, v in Trainer(CFG, tmp_path / "a", dataset=ds).model.state_dict().items()}
    tr = Trainer(CFG, tmp_path / "b", dataset=ds)
    with torch.no_grad():  # the trained network moves away from its init; the baseline must not follow it
        for p in tr.model.parameters():
            p.add_(1.0)
    state = torch.random.get_rng_state()
    model = random_init_model(tr)
    assert torch.equal(torch.random.get_rng_state(), state)
    got = model.state_dict()
    assert set(got) == set(initial)
    for k, v in initial.items():
        assert torch.equal(got[k], v), k


def test_the_data_dependent_init_reads_strided_rows_not_the_first_ones(tmp_path):
    from nclab.finegrain.pipeline import random_init_model
    from nclab.train import Trainer

    ds = _dataset()
    tr = Trainer(CFG, tmp_path / "r", dataset=ds)
    stem = [k for k in tr.model.state_dict() if k.startswith("backbone.stem.")]
    assert stem, "fastnet has a whitening stem"
    model = random_init_model(tr)
    # the old copy's stem: computed on the first 5000 rows (all of class 0 here; the trainer takes every 2nd row)
    from nclab.models import build_model

    first = build_model("fastnet", 2, ds.input_shape, widths=[8, 8, 8])
    first.data_init(tr.eval_loader("train").prepare(ds.train.x[:5000]))
    assert any(not torch.equal(model.state_dict()[k], first.state_dict()[k]) for k in stem)
    assert all(torch.equal(model.state_dict()[k], tr.model.state_dict()[k]) for k in stem)
