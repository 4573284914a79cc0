"""One recovery run -> the ``recovery`` block of results.json (keys as in docs/architecture.md).

All accuracies are fractions in [0, 1] of samples whose predicted fine label equals the true one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nclab.data.hierarchy import Hierarchy
from nclab.finegrain.recovery import FineLabelRecovery, class_indices
from nclab.utils.errors import NclabError


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    """Counts (n, n): row = true class, column = predicted class."""
    m = np.zeros((n, n), dtype=np.int64)
    np.add.at(m, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return m


def _acc(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a == b)) if len(a) else float("nan")


def as_hierarchy(h: Hierarchy | np.ndarray | list | None, fine: np.ndarray | None = None,
                 coarse: np.ndarray | None = None) -> Hierarchy:
    """A Hierarchy from a Hierarchy, a fine->coarse array, or (None) the (fine, coarse) pairs."""
    if isinstance(h, Hierarchy):
        return h
    if h is None:
        if fine is None or coarse is None:
            raise NclabError("need a hierarchy (or train fine and coarse labels to infer it)")
        f2c = FineLabelRecovery()._f2c(np.asarray(coarse, dtype=np.int64), np.asarray(fine, dtype=np.int64))
    else:
        f2c = np.asarray(h, dtype=np.int64)
    names = [str(i) for i in range(len(f2c))]
    return Hierarchy.from_mapping(f2c, names, spec="inferred" if h is None else "array")


def evaluate_recovery(
    train_features: np.ndarray,
    train_coarse: np.ndarray,
    train_fine: np.ndarray,
    test_features: np.ndarray,
    test_coarse_pred: np.ndarray | None,
    test_fine: np.ndarray,
    hierarchy: Hierarchy | np.ndarray | None = None,
    *,
    fit_on: str = "train",
    return_model: bool = False,
    noisy_coarse: bool = False,
    **options: Any,
) -> dict | tuple[dict, FineLabelRecovery]:
    """Fit :class:`FineLabelRecovery` and report it.

    Inputs: features (N, D) / (M, D); ``train_coarse`` (N,) true coarse labels used to group the fit set;
    ``train_fine`` (N,) only for naming and the train accuracy; ``test_coarse_pred`` (M,) the network's
    predicted coarse labels used for routing (None = no predictor, routing falls back to the true coarse
    labels and ``test_acc`` equals ``oracle_test_acc``); ``test_fine`` (M,) true labels. ``noisy_coarse``:
    ``train_coarse`` are the noisy labels the net was trained on (see :meth:`FineLabelRecovery.fit`).
    ``fit_on="test"`` clusters the test features instead (grouped by their true coarse labels, as the train
    features are, and named with the test fine labels; routing is unchanged); then ``train_acc`` and the
    per-superclass ``train_acc`` report the clustering accuracy on the test fit set.

    Returns a dict with ``test_acc`` (predicted routing), ``oracle_test_acc`` (true-coarse routing),
    ``train_acc`` (named clusters vs true fine labels on the fit set), ``coarse_test_acc`` (accuracy of the
    routing labels), ``ari``/``nmi`` (test, predicted routing, vs true fine), ``train_ari``/``train_nmi``,
    ``per_superclass`` (per true superclass: train clustering accuracy and oracle-routed test accuracy),
    ``confusion`` (K_fine, K_fine) test counts, ``fine_names``, and the options used.
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    if fit_on not in ("train", "test"):
        raise NclabError(f"fit_on must be 'train' or 'test', got {fit_on!r}")
    h = as_hierarchy(hierarchy, train_fine, train_coarse)
    test_fine = class_indices(test_fine, "test fine", h.num_fine)
    test_true_coarse = h.coarse_of(test_fine)
    routed = (test_true_coarse if test_coarse_pred is None
              else class_indices(test_coarse_pred, "predicted coarse", h.num_coarse))
    if routed.shape != test_fine.shape:
        raise NclabError(f"predicted coarse labels have shape {routed.shape}, test fine labels {test_fine.shape}; "
                         "pass matching arrays")
    rec = FineLabelRecovery(h, **options)
    if fit_on == "train":
        rec.fit(train_features, train_coarse, train_fine, noisy_coarse=noisy_coarse)
        fit_fine, fit_pred, fit_coarse = np.asarray(train_fine, dtype=np.int64), rec.fit_pred_, np.asarray(train_coarse)
    else:
        rec.fit(test_features, test_true_coarse, test_fine)
        fit_fine, fit_pred, fit_coarse = test_fine, rec.fit_pred_, test_true_coarse
    pred = rec.predict(test_features, routed)
    oracle = rec.predict(test_features, test_true_coarse)
    per = []
    for c in range(h.num_coarse):
        tr = fit_coarse == c
        te = test_true_coarse == c
        g = rec.groups_.get(c)
        guard = {} if g is None or g.shares is None else {
            "guarded": g.guarded, "within_ss": g.shares[0], "within_ss_raw_partition": g.shares[1]}
        per.append({
            "coarse": c,
            "name": h.coarse_names[c],
            "fine": h.fine_classes(c),
            "train_acc": _acc(fit_pred[tr], fit_fine[tr]),
            "test_acc": _acc(oracle[te], test_fine[te]),
            "test_acc_predicted_routing": _acc(pred[te], test_fine[te]),
            "n_train": int(tr.sum()),
            "n_test": int(te.sum()),
            **guard,
            **({} if g is None else {"k": g.k}),
            **({} if g is None or g.k_scores is None else {"k_scores": {str(k): v for k, v in g.k_scores.items()}}),
        })
    out = {
        "test_acc": _acc(pred, test_fine),
        "oracle_test_acc": _acc(oracle, test_fine),
        "train_acc": _acc(fit_pred, fit_fine),
        "coarse_test_acc": _acc(routed, test_true_coarse),
        "ari": float(adjusted_rand_score(test_fine, pred)),
        "nmi": float(normalized_mutual_info_score(test_fine, pred)),
        "train_ari": float(adjusted_rand_score(fit_fine, fit_pred)),
        "train_nmi": float(normalized_mutual_info_score(fit_fine, fit_pred)),
        "per_superclass": per,
        "confusion": confusion(test_fine, pred, h.num_fine).tolist(),
        "fine_names": list(h.fine_names),
        "options": {"fit_on": fit_on,
                    "routing": ("none" if rec.clustering == "global"
                                else "predicted" if test_coarse_pred is not None else "oracle"),
                    "method": rec.method, "normalize": rec.normalize, "clustering": rec.clustering,
                    "n_init": rec.n_init, "seed": rec.seed, "whiten_var": rec.whiten_var, "guard": rec.guard,
                    "pca_dims": rec.pca_dims, "gmm_covariance": rec.gmm_covariance,
                    "fine_per_coarse": rec.fine_per_coarse, "k_criterion": rec.k_criterion, "k_max": rec.k_max},
        # superclasses (group ids; -1 = the one global group) where the guard's partition was the better optimum
        "guarded": sorted(int(c) for c in rec.guarded_),
    }
    if rec.fine_per_coarse == "auto":
        out["k_estimation"] = k_estimation_summary(rec)
    return (out, rec) if return_model else out


def k_estimation_summary(rec: FineLabelRecovery) -> dict:
    """How often ``fine_per_coarse="auto"`` found the hierarchy's number of fine classes: ``criterion``,
    ``k_max``, ``correct`` (groups whose estimate equals the true count), ``groups``, ``fraction_correct`` and
    ``per_group`` (group id, ``k_estimated``, ``k_true``)."""
    per = [{"group": int(c), "k_estimated": int(g.k), "k_true": len(g.fine)} for c, g in rec.groups_.items()]
    ok = sum(p["k_estimated"] == p["k_true"] for p in per)
    return {"criterion": rec.k_criterion, "k_max": rec.k_max, "correct": ok, "groups": len(per),
            "fraction_correct": ok / len(per) if per else float("nan"), "per_group": per}


def flatten_pixels(x) -> np.ndarray:
    """Raw-pixel baseline features: (N, C, H, W) uint8 -> (N, C*H*W) float32 on the 0..1 scale;
    (N, D) float inputs are returned as float32."""
    a = np.asarray(x.numpy() if hasattr(x, "numpy") else x)
    if a.dtype == np.uint8:
        return (a.reshape(len(a), -1).astype(np.float32) / 255.0)
    return a.reshape(len(a), -1).astype(np.float32)
