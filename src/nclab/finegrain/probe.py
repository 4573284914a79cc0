"""Linear probe inside each superclass: a *supervised* upper bound next to the unsupervised recovery.

Recovery (``FineLabelRecovery``) asks whether clustering finds the fine classes in the features; the probe
asks whether they are there at all. For each superclass c a multinomial logistic regression is trained on the
standardised train features of the samples with coarse label c, with their **fine labels** (so this is not
part of the paper's protocol and never replaces it), and test samples are routed exactly like the recovery:
by the network's predicted coarse label (``test_acc``) or the true one (``oracle_test_acc``).

A probe far above the clustering accuracy of a superclass means the fine classes are linearly separable in the
features but are not the dominant split that 2-means finds (measured on CIFAR-10 ``mod:5``, bird+horse: probe
95 %, k-means 83 %; docs/recovery.md).
"""

from __future__ import annotations

import warnings

import numpy as np

from nclab.data.hierarchy import Hierarchy
from nclab.finegrain.evaluate import _acc, as_hierarchy
from nclab.finegrain.recovery import check_consistent, class_indices
from nclab.utils.errors import NclabError


def linear_probe(train_features: np.ndarray, train_coarse: np.ndarray, train_fine: np.ndarray,
                 test_features: np.ndarray, test_coarse_pred: np.ndarray | None, test_fine: np.ndarray,
                 hierarchy: Hierarchy | np.ndarray | None, *, C: float = 0.1, max_iter: int = 1000) -> dict:
    """Per-superclass logistic-regression probe (see module docstring).

    Inputs as :func:`nclab.finegrain.evaluate_recovery`: features (N, D) / (M, D), ``train_coarse`` (N,) true
    coarse labels, ``train_fine`` (N,), ``test_coarse_pred`` (M,) routing labels (None: true coarse labels),
    ``test_fine`` (M,); ``hierarchy`` a Hierarchy, a fine->coarse array or None (inferred from the train labels).
    ``C``: inverse L2 strength of scikit-learn's ``LogisticRegression`` on features
    standardised with the superclass's train mean and std.

    Returns ``test_acc`` (predicted routing), ``oracle_test_acc``, ``train_acc``, ``per_superclass``
    (``coarse``, ``name``, ``train_acc``, ``test_acc`` = oracle-routed) and ``options``.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    if not C > 0:
        raise NclabError(f"probe C must be > 0, got {C}")
    xtr = np.asarray(train_features, dtype=np.float64)
    xte = np.asarray(test_features, dtype=np.float64)
    if xtr.ndim != 2 or xte.ndim != 2 or xtr.shape[1] != xte.shape[1]:
        raise NclabError(f"probe needs 2-D train/test features of one width, got {xtr.shape} and {xte.shape}")
    # the same label checks as evaluate_recovery: integer class indices of this hierarchy, one per row
    hierarchy = as_hierarchy(hierarchy, train_fine, train_coarse)
    ctr = class_indices(np.ravel(train_coarse), "train coarse", hierarchy.num_coarse)
    ytr = class_indices(np.ravel(train_fine), "train fine", hierarchy.num_fine)
    yte = class_indices(np.ravel(test_fine), "test fine", hierarchy.num_fine)
    if not (len(ctr) == len(ytr) == len(xtr)) or len(yte) != len(xte) or (
            test_coarse_pred is not None and np.size(test_coarse_pred) != len(xte)):
        raise NclabError("probe: features and labels have different numbers of rows; pass matching arrays")
    try:
        check_consistent(hierarchy.fine_to_coarse, ctr, ytr, "train")
    except NclabError as e:
        raise NclabError(f"probe: train coarse labels disagree with the hierarchy: {e}") from None
    true_c = hierarchy.coarse_of(yte)
    routed = true_c if test_coarse_pred is None else class_indices(
        np.ravel(test_coarse_pred), "predicted coarse", hierarchy.num_coarse)
    pred_routed = np.full(len(yte), -1, dtype=np.int64)
    pred_oracle = np.full(len(yte), -1, dtype=np.int64)
    pred_train = np.full(len(ytr), -1, dtype=np.int64)
    per = []
    for c in range(hierarchy.num_coarse):
        tr = ctr == c
        classes = np.unique(ytr[tr])
        if len(classes) == 0:
            continue
        mu = xtr[tr].mean(0)
        sd = xtr[tr].std(0)
        sd[sd == 0] = 1.0

        def z(a: np.ndarray) -> np.ndarray:
            return (a - mu) / sd

        if len(classes) == 1:  # one fine class seen: the probe can only say that one
            predict = lambda a: np.full(len(a), classes[0], dtype=np.int64)  # noqa: E731
        else:
            clf = LogisticRegression(C=C, max_iter=max_iter)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                clf.fit(z(xtr[tr]), ytr[tr])
            predict = lambda a: clf.predict(z(a)).astype(np.int64)  # noqa: E731
        pred_train[tr] = predict(xtr[tr])
        for mask, out in ((routed == c, pred_routed), (true_c == c, pred_oracle)):
            if mask.any():
                out[mask] = predict(xte[mask])
        te = true_c == c
        per.append({"coarse": c, "name": hierarchy.coarse_names[c],
                    "train_acc": _acc(pred_train[tr], ytr[tr]), "test_acc": _acc(pred_oracle[te], yte[te])})
    return {
        "test_acc": _acc(pred_routed, yte),
        "oracle_test_acc": _acc(pred_oracle, yte),
        "train_acc": _acc(pred_train, ytr),
        "per_superclass": per,
        "options": {"C": C, "standardize": True, "model": "logistic_regression"},
    }


def probe_saved_arrays(arrays: dict, hierarchy: Hierarchy, **kwargs) -> dict:
    """:func:`linear_probe` on the arrays a recovery run keeps (``recover_trainer(keep_arrays=True)``: train/test
    features, fine and coarse labels, the predicted coarse routing)."""
    return linear_probe(arrays["train_features"], arrays["train_coarse"], arrays["train_fine"], arrays["test_features"],
                        arrays["test_coarse_pred"], arrays["test_fine"], hierarchy, **kwargs)
