"""The recovery settings of a run: one declarative table, one frozen record.

:data:`PARAMS` lists every setting of the fine-label recovery protocol once (name, type, allowed values or
interval, default, help). The estimator's defaults, the run config's ``recovery`` section, the trainer
callback and the ``nclab recover`` options are all derived from it, so a run records its settings once
(``config.yaml`` -> ``recovery``) and every later reader (``nclab recover --run``, the report, the callback)
uses the same ones unless it overrides them visibly (:meth:`RecoverySpec.differences`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

from nclab.utils.errors import NclabError

__all__ = ["Param", "PARAMS", "RecoverySpec", "spec_from_options", "METHODS", "NORMALIZATIONS", "CLUSTERINGS"]

METHODS = ("kmeans", "pursuit", "gmm", "spectral", "agglomerative")
NORMALIZATIONS = ("none", "center", "l2", "center+l2", "whiten", "pca")
CLUSTERINGS = ("per_coarse", "global")


@dataclass(frozen=True)
class Param:
    """One setting: ``kind`` is ``int``, ``float``, ``str`` or ``bool``; ``choices`` or the interval
    ``[low, high]`` (``low_open``: ``low`` excluded) constrain it; ``nullable`` admits None; ``noun`` names the
    setting in the estimator's "unknown ..." message (default: its name)."""

    name: str
    kind: type
    default: Any
    help: str
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    nullable: bool = False
    noun: str | None = None

    def describe(self) -> str:
        if self.choices:
            s = "one of " + ", ".join(map(str, self.choices))
        elif self.low is not None or self.high is not None:
            lo = "(" if self.low_open else "["
            s = f"{'an integer' if self.kind is int else 'a number'} in {lo}{self.low}, " \
                f"{'inf' if self.high is None else self.high}]"
        else:
            s = f"a {self.kind.__name__}"
        return s + (" or null" if self.nullable else "")

    def check(self, value: Any, where: str) -> Any:
        """``value`` converted to ``kind``, or NclabError naming ``where`` (e.g. "recovery.normalize")."""
        if value is None:
            if self.nullable:
                return None
            raise NclabError(f"{where} must be {self.describe()}, got null")
        ok = isinstance(value, self.kind) and not (isinstance(value, bool) and self.kind is not bool)
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise NclabError(f"{where} must be {self.describe()}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise NclabError(f"{where} must be a finite number, got {value!r}")
        if self.choices and value not in self.choices:
            raise NclabError(f"{where}={value!r} is not allowed; choose {self.describe()}")
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            raise NclabError(f"{where}={value!r} is too small; it must be {self.describe()}")
        if self.high is not None and value > self.high:
            raise NclabError(f"{where}={value!r} is too large; it must be {self.describe()}")
        return value


PARAMS: tuple[Param, ...] = (
    Param("method", str, "kmeans", "kmeans (paper A's protocol), pursuit (two-class superclasses: the most bimodal "
          "of the k-means split and minimum-kurtosis splits), gmm, spectral, agglomerative", choices=METHODS,
          noun="recovery method"),
    Param("normalize", str, "whiten", "feature normalisation inside each superclass before clustering: none, center, "
          "l2, center+l2, whiten (PCA axes holding whiten_var of the variance, each scaled to unit variance), or "
          "pca (the pca_dims top principal axes of the centred group, unscaled)", choices=NORMALIZATIONS,
          noun="normalisation"),
    Param("pca_dims", int, None, "normalize pca: principal axes kept per superclass; null = its number of fine "
          "classes", low=1, nullable=True),
    Param("gmm_covariance", str, "auto", "method gmm: full, diag, or auto (full when the group has at least 10 "
          "points per cluster per dimension, else diag)", choices=("auto", "full", "diag")),
    Param("whiten_var", float, 0.95, "share of the group's variance the whitening keeps", low=0.0, high=1.0,
          low_open=True),
    Param("guard", bool, True, "k-means with a normalisation: the un-normalised features' partition is one more "
          "candidate, kept in a superclass when its within-cluster sum of squares in the normalised space is lower "
          "(whitening can stall k-means where raw features separate at once); the superclasses are reported"),
    Param("clustering", str, "per_coarse", "per_coarse (paper A: k_c clusters inside each superclass, test rows "
          "routed by the predicted superclass) or global (one clustering into all fine classes, no routing)",
          choices=CLUSTERINGS),
    Param("fine_per_coarse", str, None, "clusters per superclass: null = the hierarchy's number of fine classes "
          "under it; auto = estimated inside each superclass by k_criterion on the un-normalised features, in "
          "1..k_max (nclab.finegrain.kselect)", choices=("auto",), nullable=True),
    Param("k_criterion", str, "silhouette", "with fine_per_coarse auto: silhouette (k-means partition, largest "
          "wins), bic (diagonal GMM, smallest wins) or gap (gap statistic)", choices=("silhouette", "bic", "gap")),
    Param("k_max", int, 10, "with fine_per_coarse auto: the largest k tried", low=2),
    Param("n_init", int, 10, "k-means restarts", low=1),
    Param("seed", int, 0, "seed of the clustering restarts", low=0),
    Param("max_train", int, None, "cluster at most this many train samples (a fixed random subset); null = all",
          low=1, nullable=True),
)
BY_NAME = {p.name: p for p in PARAMS}
DEFAULTS = {p.name: p.default for p in PARAMS}


@dataclass(frozen=True)
class RecoverySpec:
    """The recovery protocol's settings (see :data:`PARAMS` for each field's meaning and domain)."""

    method: str = DEFAULTS["method"]
    normalize: str = DEFAULTS["normalize"]
    whiten_var: float = DEFAULTS["whiten_var"]
    pca_dims: int | None = DEFAULTS["pca_dims"]
    gmm_covariance: str = DEFAULTS["gmm_covariance"]
    guard: bool = DEFAULTS["guard"]
    clustering: str = DEFAULTS["clustering"]
    fine_per_coarse: str | None = DEFAULTS["fine_per_coarse"]
    k_criterion: str = DEFAULTS["k_criterion"]
    k_max: int = DEFAULTS["k_max"]
    n_init: int = DEFAULTS["n_init"]
    seed: int = DEFAULTS["seed"]
    max_train: int | None = DEFAULTS["max_train"]

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any] | None, where: str = "recovery") -> "RecoverySpec":
        """Validated spec from a mapping (missing keys take the defaults; unknown keys are refused)."""
        d = dict(d or {})
        unknown = sorted(set(d) - set(BY_NAME))
        if unknown:
            raise NclabError(f"unknown {where} setting(s) {', '.join(unknown)}; known: {', '.join(BY_NAME)}")
        return cls(**{k: BY_NAME[k].check(v, f"{where}.{k}") for k, v in d.items()})

    @classmethod
    def of_config(cls, cfg: Any) -> "RecoverySpec":
        """The settings a run config records in its ``recovery`` section (defaults where it has none): a
        :class:`nclab.train.config.Config` (its typed ``recovery``) or a config mapping (e.g. an old config.yaml)."""
        rec = getattr(cfg, "recovery", None)
        if isinstance(rec, RecoverySpec):
            return rec
        return cls.from_mapping(cfg.get("recovery"), "config key recovery")

    def replace_checked(self, changes: Mapping[str, Any], where: str = "recovery") -> "RecoverySpec":
        """A copy with ``changes`` (a mapping of settings, None values kept as None), validated; errors name
        ``where``."""
        return RecoverySpec.from_mapping({**self.to_dict(), **dict(changes)}, where)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "RecoverySpec":
        """A copy with ``changes`` (validated; None values are ignored, so unset CLI options keep the spec's)."""
        given = {k: v for k, v in changes.items() if v is not None}
        return RecoverySpec.from_mapping({**self.to_dict(), **given})

    def estimator_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :class:`nclab.finegrain.recovery.FineLabelRecovery` (all but ``max_train``)."""
        return {k: v for k, v in self.to_dict().items() if k != "max_train"}

    def differences(self, base: "RecoverySpec") -> list[str]:
        """``["normalize=whiten (run: center+l2)", ...]`` for every setting that differs from ``base``."""
        a, b = self.to_dict(), base.to_dict()
        return [f"{k}={a[k]} (run: {b[k]})" for k in a if a[k] != b[k]]


def spec_from_options(options: Mapping[str, Any] | None) -> RecoverySpec | None:
    """The spec recorded in a results.json ``recovery.options`` block (older runs, whose config has no
    ``recovery`` section), keeping only the keys the table knows; None when there is none."""
    if not isinstance(options, Mapping) or not options:
        return None
    known = {k: v for k, v in options.items() if k in BY_NAME}
    if "guard" not in known:
        known["guard"] = False  # recorded before the guard existed: reproduce those runs exactly
    return RecoverySpec.from_mapping(known, "results.json recovery.options")
