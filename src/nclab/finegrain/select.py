"""Choosing the recovery method without looking at test labels (``nclab recover --compare-methods``).

Every candidate of :data:`CANDIDATES` (a method and its settings, over the run's recorded ones) runs the full
protocol on the same arrays. Two numbers come from the **train split only**:

- ``train_acc`` -- the fit set's recovery accuracy: clusters fitted on the train features, named by Hungarian
  matching with the train fine labels, compared with those labels. Paper A's protocol already uses the train
  fine labels (to name the clusters), so this uses nothing the protocol does not; it never sees a test label.
  **This is the selection score**: the candidate with the highest ``train_acc`` (mean over the runs given,
  :func:`choose`) wins, ties broken by the order of :data:`CANDIDATES`.
- ``train_silhouette`` -- a label-free check: the mean silhouette of each superclass's fit partition in the
  raw feature space (the same space for every candidate; weighted by group size; on at most 2,000 rows per
  group). Reported, not used by the rule.

``test_acc`` (predicted routing) and ``oracle_test_acc`` (true-coarse routing) are computed after the fact and
reported next to the choice; they play no part in it.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from nclab.utils.errors import NclabError

# (name, settings over the base spec); "kmeans/whiten" is the library default, "kmeans/none" paper A's plain k-means
CANDIDATES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("kmeans/none", {"method": "kmeans", "normalize": "none"}),
    ("kmeans/center+l2", {"method": "kmeans", "normalize": "center+l2"}),
    ("kmeans/whiten", {"method": "kmeans", "normalize": "whiten", "whiten_var": 0.95}),
    ("kmeans/whiten0.8", {"method": "kmeans", "normalize": "whiten", "whiten_var": 0.8}),
    ("kmeans/whiten,no-guard", {"method": "kmeans", "normalize": "whiten", "whiten_var": 0.95, "guard": False}),
    ("kmeans/pca-k", {"method": "kmeans", "normalize": "pca", "pca_dims": None}),
    ("kmeans/pca-8", {"method": "kmeans", "normalize": "pca", "pca_dims": 8}),
    ("pursuit/whiten", {"method": "pursuit", "normalize": "whiten", "whiten_var": 0.95}),
    ("pursuit/none", {"method": "pursuit", "normalize": "none"}),
    ("gmm-full/pca-8", {"method": "gmm", "normalize": "pca", "pca_dims": 8, "gmm_covariance": "full"}),
    ("gmm-diag/whiten", {"method": "gmm", "normalize": "whiten", "whiten_var": 0.95, "gmm_covariance": "diag"}),
    ("gmm-full/whiten0.8", {"method": "gmm", "normalize": "whiten", "whiten_var": 0.8, "gmm_covariance": "full"}),
    ("spectral/whiten", {"method": "spectral", "normalize": "whiten", "whiten_var": 0.95}),
    ("spectral/center+l2", {"method": "spectral", "normalize": "center+l2"}),
)
NAMES = tuple(n for n, _ in CANDIDATES)

__all__ = ["CANDIDATES", "NAMES", "compare_methods", "choose", "partition_silhouette"]


def partition_silhouette(x: np.ndarray, groups: np.ndarray, labels: np.ndarray, *, max_rows: int = 2000,
                         seed: int = 0) -> float:
    """Size-weighted mean over groups (``groups`` (N,)) of the silhouette of ``labels`` (N,) on rows ``x`` (N, D);
    groups with one cluster count as 0; each group on at most ``max_rows`` seeded random rows."""
    from sklearn.metrics import silhouette_score

    rng = np.random.default_rng(seed)
    total, weight = 0.0, 0
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        if len(idx) > max_rows:
            idx = np.sort(rng.choice(idx, max_rows, replace=False))
        lab = labels[idx]
        n_lab = len(np.unique(lab))
        s = float(silhouette_score(x[idx], lab)) if 1 < n_lab < len(idx) else 0.0
        total += s * int((groups == g).sum())
        weight += int((groups == g).sum())
    return total / weight if weight else float("nan")


def compare_methods(arrays: Mapping[str, np.ndarray], hierarchy, base: Mapping[str, Any] | None = None,
                    names: Sequence[str] | None = None) -> list[dict]:
    """One row per candidate: ``name``, ``settings``, ``train_acc``, ``train_silhouette``, ``test_acc``,
    ``oracle_test_acc``. ``arrays``: ``train_features`` (N, D), ``train_coarse`` (N,) (the labels the fit set is
    grouped by), ``train_fine`` (N,), ``test_features`` (M, D), ``test_coarse_pred`` (M,) or None (oracle
    routing), ``test_fine`` (M,); optional ``train_coarse_noisy`` (label noise: grouped by it instead)."""
    from nclab.contracts.recovery import RecoverySpec
    from nclab.finegrain.evaluate import evaluate_recovery

    chosen = list(names) if names else list(NAMES)
    unknown = [n for n in chosen if n not in NAMES]
    if unknown:
        raise NclabError(f"unknown candidate(s) {', '.join(unknown)}; known: {', '.join(NAMES)}")
    base_spec = RecoverySpec.from_mapping(dict(base or {}))
    noisy = arrays.get("train_coarse_noisy") is not None
    ctr = np.asarray(arrays["train_coarse_noisy" if noisy else "train_coarse"])
    xtr = np.asarray(arrays["train_features"], dtype=np.float32)
    rows = []
    for name, changes in CANDIDATES:
        if name not in chosen:
            continue
        spec = RecoverySpec.from_mapping({**base_spec.to_dict(), **changes})
        rep, rec = evaluate_recovery(xtr, ctr, arrays["train_fine"], arrays["test_features"],
                                     arrays.get("test_coarse_pred"), arrays["test_fine"], hierarchy,
                                     return_model=True, noisy_coarse=noisy, **spec.estimator_kwargs())
        rows.append({"name": name, "settings": changes, "train_acc": rep["train_acc"],
                     "train_silhouette": partition_silhouette(xtr, ctr, rec.labels_, seed=spec.seed),
                     "test_acc": rep["test_acc"], "oracle_test_acc": rep["oracle_test_acc"]})
    return rows


def choose(per_run: Sequence[Sequence[dict]]) -> dict:
    """The selection rule (module docstring) over the rows of one or more runs (each from
    :func:`compare_methods`, same candidates): ``{"chosen": name, "rule": ..., "table": [...]}`` where each table
    row has ``name``, ``train_acc_mean`` (the score), ``train_silhouette_mean``, ``test_acc_mean``,
    ``oracle_test_acc_mean``, ``runs`` and, per run, ``test_acc`` values (``test_acc_runs``)."""
    if not per_run or not all(per_run):
        raise NclabError("nothing to choose from: pass the candidate rows of at least one run")
    order = [r["name"] for r in per_run[0]]
    table = []
    for name in order:
        got = [next(r for r in rows if r["name"] == name) for rows in per_run]
        mean = {k: float(np.mean([g[k] for g in got])) for k in ("train_acc", "train_silhouette", "test_acc",
                                                                 "oracle_test_acc")}
        table.append({"name": name, "train_acc_mean": mean["train_acc"],
                      "train_silhouette_mean": mean["train_silhouette"], "test_acc_mean": mean["test_acc"],
                      "oracle_test_acc_mean": mean["oracle_test_acc"], "runs": len(got),
                      "test_acc_runs": [g["test_acc"] for g in got]})
    best = max(range(len(table)), key=lambda i: (table[i]["train_acc_mean"], -i))
    return {"chosen": table[best]["name"], "rule": "highest mean train-split recovery accuracy (train fine labels "
            "name the clusters in the protocol already; no test label is used)", "table": table}
