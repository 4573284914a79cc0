"""Recovery on a trained network: which labels to recover, feature extraction, baselines, saved arrays.

Three settings, decided by the trainer's config and hierarchy (:func:`setup_for`):

- ``coarse``: the net is trained on coarse labels (``data.labels: coarse``). Recover the dataset's fine labels
  per superclass, routing test samples by the net's predicted coarse label.
- ``split``: the net is trained on ``split:M`` pseudo classes. Recover the *true* classes (the hierarchy's
  coarse level) by one global clustering with K_true clusters (no routing). ``pseudo`` additionally reports
  whether the pseudo classes can be recovered within each true class (``pseudo_recovery``).
- ``fine``: the net is trained on the fine labels; recovery routes by the coarse class of its predicted fine
  label when a hierarchy exists (a reference point), else one global clustering.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nclab.contracts.recovery import RecoverySpec
from nclab.data.hierarchy import Hierarchy
from nclab.finegrain.evaluate import evaluate_recovery, flatten_pixels
from nclab.finegrain.features import trainer_features
from nclab.rundir import RunDir
from nclab.utils.io import atomic_save_npy, atomic_write_bytes


@dataclass
class Setup:
    kind: str  # "coarse" | "split" | "fine"
    hierarchy: Hierarchy  # the hierarchy recovery uses (fine level = labels to recover)
    fine: dict  # split -> int64 (N,) labels to recover
    coarse: dict  # split -> int64 (N,) true group labels
    net_hierarchy: Hierarchy | None  # the trainer's own hierarchy

    def route(self, pred: np.ndarray) -> np.ndarray:
        """Routing labels (group index of the recovery hierarchy) from the net's predicted training labels."""
        if self.kind == "coarse":
            return pred
        if self.kind == "fine" and self.net_hierarchy is not None:
            return self.net_hierarchy.fine_to_coarse[pred]
        return np.zeros_like(pred)


def _one_group(names: list[str]) -> Hierarchy:
    return Hierarchy(np.zeros(len(names), np.int64), list(names), ["all"], spec="global")


def setup_for(trainer) -> Setup:
    ds, h = trainer.dataset, trainer.hierarchy
    y = {s: getattr(ds, s).y.numpy().astype(np.int64) for s in ("train", "test")}
    if trainer.cfg.data.labels == "coarse":
        return Setup("coarse", h, y, {s: h.coarse_of(v) for s, v in y.items()}, h)
    if h is not None and h.kind == "split":
        return Setup("split", _one_group(ds.class_names), y, {s: np.zeros_like(v) for s, v in y.items()}, h)
    if h is not None:
        return Setup("fine", h, y, {s: h.coarse_of(v) for s, v in y.items()}, h)
    return Setup("fine", _one_group(ds.class_names), y, {s: np.zeros_like(v) for s, v in y.items()}, None)


def train_subset(n: int, max_train: int | None, seed: int) -> np.ndarray | None:
    """Sorted random rows (own RNG) when ``max_train`` < n, else None (= all)."""
    if not max_train or max_train >= n:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, int(max_train), replace=False))


def run_spec(trainer, spec: RecoverySpec | None = None, **changes) -> RecoverySpec:
    """``spec``, or the run's recorded settings (config ``recovery``), with ``changes`` applied (None = keep)."""
    base = spec if spec is not None else RecoverySpec.of_config(trainer.cfg)
    return base.replace(**changes)


@torch.no_grad()
def recover_trainer(trainer, *, tap: str | None = None, spec: RecoverySpec | None = None, keep_arrays: bool = False,
                    **changes) -> dict:
    """Extract features of ``trainer.model`` and run :func:`evaluate_recovery` (see module docstring) with
    ``spec`` (default: the run's recorded settings, :func:`run_spec`) and ``changes`` to single settings.

    Returns the ``recovery`` dict (+ ``kind``, ``net_test_acc`` = the net's own accuracy on its training
    labels); with ``keep_arrays`` also ``"_arrays"`` (features, labels, predictions, centroids) for saving.
    The two steps, :func:`recovery_features` and :func:`recover_from_features`, also run apart (the callback under
    torchrun: features sharded over the ranks, clustering on rank 0).
    """
    spec = run_spec(trainer, spec, **changes)
    return recover_from_features(trainer, spec, recovery_features(trainer, spec, tap=tap), keep_arrays=keep_arrays)


