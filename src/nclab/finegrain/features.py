"""Feature extraction for recovery: penultimate features (or one tap), eval mode, no augmentation.

``extract(model, batches)`` -> ``features`` float32 (N, D) numpy and ``pred`` int64 (N,) = argmax of the
classifier logits (the network's predicted training label), in the order the batches yield samples.
"""

from __future__ import annotations

import contextlib
from typing import Iterable

import numpy as np
import torch

from nclab.data.batches import BatchIterator
from nclab.models import flip_mean_features
from nclab.utils.errors import NclabError


@torch.no_grad()
def extract(model, batches: Iterable, *, tap: str | None = None, autocast=None, flip: bool = False
            ) -> tuple[np.ndarray, np.ndarray]:
    """Run ``model`` in eval mode over ``batches`` (iterable of ``(x, y)``; ``y`` is ignored).

    ``tap``: a name from ``model.tap_names()`` to take instead of ``features()`` (flattened (N, ·)).
    ``autocast``: optional context-manager factory (the trainer's bf16 autocast). The model's train/eval
    mode is restored afterwards. ``flip``: flip test-time augmentation (images only): features are the mean
    over each image and its mirror image, predictions the classifier's argmax on that mean.
    Returns ``(features (N, D) float32, pred (N,) int64)``.
    """
    if flip and tap is not None:
        raise NclabError("flip test-time augmentation applies to the penultimate features only; drop the tap "
                         "or set train.tta: none")
    if tap is not None and hasattr(model, "tap_names") and tap not in model.tap_names():
        raise NclabError(f"unknown tap {tap!r}; this model has {model.tap_names()}")
    was = model.training
    model.eval()
    feats, preds = [], []
    try:
        for x, _ in batches:
            with (autocast() if autocast else contextlib.nullcontext()):
                h = flip_mean_features(model, x) if flip else model.features(x)
                logits = model.classifier(h)
                if tap is not None:
                    h = model.forward_taps(x, [tap])[tap]
            feats.append(h.float().flatten(1).cpu())
            preds.append(logits.argmax(1).cpu())
    finally:
        model.train(was)
    if not feats:
        raise NclabError("no batches to extract features from; check the split is not empty")
    return torch.cat(feats).numpy().astype(np.float32, copy=False), torch.cat(preds).numpy().astype(np.int64)


def subset_loader(loader: BatchIterator, idx: np.ndarray) -> BatchIterator:
    """An eval BatchIterator over rows ``idx`` of ``loader``'s data, with the same normalisation/device and shard:
    a sharded ``loader`` gives a sharded subset (this rank's rows of every batch of the ``idx`` rows)."""
    flat = (lambda t: None if t is None else t.flatten().tolist())
    sel = torch.as_tensor(np.asarray(idx, dtype=np.int64), device=loader.x.device)
    return BatchIterator(loader.x.index_select(0, sel), loader.y.index_select(0, sel), loader.batch_size,
                         mean=flat(loader.mean), std=flat(loader.std), device=loader.device,
                         channels_last=loader.channels_last, shard=loader.shard)


def trainer_features(trainer, split: str, *, tap: str | None = None, idx: np.ndarray | None = None,
                     shard: bool = False) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Features and predicted training labels of ``split`` ("train"/"test") of a :class:`nclab.train.Trainer`,
    in storage order (``idx``: only those rows); with ``train.tta: flip`` the flip-averaged features.

    ``shard`` (under torchrun; ignored in one process): every rank (all must call it) extracts only its rows of
    each batch (the trainer gives every rank rank 0's model buffers at each epoch end), and rank 0 receives all rows
    in storage order (:func:`nclab.train.distributed.gather_in_order`); the other ranks get ``(None, None)``."""
    shard = shard and bool(getattr(trainer, "distributed", False))
    if shard:
        from nclab.train import distributed as ddp
    loader = trainer.eval_loader(split, shard=shard)
    if idx is not None:
        loader = subset_loader(loader, idx)
    flip = tap is None and trainer.tta_flip
    feats, pred = extract(trainer.model, loader, tap=tap, autocast=trainer.autocast, flip=flip)
    if not shard:
        return feats, pred
    got = ddp.gather_in_order(loader.local_order(), loader.n, torch.from_numpy(feats), torch.from_numpy(pred))
    return (None, None) if got is None else (got[0].numpy(), got[1].numpy())
