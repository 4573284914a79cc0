"""fine_per_coarse: auto — k estimated inside each superclass, checked against hierarchies with known k."""

import numpy as np
import pytest

from nclab.finegrain.evaluate import evaluate_recovery
from nclab.finegrain.kselect import estimate_k
from nclab.finegrain.recovery import FineLabelRecovery
from nclab.utils.errors import NclabError

KS = (2, 3, 5, 4)  # a different number of fine classes in each superclass


def hierarchy_data(ks=KS, n=60, dim=24, coarse_sep=30.0, fine_sep=6.0, seed=0, sample_seed=None):
    """Fine classes f with centre mu_c + fine_sep * v_f (v_f orthonormal within a superclass), unit noise."""
    rng = np.random.default_rng(seed)
    f2c = np.repeat(np.arange(len(ks)), ks)
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    mu_c = coarse_sep * q[: len(ks)]
    centres = []
    for c, k in enumerate(ks):
        v, _ = np.linalg.qr(rng.standard_normal((dim, k)))
        centres += [mu_c[c] + fine_sep * v[:, j] for j in range(k)]
    fine = np.repeat(np.arange(len(f2c)), n)
    noise = rng if sample_seed is None else np.random.default_rng(sample_seed)  # same centres, other samples
    x = np.asarray(centres)[fine] + noise.standard_normal((len(fine), dim))
    return x.astype(np.float32), f2c[fine], fine, f2c


@pytest.mark.parametrize("criterion", ["silhouette", "bic", "gap"])
def test_each_superclass_gets_its_own_k(criterion):
    x, coarse, fine, f2c = hierarchy_data()
    rec = FineLabelRecovery(f2c, fine_per_coarse="auto", k_criterion=criterion, k_max=7, normalize="none", n_init=3)
    rec.fit(x, coarse, fine)
    assert [rec.groups_[c].k for c in range(len(KS))] == list(KS)
    # with every k right, the recovery equals the one told the true counts
    known = FineLabelRecovery(f2c, normalize="none", n_init=3).fit(x, coarse, fine)
    np.testing.assert_array_equal(rec.fit_pred_, known.fit_pred_)


def test_report_counts_correct_estimates_and_wrong_k_still_names_clusters():
    x, coarse, fine, f2c = hierarchy_data(seed=1)
    xt, ct, ft, _ = hierarchy_data(seed=1, sample_seed=2)
    rep = evaluate_recovery(x, coarse, fine, xt, ct, ft, f2c, fine_per_coarse="auto", k_max=7, normalize="whiten")
    ke = rep["k_estimation"]
    assert (ke["correct"], ke["groups"], ke["fraction_correct"]) == (4, 4, 1.0)
    assert [p["k"] for p in rep["per_superclass"]] == list(KS)
    assert rep["test_acc"] > 0.95
    # k_max below a superclass's count: that group gets fewer clusters, some classes get no cluster, and the
    # summary says so
    rep2 = evaluate_recovery(x, coarse, fine, xt, ct, ft, f2c, fine_per_coarse="auto", k_max=3, normalize="none")
    assert [p["k_estimated"] for p in rep2["k_estimation"]["per_group"]] == [2, 3, 3, 3]
    assert rep2["k_estimation"]["correct"] == 2


def test_silhouette_scores_match_sklearn_on_a_plain_blob_pair():
    from sklearn.metrics import silhouette_score

    rng = np.random.default_rng(0)
    z = np.concatenate([rng.standard_normal((50, 3)), rng.standard_normal((50, 3)) + 12.0]).astype(np.float32)
    k, scores = estimate_k(z, 4, "silhouette")
    assert k == 2
    assert scores[2] == pytest.approx(silhouette_score(z, np.repeat([0, 1], 50)), rel=1e-6)
    assert estimate_k(z[:50], 4, "bic")[0] == 1  # one Gaussian: BIC prefers one component


def test_bad_settings_are_named():
    x, fine = np.random.default_rng(0).normal(size=(8, 2)), np.arange(8) % 2
    for kw, needle in (({"fine_per_coarse": "auto", "k_criterion": "elbow"}, "k_criterion"),
                       ({"fine_per_coarse": 3}, "fine_per_coarse")):
        rec = FineLabelRecovery(np.array([0, 0]), **kw)  # __init__ only stores; fit checks
        with pytest.raises(NclabError, match=needle):
            rec.fit(x, np.zeros(8, np.int64), fine)
    from nclab.contracts.recovery import RecoverySpec

    with pytest.raises(NclabError, match="recovery.k_max"):
        RecoverySpec.from_mapping({"k_max": 1})


def test_report_shows_estimated_k(tmp_path):
    from nclab.report.load import load_run
    from nclab.report.sections import results_section
    from nclab.rundir import RunDir

    x, coarse, fine, f2c = hierarchy_data(seed=3)
    xt, ct, ft, _ = hierarchy_data(seed=3, sample_seed=4)
    rep = evaluate_recovery(x, coarse, fine, xt, ct, ft, f2c, fine_per_coarse="auto", k_max=4, normalize="none")
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    run.write_results({"recovery": rep, "coarse_test_acc": 1.0})
    run.write_status("complete", "")
    html = results_section(load_run(run.path))
    assert "clusters (k estimated)" in html
    assert "number of fine classes in 3 of 4 superclasses" in html  # k_max 4 caps the 5-class superclass