@torch.no_grad()
def recovery_features(trainer, spec: RecoverySpec, *, tap: str | None = None, shard: bool = False) -> dict | None:
    """The features step of :func:`recover_trainer`: ``{"idx": the fit rows (None = all), "train": (features,
    predictions) of those rows, "test": (features, predictions)}``. ``shard`` (under torchrun, every rank calls it):
    each rank extracts its rows of every batch, rank 0 gets the dict of all rows, the other ranks ``None``
    (:func:`nclab.finegrain.features.trainer_features`)."""
    idx = train_subset(len(trainer.dataset.train), spec.max_train, spec.seed)
    train = trainer_features(trainer, "train", tap=tap, idx=idx, shard=shard)
    test = trainer_features(trainer, "test", tap=tap, shard=shard)
    return None if train[0] is None else {"idx": idx, "train": train, "test": test}


@torch.no_grad()
def recover_from_features(trainer, spec: RecoverySpec, feats: dict, *, keep_arrays: bool = False) -> dict:
    """The evaluation step of :func:`recover_trainer` on ``feats`` (:func:`recovery_features` of ``spec``)."""
    max_train = spec.max_train
    st = setup_for(trainer)
    idx = feats["idx"]
    ftr, ptr = feats["train"]
    fte, pte = feats["test"]
    ytr = st.fine["train"] if idx is None else st.fine["train"][idx]
    ctr = st.coarse["train"] if idx is None else st.coarse["train"][idx]
    opts = spec.estimator_kwargs()
    noise = trainer.label_noise if st.kind == "coarse" else None
    if noise is not None:  # the protocol groups the fit set by the (noisy) coarse labels the net was trained on
        ctr = noise.labels if idx is None else noise.labels[idx]
    rep, rec = evaluate_recovery(ftr, ctr, ytr, fte, st.route(pte), st.fine["test"], st.hierarchy,
                                 return_model=True, noisy_coarse=noise is not None, **opts)
    rep["kind"] = st.kind
    if noise is not None:
        from nclab.finegrain.noisy import noise_split_report

        true_c = st.coarse["train"] if idx is None else st.coarse["train"][idx]
        nz = trainer.cfg.data.label_noise
        rep["label_noise"] = {"rate": nz.rate, "kind": nz.kind, "seed": nz.seed, "grouped_by": "noisy labels",
                              **noise_split_report(ftr, ctr, true_c, ytr, ptr, rec.fit_pred_, rec,
                                                   st.hierarchy.num_coarse)}
    rep["options"]["max_train"] = max_train  # None = all train samples
    rep["net_test_acc"] = float(np.mean(pte == trainer.train_targets("test").numpy()))
    if st.kind == "split":
        # can clusters inside each true class recover the pseudo classes the net was trained on?
        h = st.net_hierarchy
        pseudo = {s: trainer.train_targets(s).numpy().astype(np.int64) for s in ("train", "test")}
        ps_tr = pseudo["train"] if idx is None else pseudo["train"][idx]
        pr = evaluate_recovery(ftr, h.coarse_of(ps_tr), ps_tr, fte, h.fine_to_coarse[pte], pseudo["test"], h, **opts)
        rep["pseudo_recovery"] = {k: pr[k] for k in ("train_acc", "test_acc", "oracle_test_acc", "ari", "nmi",
                                                     "k_estimation") if k in pr}
        rep["true_class_test_acc"] = float(np.mean(h.fine_to_coarse[pte] == st.fine["test"]))
    if keep_arrays:
        rep["_arrays"] = {
            "train_features": ftr, "test_features": fte, "train_fine": ytr, "test_fine": st.fine["test"],
            "train_coarse": st.coarse["train"] if idx is None else st.coarse["train"][idx],
            "test_coarse": st.coarse["test"], "test_coarse_pred": st.route(pte), "centroids": rec.centroids(),
        }
        if noise is not None:  # the labels the fit set was grouped by (train_coarse stays the true ones)
            rep["_arrays"]["train_coarse_noisy"] = ctr
    return rep


