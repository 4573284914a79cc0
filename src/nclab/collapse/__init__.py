"""Neural-collapse metrics: streaming float64 class statistics and exact NC1-NC4 metrics.

Quick use::

    from nclab.collapse import ClassStats, SecondPass, compute_metrics, metrics_from_arrays
    stats = ClassStats(num_classes=K)
    for h, y in batches:
        stats.update(h, y)
    m = compute_metrics(stats, W, b)        # dict: nc1, cdnv, etf_error_means, self_duality, ...

See docs/metrics.md for every formula and the paper whose convention it follows.
The trainer callback lives in ``nclab.collapse.callback`` (imported lazily: it needs the trainer).
"""

from nclab.collapse.metrics import (
    between_span,
    cdnv,
    centred_means,
    compute_metrics,
    equiangular,
    equinorm,
    etf_error,
    etf_target,
    frame_error,
    maxangle,
    metrics_from_arrays,
    nc1,
    nc1_quotient,
    of_error,
    self_duality,
)
from nclab.collapse.second_pass import SecondPass
from nclab.collapse.stats import ClassStats
from nclab.collapse.views import fine_within_coarse, flatten, hierarchy_metrics, hierarchy_metrics_from_arrays

__all__ = [
    "ClassStats", "SecondPass", "compute_metrics", "metrics_from_arrays", "hierarchy_metrics",
    "hierarchy_metrics_from_arrays", "fine_within_coarse", "flatten", "nc1", "nc1_quotient", "cdnv",
    "equinorm", "equiangular", "maxangle", "etf_error", "etf_target", "of_error", "frame_error",
    "self_duality", "between_span", "centred_means",
]
