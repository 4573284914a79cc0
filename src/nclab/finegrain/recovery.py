"""Fine-label recovery from features of a coarse-trained network (Yang, Steinhardt & Hu, ICML 2023).

Protocol (defaults):

1. for each superclass ``c``, cluster the fit features of samples with coarse label ``c`` into
   ``k_c`` = number of fine classes under ``c`` clusters (k-means, ``n_init`` restarts);
2. name each cluster with a fine label by one-to-one Hungarian matching of clusters to the fine classes
   under ``c``, maximising the number of fit samples whose fine label equals the cluster's name
   (the only use of fine labels);
3. a new sample is routed by a coarse label (the network's *predicted* one; the true one gives the
   "oracle" upper bound) to the superclass, then gets the name of the nearest centroid of that superclass.

Shapes: features ``(N, D)`` float; coarse and fine labels ``(N,)`` int. Normalisations are fitted on the fit
set and applied identically to any later input; centroids are kept both in the normalised space (for
prediction) and as raw-feature means (``raw_centroids_``, for plots).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from nclab.data.hierarchy import Hierarchy
from nclab.finegrain.kmeans import kmeans
from nclab.finegrain.kselect import estimate_k
from nclab.finegrain.pursuit import bimodal_split
from nclab.contracts.recovery import CLUSTERINGS, DEFAULTS, METHODS, NORMALIZATIONS, PARAMS, Param, RecoverySpec
from nclab.finegrain.base import EstimatorMixin, InvalidParameterError
from nclab.finegrain.whiten import pca_whitener
from nclab.utils.errors import NclabError
from nclab.utils.finite import nonfinite_error

if TYPE_CHECKING:  # annotations only: the estimator works on numpy arrays (tensors are converted)
    import torch

__all__ = ["FineLabelRecovery", "ESTIMATOR_PARAMS", "hungarian_names", "within_ss", "METHODS", "NORMALIZATIONS",
           "CLUSTERINGS"]


def hungarian_names(clusters: np.ndarray, fine: np.ndarray, n_clusters: int, classes: Sequence[int]) -> np.ndarray:
    """One-to-one naming of clusters ``0..n_clusters-1`` with the fine classes ``classes``.

    Maximises ``sum_j count(cluster j, class name[j])`` (scipy ``linear_sum_assignment`` on the contingency
    table). With more clusters than classes the unmatched clusters take their majority class; with fewer,
    some classes get no cluster. Returns ``names`` (n_clusters,) int64.
    """
    clusters, fine = np.asarray(clusters).reshape(-1), np.asarray(fine).reshape(-1)
    if clusters.shape != fine.shape:
        raise NclabError(f"hungarian_names: {clusters.size} cluster ids but {fine.size} fine labels; pass one of each "
                         "per sample")
    if clusters.size and (not np.issubdtype(clusters.dtype, np.integer) or clusters.min() < 0
                          or clusters.max() >= n_clusters):
        raise NclabError(f"hungarian_names: cluster ids must be integers in 0..{n_clusters - 1}")
    classes = np.asarray(list(classes), dtype=np.int64)
    pos = {int(c): i for i, c in enumerate(classes)}
    table = np.zeros((n_clusters, len(classes)), dtype=np.int64)
    for j, f in zip(clusters.tolist(), fine.tolist()):
        i = pos.get(int(f))
        if i is not None:
            table[j, i] += 1
    rows, cols = linear_sum_assignment(table, maximize=True)
    names = classes[np.argmax(table, axis=1)] if len(classes) else np.zeros(n_clusters, np.int64)
    names = np.asarray(names, dtype=np.int64)
    names[rows] = classes[cols]
    return names


@dataclass
class _Group:
    """Fitted state of one superclass (or the single global group)."""

    coarse: int
    fine: list[int]  # fine classes that the clusters are named from
    mean: np.ndarray  # (D,) fit mean of the group in raw space (for "center")
    proj: np.ndarray | None  # (D, d) whitening projection, or None
    centers: np.ndarray  # (k, D') cluster centres in the normalised space
    raw_centers: np.ndarray  # (k, D) raw-feature means of the clusters
    names: np.ndarray  # (k,) fine label of each cluster
    model: object | None = None  # fitted GaussianMixture for method="gmm"
    normalize: str = "none"  # the group's normalisation
    shares: tuple[float, float] | None = None  # guard: within-cluster SS in the normalised space (own, raw's)
    guarded: bool = False  # the guard kept the un-normalised clustering's partition
    k: int = 0  # clusters used (the hierarchy's count, or the estimate under fine_per_coarse="auto")
    k_scores: dict | None = None  # fine_per_coarse="auto": criterion value of each candidate k


def within_ss(z: np.ndarray, labels: np.ndarray) -> float:
    """The k-means objective of the partition ``labels`` (n,) of rows ``z`` (n, d): ``sum_j sum_{i in j}
    |z_i - m_j|^2`` with ``m_j`` the mean of cluster j, in float64."""
    z = np.asarray(z, dtype=np.float64)
    return float(sum(((z[labels == j] - z[labels == j].mean(0)) ** 2).sum() for j in np.unique(labels)))


# FineLabelRecovery's parameters that are not recovery settings of a run (nclab.contracts.recovery.PARAMS holds
# those): with PARAMS, one row per __init__ parameter, checked by fit
ESTIMATOR_PARAMS: tuple[Param, ...] = (
    Param("hierarchy", object, None, "a Hierarchy, a fine->coarse integer array (num_fine,), or None to infer it from "
          "the (coarse, fine) pairs seen in fit (checked there, with the labels)", nullable=True),
    Param("max_iter", int, 300, "k-means (and GMM) iterations", low=1),
    Param("device", object, "cpu", "torch device of the k-means: 'cpu', 'cuda', 'cuda:1' or a torch.device"),
    Param("n_neighbors", int, 10, "method spectral: neighbours of the kNN graph", low=1),
    Param("max_samples", int, 5000, "methods spectral and agglomerative: points clustered per group (the rest "
          "join the nearest centroid)", low=1),
)
_OWN_DEFAULTS = {p.name: p.default for p in ESTIMATOR_PARAMS}


class FineLabelRecovery(EstimatorMixin):
    """Recover fine labels by clustering features within each superclass.

    Parameters
    ----------
    hierarchy : Hierarchy or array (num_fine,) fine->coarse, or None to infer ``k_c`` from the (coarse, fine)
        pairs seen in ``fit`` (then every fine class must appear under exactly one coarse label).
    method : "kmeans" | "pursuit" | "gmm" | "spectral" | "agglomerative". "pursuit": for a superclass with two
        fine classes, the most bimodal of the k-means split and splits along minimum-kurtosis directions
        (:mod:`nclab.finegrain.pursuit`); k-means for more than two. Spectral uses a kNN graph
        (``n_neighbors``); spectral and agglomerative cluster at most ``max_samples`` points per group and
        extend to the rest by nearest centroid.
    normalize : "none" | "center" (subtract the group's fit mean) | "l2" (unit rows) | "center+l2" |
        "whiten" (PCA whitening per group keeping ``whiten_var`` of the variance) | "pca" (projection on the
        group's top ``pca_dims`` principal axes, default its number of fine classes, unscaled).
    guard : k-means with a normalisation other than "none": the un-normalised features' k-means partition is
        one more candidate solution of the normalised objective. It is moved into the normalised space (centres
        = its cluster means there, then one nearest-centre step) and kept when its :func:`within_ss` there is
        lower than the normalised k-means' own result. Whitening gives every retained axis unit variance, so
        with a few informative directions among many noise directions k-means in the whitened space stalls in a
        poor local optimum that raw k-means avoids; the guard is a better restart, chosen without labels by
        the objective being minimised. ``guarded_`` lists the groups where it was kept.
        Every method is translation invariant (k-means, GMM, a kNN graph, Ward linkage), so "center" alone
        changes nothing; it matters before "l2" ("center+l2": directions around the group's mean rather than
        around the origin).
    clustering : "per_coarse" (the paper's protocol) or "global" (one clustering with K_fine clusters,
        Hungarian over all fine classes; routing labels are then ignored).
    n_init, max_iter, seed, device : k-means restarts, iterations, RNG seed, torch device.

    scikit-learn's conventions (:mod:`nclab.finegrain.base`): ``__init__`` only stores the parameters; ``fit``
    checks them against ``_parameter_constraints`` (the rows of :data:`nclab.contracts.recovery.PARAMS` and of
    :data:`ESTIMATOR_PARAMS`); ``get_params``/``set_params``/:func:`nclab.finegrain.clone`; predict, score,
    centroids and ``guarded_`` raise :class:`nclab.finegrain.NotFittedError` before ``fit``. Fitted attributes:
    ``groups_``, ``labels_``, ``fit_pred_``, ``fine_to_coarse_``, ``n_features_in_``, ``guarded_``.
    """

    _parameter_constraints = {**{p.name: p for p in ESTIMATOR_PARAMS}, **{p.name: p for p in PARAMS if p.name in
                                                                         RecoverySpec().estimator_kwargs()}}
    _fit_call = "fit(features, coarse, fine)"

    def __init__(
        self,
        hierarchy: Hierarchy | Sequence[int] | np.ndarray | None = None,
        *,
        method: str = DEFAULTS["method"],
        normalize: str = DEFAULTS["normalize"],
        clustering: str = DEFAULTS["clustering"],
        n_init: int = DEFAULTS["n_init"],
        max_iter: int = _OWN_DEFAULTS["max_iter"],
        seed: int = DEFAULTS["seed"],
        device: str = _OWN_DEFAULTS["device"],
        n_neighbors: int = _OWN_DEFAULTS["n_neighbors"],
        max_samples: int = _OWN_DEFAULTS["max_samples"],
        whiten_var: float = DEFAULTS["whiten_var"],
        guard: bool = DEFAULTS["guard"],
        fine_per_coarse: str | None = DEFAULTS["fine_per_coarse"],
        k_criterion: str = DEFAULTS["k_criterion"],
        k_max: int = DEFAULTS["k_max"],
        pca_dims: int | None = DEFAULTS["pca_dims"],
        gmm_covariance: str = DEFAULTS["gmm_covariance"],
    ):
        # stores only (scikit-learn's convention); fit validates against _parameter_constraints
        self.hierarchy = hierarchy
        self.method = method
        self.normalize = normalize
        self.clustering = clustering
        self.n_init = n_init
        self.max_iter = max_iter
        self.seed = seed
        self.device = device
        self.n_neighbors = n_neighbors
        self.max_samples = max_samples
        self.whiten_var = whiten_var
        self.guard = guard
        self.fine_per_coarse = fine_per_coarse
        self.k_criterion = k_criterion
        self.k_max = k_max
        self.pca_dims = pca_dims
        self.gmm_covariance = gmm_covariance

    def _validate_params(self) -> None:
        """The table's checks (:class:`nclab.finegrain.base.EstimatorMixin`), then ``device``, which must parse as
        a torch device (``hierarchy`` is checked with the labels, by :meth:`_f2c`)."""
        super()._validate_params()
        import torch

        if not isinstance(self.device, (str, torch.device)):
            ok = False
        else:
            try:
                torch.device(self.device)
                ok = True
            except (RuntimeError, ValueError):
                ok = False
        if not ok:
            raise InvalidParameterError(f"FineLabelRecovery: device must be a torch device such as 'cpu', 'cuda' or "
                                        f"'cuda:1' (or a torch.device), got {self.device!r}; pass e.g. device='cpu' "
                                        "(the default)")

    # ----------------------------------------------------------------------------- helpers
    def _f2c(self, coarse: np.ndarray | None, fine: np.ndarray | None) -> np.ndarray:
        h = self.hierarchy
        if isinstance(h, Hierarchy):
            return h.fine_to_coarse
        if isinstance(h, str):
            raise NclabError(f"hierarchy {h!r} is a spec; build it with nclab.data.build_hierarchy(spec, class_names) "
                             "or pass a fine->coarse array")
        if h is not None:
            a = np.asarray(h)
            if a.ndim != 1 or a.size == 0 or not np.issubdtype(a.dtype, np.integer) or a.min() < 0:
                raise NclabError(f"a hierarchy array must be 1-D non-negative integers (fine class -> coarse class), "
                                 f"got shape {a.shape} dtype {a.dtype}")
            missing = sorted(set(range(int(a.max()) + 1)) - set(a.tolist()))
            if missing:
                raise NclabError(f"hierarchy array leaves coarse classes {missing[:5]} without fine classes; coarse "
                                 "classes must be numbered 0..C-1")
            return a.astype(np.int64)
        if coarse is None or fine is None:
            raise NclabError("FineLabelRecovery needs a hierarchy or fine labels in fit to know k per superclass")
        if len(fine) != len(coarse):  # zip() below would pair the first rows and drop the rest
            raise NclabError(f"fine labels have {len(fine)} rows but coarse labels have {len(coarse)}; pass the "
                             "labels of the same samples")
        _check_contiguous(fine, "fine", "or pass a hierarchy")
        _check_contiguous(coarse, "coarse", "")
        f2c = np.full(int(fine.max()) + 1, -1, dtype=np.int64)
        for f, c in sorted(set(zip(fine.tolist(), coarse.tolist()))):
            if f2c[f] not in (-1, c):
                raise NclabError(f"fine class {f} appears under coarse labels {f2c[f]} and {c}, so the hierarchy "
                                 "cannot be inferred; pass the hierarchy the labels were made with (and check the "
                                 "coarse labels)")
            f2c[f] = c
        return f2c

    @staticmethod
    def _check(x, labels: dict[str, np.ndarray | None]) -> tuple[np.ndarray, dict]:
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[0] == 0:
            raise NclabError(f"features must be a non-empty 2-D array (N, D), got shape {x.shape}")
        if not np.issubdtype(x.dtype, np.number):
            raise NclabError(f"features must be numeric, got dtype {x.dtype}")
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported below, by name
            x32 = x.astype(np.float32, copy=False)
        if not np.isfinite(x32).all():  # NaN/inf given, or finite values beyond float32's range
            raise nonfinite_error(x, "features", "check the network/run that produced them",
                                  "converting them to float32")
        x = x32
        out = {}
        for name, y in labels.items():
            if y is None:
                out[name] = None
                continue
            y = np.asarray(y)
            if y.shape != (x.shape[0],):
                raise NclabError(f"{name} labels have shape {y.shape} but features have {x.shape[0]} rows; "
                                 "pass matching arrays")
            out[name] = class_indices(y, name)
        return x, out

    def _transform(self, x: np.ndarray, g: _Group) -> np.ndarray:
        """Apply the group's fitted normalisation to rows of x (n, D) -> (n, D')."""
        z = x
        if g.normalize in ("center", "center+l2", "whiten", "pca"):
            z = z - g.mean
        if g.normalize in ("whiten", "pca"):
            z = z @ g.proj
        if g.normalize in ("l2", "center+l2"):
            z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
        return z.astype(np.float32, copy=False)

    def _whitener(self, x: np.ndarray) -> np.ndarray:
        """:func:`pca_whitener` keeping ``whiten_var`` of the group's variance."""
        return pca_whitener(x, self.whiten_var)

    def _cluster(self, z: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray, object | None]:
        """Cluster z (n, d) into k groups -> (labels (n,), centres (k, d), fitted model or None)."""
        if k == 1:
            return np.zeros(len(z), np.int64), z.mean(0, keepdims=True), None
        if self.method == "pursuit" and k == 2:
            lab, centers, _ = bimodal_split(z, n_init=self.n_init, seed=seed, max_iter=self.max_iter,
                                            device=self.device)
            return lab, centers, None
        if self.method in ("kmeans", "pursuit"):  # pursuit with more than two fine classes: plain k-means
            r = kmeans(z, k, n_init=self.n_init, max_iter=self.max_iter, seed=seed, device=self.device)
            return r.labels, r.centers, None
        if self.method == "gmm":
            from sklearn.mixture import GaussianMixture

            # full covariances need many points per cluster (else they overfit); start from our k-means
            cov = self.gmm_covariance if self.gmm_covariance != "auto" else (
                "full" if len(z) >= 10 * k * z.shape[1] else "diag")
            km = kmeans(z, k, n_init=self.n_init, max_iter=self.max_iter, seed=seed, device=self.device)
            gm = GaussianMixture(k, covariance_type=cov, means_init=km.centers, reg_covar=1e-4,
                                 random_state=seed, max_iter=self.max_iter)
            lab = gm.fit_predict(z).astype(np.int64)
            return lab, gm.means_.astype(np.float32), gm
        # spectral / agglomerative are O(n^2): cluster a subsample, extend by nearest centroid
        rng = np.random.default_rng(seed)
        sub = (np.sort(rng.choice(len(z), self.max_samples, replace=False)) if len(z) > self.max_samples
               else np.arange(len(z)))
        zs = z[sub]
        if self.method == "spectral":
            from sklearn.cluster import SpectralClustering

            sc = SpectralClustering(k, affinity="nearest_neighbors", n_neighbors=min(self.n_neighbors, len(zs) - 1),
                                    random_state=seed, assign_labels="cluster_qr")
            ls = sc.fit_predict(zs)
        else:
            from sklearn.cluster import AgglomerativeClustering

            ls = AgglomerativeClustering(k, linkage="ward").fit_predict(zs)
        centers = np.stack([zs[ls == j].mean(0) if (ls == j).any() else zs[0] for j in range(k)]).astype(np.float32)
        return _nearest(z, centers), centers, None

    def _guarded(self, xg: np.ndarray, z: np.ndarray, cl: np.ndarray, g: _Group, seed: int) -> np.ndarray:
        """The guard (class docstring): cluster the raw rows ``xg`` too and keep that partition, moved to the
        normalised space ``z`` by one nearest-centre step, when its within-cluster sum of squares there is lower
        than the normalised clustering's own (``cl``)."""
        k = g.k
        # a candidate, not the protocol's clustering: a few restarts suffice (raw pixels make this the costly part)
        raw_cl = kmeans(xg, k, n_init=min(self.n_init, 3), max_iter=self.max_iter, seed=seed, device=self.device).labels
        centers = np.stack([z[raw_cl == j].mean(0) if (raw_cl == j).any() else z.mean(0) for j in range(k)])
        moved = _nearest(z, centers.astype(np.float32))
        mine, theirs = within_ss(z, cl), within_ss(z, moved)
        g.shares = (mine, theirs)
        if theirs >= mine:
            return cl
        g.guarded = True
        g.centers = np.stack([z[moved == j].mean(0) if (moved == j).any() else centers[j]
                              for j in range(k)]).astype(np.float32)
        return moved

    @property
    def guarded_(self) -> list[int]:
        """Groups (superclass ids; -1 = the global group) whose partition came from the guard."""
        self._check_fitted("guarded_ read")
        return [c for c, g in self.groups_.items() if g.guarded]

    def _assign(self, z: np.ndarray, g: _Group) -> np.ndarray:
        if g.model is not None:
            return g.model.predict(z).astype(np.int64)
        return _nearest(z, g.centers)

    # ----------------------------------------------------------------------------- API
    def fit(self, features: np.ndarray | torch.Tensor, coarse: np.ndarray | None = None, fine: np.ndarray | None = None,
            *, noisy_coarse: bool = False) -> "FineLabelRecovery":
        """Cluster ``features`` (N, D) grouped by ``coarse`` (N,) and name clusters with ``fine`` (N,).

        ``noisy_coarse``: ``coarse`` are noisy training labels (``data.label_noise``), so a row's coarse label
        may differ from its fine label's superclass; such rows are clustered in the superclass they are labelled
        with and take no part in naming (their fine class is not among that superclass's names).

        ``coarse`` may be omitted for ``clustering="global"`` (and is then taken from the hierarchy and
        ``fine`` if given). Without ``fine`` the clusters keep placeholder names (cluster index offsets) and
        only the cluster structure is usable (``labels_``). Sets ``groups_``, ``labels_`` (N,) cluster ids,
        ``fit_pred_`` (N,) named fine predictions of the fit samples.
        """
        self._validate_params()
        x, lab = self._check(features, {"coarse": coarse, "fine": fine})
        coarse, fine = lab["coarse"], lab["fine"]
        f2c = self._f2c(coarse, fine)
        self.fine_to_coarse_ = f2c
        if fine is not None and fine.max() >= len(f2c):
            raise NclabError(f"fine label {int(fine.max())} outside the hierarchy's {len(f2c)} fine classes")
        if self.clustering == "per_coarse" and coarse is None:
            if fine is None:
                raise NclabError("per-superclass recovery needs coarse labels in fit")
            coarse = f2c[fine]
        if coarse is not None and coarse.max() >= f2c.max() + 1:
            raise NclabError(f"coarse label {int(coarse.max())} outside the hierarchy's "
                             f"{int(f2c.max()) + 1} superclasses")
        if coarse is not None and fine is not None and not noisy_coarse:
            check_consistent(f2c, coarse, fine, "fit")
        if self.clustering == "global":
            plan = [(-1, list(range(len(f2c))), np.arange(len(x)))]
        else:
            plan = [(c, [int(f) for f in np.flatnonzero(f2c == c)], np.flatnonzero(coarse == c))
                    for c in range(int(f2c.max()) + 1)]
        self.groups_: dict[int, _Group] = {}
        self.n_features_in_ = x.shape[1]
        self.labels_ = np.full(len(x), -1, dtype=np.int64)
        self.fit_pred_ = np.full(len(x), -1, dtype=np.int64)
        offset = 0
        for c, classes, idx in plan:
            if len(idx) < len(classes):
                raise NclabError(f"superclass {c} has {len(idx)} fit samples but {len(classes)} fine classes; "
                                 "need at least one sample per cluster")
            xg = x[idx]
            g = _Group(c, classes, xg.mean(0), None, np.empty(0), np.empty(0), np.empty(0), normalize=self.normalize)
            if self.normalize == "whiten":
                g.proj = self._whitener(xg)
            elif self.normalize == "pca":
                from nclab.finegrain.whiten import pca_axes

                g.proj = pca_axes(xg, self.pca_dims or len(classes))
            z = self._transform(xg, g)
            seed = self.seed + 1009 * (c + 1)
            k = len(classes)
            if self.fine_per_coarse == "auto":
                # estimated on the un-normalised rows: whitening gives noise axes unit variance too, which hides
                # the cluster structure the criteria look for (docs/recovery.md)
                k, g.k_scores = estimate_k(xg, self.k_max, self.k_criterion, seed=seed)
                k = max(1, min(k, len(idx)))
            g.k = k
            cl, g.centers, g.model = self._cluster(z, k, seed)
            if self.guard and self.normalize != "none" and k > 1 and g.model is None and (
                    self.method == "kmeans" or (self.method == "pursuit" and k > 2)):
                cl = self._guarded(xg, z, cl, g, seed)
            g.raw_centers = np.stack([xg[cl == j].mean(0) if (cl == j).any() else g.mean
                                      for j in range(k)]).astype(np.float32)
            if fine is not None:
                g.names = hungarian_names(cl, fine[idx], k, classes)
            else:  # arbitrary but one-to-one where k matches the hierarchy
                g.names = np.asarray([classes[j % len(classes)] for j in range(k)], dtype=np.int64)
            self.groups_[c] = g
            self.labels_[idx] = cl + offset
            self.fit_pred_[idx] = g.names[cl]
            offset += k
        return self

    def predict(self, features: np.ndarray | torch.Tensor, coarse: np.ndarray | None = None) -> np.ndarray:
        """Fine labels (N,) for ``features`` (N, D), routed by ``coarse`` (N,) (predicted or true superclass)
        to that superclass's nearest centroid. ``coarse`` is ignored for ``clustering="global"``."""
        self._check_fitted("predict called")
        x, lab = self._check(features, {"coarse": coarse})
        coarse = lab["coarse"]
        dim = next(iter(self.groups_.values())).mean.shape[0]
        if x.shape[1] != dim:
            raise NclabError(f"features have {x.shape[1]} columns but the recovery was fitted on {dim}")
        if -1 in self.groups_:  # fitted with clustering="global" (the fitted state, not a later set_params)
            g = self.groups_[-1]
            return g.names[self._assign(self._transform(x, g), g)]
        if coarse is None:
            raise NclabError("per-superclass recovery needs routing coarse labels in predict")
        if coarse.max() >= len(self.groups_):
            raise NclabError(f"routing label {int(coarse.max())} outside the {len(self.groups_)} superclasses")
        out = np.full(len(x), -1, dtype=np.int64)
        for c, g in self.groups_.items():
            idx = np.flatnonzero(coarse == c)
            if len(idx):
                out[idx] = g.names[self._assign(self._transform(x[idx], g), g)]
        return out

    def fit_predict(self, features: np.ndarray | torch.Tensor, coarse: np.ndarray | None = None,
                    fine: np.ndarray | None = None) -> np.ndarray:
        """``fit`` then the named predictions of the fit samples (N,)."""
        return self.fit(features, coarse, fine).fit_pred_

    def score(self, features: np.ndarray | torch.Tensor, coarse: np.ndarray, fine: np.ndarray) -> float:
        """Accuracy (fraction in [0, 1]) of ``predict(features, coarse)`` against ``fine`` (N,): features (N, D),
        coarse (N,) the routing labels. ``fine`` is checked like ``fit``'s labels (shape, integer class
        indices of the fitted hierarchy), so a label column (N, 1) cannot broadcast into a wrong score."""
        self._check_fitted("score called")
        pred = self.predict(features, coarse)
        f = np.asarray(fine)
        if f.shape != pred.shape:
            raise NclabError(f"fine labels have shape {f.shape} but features have {pred.shape[0]} rows; pass one "
                             "label per row, shape (N,)")
        return float(np.mean(pred == class_indices(f, "fine", len(self.fine_to_coarse_))))

    def centroids(self) -> dict[str, np.ndarray]:
        """Arrays for ``centroids.npz``: ``c<k>`` (k_c, D) raw-space cluster means, ``c<k>_fine`` (k_c,) names
        (``c-1`` is the single group of global clustering)."""
        self._check_fitted("centroids called")
        out = {}
        for c, g in self.groups_.items():
            out[f"c{c}"] = g.raw_centers
            out[f"c{c}_fine"] = g.names
        return out


def class_indices(y, what: str, n: int | None = None) -> np.ndarray:
    """``y`` as int64 class indices (integers, or floats holding whole numbers), each >= 0 and, with ``n``, below
    ``n``; else one error naming ``what`` (e.g. "test fine")."""
    a = np.asarray(y)
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if not (np.issubdtype(a.dtype, np.floating) and np.all(a == np.round(a))):
            raise NclabError(f"{what} labels must be integers, got dtype {a.dtype}")
    a = a.astype(np.int64)
    if not a.size:
        return a
    if n is not None and (a.min() < 0 or a.max() >= n):
        bad = int(a.min()) if a.min() < 0 else int(a.max())
        raise NclabError(f"{what} label {bad} is outside 0..{n - 1} (the hierarchy has {n} classes at that level); "
                         "pass labels made with the same hierarchy")
    if a.min() < 0:
        raise NclabError(f"{what} labels contain negative values; labels are 0-based class indices")
    return a


def _check_contiguous(y: np.ndarray, name: str, alternative: str) -> None:
    """Labels must be class indices 0..K-1 with every index used (ids like {3, 7} or {0, 1, 100000} are not)."""
    present = np.unique(y)
    if present[0] < 0:
        raise NclabError(f"{name} labels contain {int(present[0])}; labels are 0-based class indices 0..K-1")
    k = int(present[-1]) + 1
    if len(present) != k:
        missing = np.setdiff1d(np.arange(k), present)
        shown = ", ".join(str(int(m)) for m in missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise NclabError(f"{name} labels must be class indices 0..K-1 with every class present; {len(missing)} of "
                         f"0..{k - 1} are missing ({shown}); remap them, e.g. numpy.unique(y, return_inverse=True)"
                         + (f", {alternative}" if alternative else ""))


def check_consistent(f2c: np.ndarray, coarse: np.ndarray, fine: np.ndarray, what: str) -> None:
    """Every row's coarse label must be the hierarchy's superclass of its fine label."""
    bad = np.flatnonzero(f2c[fine] != coarse)
    if len(bad):
        i = int(bad[0])
        raise NclabError(f"{len(bad)} of {len(coarse)} {what} rows have a coarse label that is not the superclass "
                         f"of their fine label under the hierarchy (row {i}: fine {int(fine[i])} belongs to coarse "
                         f"{int(f2c[fine[i]])}, labelled {int(coarse[i])}); pass the hierarchy the coarse labels "
                         "were made with")


def _nearest(z: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Index of the nearest centre (squared Euclidean) for each row of z (n, d); centres (k, d)."""
    out = np.empty(len(z), dtype=np.int64)
    c2 = (centers.astype(np.float64) ** 2).sum(1)
    for s in range(0, len(z), 8192):
        b = z[s : s + 8192].astype(np.float64)
        out[s : s + 8192] = np.argmin(c2[None, :] - 2.0 * b @ centers.T.astype(np.float64), axis=1)
    return out