def save_arrays(run: RunDir, arrays: dict) -> None:
    """Write ``features/*.npy`` and ``features/centroids.npz`` (docs/architecture.md) atomically."""
    import io

    folder = run.path / "features"
    for k, v in arrays.items():
        if k == "centroids":
            buf = io.BytesIO()
            np.savez(buf, **v)
            atomic_write_bytes(folder / "centroids.npz", buf.getvalue())
        else:
            atomic_save_npy(folder / f"{k}.npy", np.asarray(v))


def random_init_model(trainer):
    """A fresh model with the trainer's architecture and init seed, built by the trainer's own builder
    (:func:`nclab.train.trainer.build_model_for`: same kwargs, same data-dependent init on the same strided
    training rows, same device and memory format) without touching the global RNG."""
    from nclab.train.trainer import build_model_for

    dev = torch.device(trainer.device)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(int(trainer.cfg.seed))
        return build_model_for(trainer)


def baselines(trainer, test_route: np.ndarray, *, spec: RecoverySpec | None = None,
              which=("raw_pixels", "random_init"), **changes) -> dict:
    """Recovery with the same protocol (``spec``/``changes`` as in :func:`recover_trainer`) and the same routing
    labels ``test_route`` (M,) on (a) raw pixels (0..1 scale, flattened) and (b) penultimate features of the
    randomly initialised network. Each entry: ``test_acc`` (routed by ``test_route``), ``oracle_test_acc``,
    ``train_acc``, ``ari``, ``nmi``."""
    from nclab.finegrain.features import extract, subset_loader

    spec = run_spec(trainer, spec, **changes)
    max_train, seed = spec.max_train, spec.seed
    st = setup_for(trainer)
    ds = trainer.dataset
    idx = train_subset(len(ds.train), max_train, seed)
    sel = slice(None) if idx is None else idx
    ytr, ctr = st.fine["train"][sel], st.coarse["train"][sel]
    noise = trainer.label_noise if st.kind == "coarse" else None
    if noise is not None:  # grouped by the labels the net was trained on, as recover_trainer groups them
        ctr = noise.labels[sel]
    opts_noise = {"noisy_coarse": noise is not None}
    out = {}
    keys = ("test_acc", "oracle_test_acc", "train_acc", "ari", "nmi")
    opts = spec.estimator_kwargs()
    if "raw_pixels" in which:
        xtr = flatten_pixels(ds.train.x if idx is None else ds.train.x[torch.as_tensor(idx)])
        r = evaluate_recovery(xtr, ctr, ytr, flatten_pixels(ds.test.x), test_route, st.fine["test"], st.hierarchy,
                              **opts_noise, **opts)
        out["raw_pixels"] = {k: r[k] for k in keys}
    if "random_init" in which:
        model = random_init_model(trainer)
        tl = trainer.eval_loader("train")
        ftr, _ = extract(model, tl if idx is None else subset_loader(tl, idx), autocast=trainer.autocast,
                         flip=trainer.tta_flip)
        fte, _ = extract(model, trainer.eval_loader("test"), autocast=trainer.autocast, flip=trainer.tta_flip)
        r = evaluate_recovery(ftr, ctr, ytr, fte, test_route, st.fine["test"], st.hierarchy, **opts_noise, **opts)
        out["random_init"] = {k: r[k] for k in keys}
    return out
