"""Fine-label recovery from coarse-trained features (Yang, Steinhardt & Hu, ICML 2023).

``FineLabelRecovery`` (fit/predict), ``evaluate_recovery`` (the results.json ``recovery`` block),
``linear_probe`` (a supervised per-superclass upper bound, the ``probe`` block), ``kmeans`` (fast torch
k-means), ``clone`` and ``NotFittedError`` (scikit-learn's estimator conventions, ``nclab.finegrain.base``),
``RecoveryCallback`` (in ``nclab.finegrain.callback``); the paper's experiments are in
``nclab.experiments.finegrain_runs``. See docs/recovery.md.
"""

from nclab.finegrain.base import NotFittedError, clone
from nclab.finegrain.evaluate import evaluate_recovery
from nclab.finegrain.kmeans import KMeansResult, kmeans
from nclab.finegrain.probe import linear_probe
from nclab.finegrain.recovery import FineLabelRecovery, hungarian_names

__all__ = ["FineLabelRecovery", "evaluate_recovery", "linear_probe", "kmeans", "KMeansResult", "hungarian_names",
           "clone", "NotFittedError"]
