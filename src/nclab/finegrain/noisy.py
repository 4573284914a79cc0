"""Recovery and collapse measured separately on the clean and the corrupted training samples.

Under ``data.label_noise`` the net is trained on coarse labels of which some were changed. The recovery
protocol groups the fit set by those (noisy) labels, as it would any labels it is given; this module then asks
what happened to the two kinds of training sample. Inputs (N = train rows used): ``features`` (N, D),
``trained`` (N,) the noisy coarse labels the net saw, ``clean`` (N,) the true coarse labels, ``corrupted`` (N,)
bool (``trained != clean``), ``fine`` (N,) true fine labels, ``pred`` (N,) the net's predicted coarse labels,
``fit_pred`` (N,) the recovery's named fine label of each fit row, ``rec`` the fitted FineLabelRecovery.

Keys (all fractions in [0, 1] unless named otherwise; ``None`` where a subset is empty):

- ``recovery_train_acc_clean``: fit-set recovery accuracy (named cluster == fine label) of the clean rows;
- ``recovery_train_acc_corrupted``: the same for corrupted rows, which sit in a superclass their fine class is
  not in, so this is 0 by construction (kept to make that visible);
- ``recovery_train_acc_corrupted_true_routing``: corrupted rows sent to their *true* superclass's clusters:
  do their features still sit with their true fine class?
- ``recovery_train_acc_corrupted_predicted_routing``: corrupted rows routed by the net's prediction;
- ``net_agrees_noisy_label_corrupted`` / ``net_agrees_true_label_corrupted``: how often the net predicts the
  label it was trained on (memorised) / the true coarse label on corrupted rows; ``net_train_acc_clean``;
- ``nc1_clean``: NC1 (tr(S_W S_B^+)/K, :func:`nclab.collapse.metrics.nc1`) of the clean rows by their labels;
- ``nc1_corrupted_noisy_labels`` / ``nc1_corrupted_true_labels``: NC1 of the corrupted rows grouped by the
  labels they were trained on / by their true coarse labels;
- ``ncc_corrupted_nearest_noisy_mean`` / ``ncc_corrupted_nearest_true_mean``: fraction of corrupted rows whose
  nearest class mean (means of the clean rows, Euclidean) is that of the noisy / of the true label.
"""

from __future__ import annotations

import numpy as np


def _frac(mask: np.ndarray) -> float | None:
    return float(np.mean(mask)) if mask.size else None


def _nc1(x: np.ndarray, y: np.ndarray, k: int) -> float | None:
    from nclab.collapse.metrics import metrics_from_arrays

    if len(y) < 2 or len(np.unique(y)) < 2:
        return None
    return float(metrics_from_arrays(x.astype(np.float32), y.astype(np.int64), num_classes=k)["nc1"])


def noise_split_report(features: np.ndarray, trained: np.ndarray, clean: np.ndarray, fine: np.ndarray,
                       pred: np.ndarray, fit_pred: np.ndarray, rec, num_coarse: int) -> dict:
    """The module docstring's keys plus ``n_clean`` and ``n_corrupted`` (row counts)."""
    x = np.asarray(features, dtype=np.float32)
    trained, clean, fine, pred = (np.asarray(a, dtype=np.int64) for a in (trained, clean, fine, pred))
    bad = trained != clean
    ok = ~bad
    out: dict = {"n_clean": int(ok.sum()), "n_corrupted": int(bad.sum())}
    out["recovery_train_acc_clean"] = _frac(fit_pred[ok] == fine[ok])
    out["recovery_train_acc_corrupted"] = _frac(fit_pred[bad] == fine[bad])
    if bad.any():
        out["recovery_train_acc_corrupted_true_routing"] = _frac(rec.predict(x[bad], clean[bad]) == fine[bad])
        out["recovery_train_acc_corrupted_predicted_routing"] = _frac(rec.predict(x[bad], pred[bad]) == fine[bad])
    else:
        out["recovery_train_acc_corrupted_true_routing"] = out["recovery_train_acc_corrupted_predicted_routing"] = None
    out["net_agrees_noisy_label_corrupted"] = _frac(pred[bad] == trained[bad])
    out["net_agrees_true_label_corrupted"] = _frac(pred[bad] == clean[bad])
    out["net_train_acc_clean"] = _frac(pred[ok] == clean[ok])
    out["nc1_clean"] = _nc1(x[ok], clean[ok], num_coarse)
    out["nc1_corrupted_noisy_labels"] = _nc1(x[bad], trained[bad], num_coarse)
    out["nc1_corrupted_true_labels"] = _nc1(x[bad], clean[bad], num_coarse)
    present = [c for c in range(num_coarse) if (ok & (clean == c)).any()]
    if bad.any() and present:
        means = np.stack([x[ok & (clean == c)].astype(np.float64).mean(0) for c in present])
        d = (means ** 2).sum(1)[None, :] - 2.0 * x[bad].astype(np.float64) @ means.T  # + |x|^2, same for all
        nearest = np.asarray(present)[np.argmin(d, axis=1)]
        out["ncc_corrupted_nearest_noisy_mean"] = _frac(nearest == trained[bad])
        out["ncc_corrupted_nearest_true_mean"] = _frac(nearest == clean[bad])
    else:
        out["ncc_corrupted_nearest_noisy_mean"] = out["ncc_corrupted_nearest_true_mean"] = None
    return out
