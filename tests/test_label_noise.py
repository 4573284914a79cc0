"""Label noise: exact flipped fraction, determinism by seed, kinds, config wiring."""

import numpy as np
import pytest

from nclab.data.noise import corrupt_labels
from nclab.utils.errors import NclabError


@pytest.mark.parametrize("kind", ["symmetric", "asymmetric"])
@pytest.mark.parametrize("n,rate", [(1000, 0.2), (1000, 0.4), (333, 0.25), (10, 0.05)])
def test_exact_fraction_changed(kind, n, rate):
    y = np.arange(n) % 5
    r = corrupt_labels(y, 5, rate, kind, seed=3)
    changed = r.labels != y
    assert changed.sum() == int(round(rate * n))  # every chosen label really changes class
    np.testing.assert_array_equal(changed, r.corrupted)
    np.testing.assert_array_equal(r.clean, y)


def test_deterministic_by_seed_and_seed_matters():
    y = np.arange(500) % 4
    a, b = corrupt_labels(y, 4, 0.3, seed=7), corrupt_labels(y, 4, 0.3, seed=7)
    np.testing.assert_array_equal(a.labels, b.labels)
    c = corrupt_labels(y, 4, 0.3, seed=8)
    assert not np.array_equal(a.corrupted, c.corrupted)


def test_asymmetric_is_next_class_and_symmetric_covers_other_classes():
    y = np.arange(4000) % 4
    a = corrupt_labels(y, 4, 0.5, "asymmetric", seed=0)
    np.testing.assert_array_equal(a.labels[a.corrupted], (y[a.corrupted] + 1) % 4)
    s = corrupt_labels(y, 4, 0.5, "symmetric", seed=0)
    # from class 0 the new labels are 1, 2, 3, each about a third of the time (500 flips per class)
    new = s.labels[s.corrupted & (y == 0)]
    counts = np.bincount(new, minlength=4)
    assert counts[0] == 0 and all(abs(c / len(new) - 1 / 3) < 0.08 for c in counts[1:])


def test_zero_rate_changes_nothing_and_bad_input_is_named():
    y = np.arange(20) % 2
    np.testing.assert_array_equal(corrupt_labels(y, 2, 0.0).labels, y)
    with pytest.raises(NclabError, match="rate"):
        corrupt_labels(y, 2, 1.0)
    with pytest.raises(NclabError, match="kind"):
        corrupt_labels(y, 2, 0.1, "pairwise")
    with pytest.raises(NclabError, match="0..1"):
        corrupt_labels(np.array([0, 2]), 2, 0.5)


def test_config_noise_reaches_train_targets_only(tmp_path):
    from nclab.train import Trainer, load_config

    cfg = load_config("tiny", ["data.labels=coarse", "data.label_noise.rate=0.25", "data.label_noise.seed=1"])
    tr = Trainer(cfg, tmp_path / "r")
    clean = tr.clean_targets("train").numpy()
    noisy = tr.train_targets("train").numpy()
    assert (noisy != clean).sum() == int(round(0.25 * len(clean)))
    np.testing.assert_array_equal(tr.train_targets("test").numpy(), tr.clean_targets("test").numpy())
    np.testing.assert_array_equal(tr.label_noise.corrupted, noisy != clean)
    with pytest.raises(NclabError, match="label_noise.kind"):
        load_config("tiny", ["data.label_noise.kind=pair"])


def _naive_nc1(x, y):
    """tr(Sigma_W pinv(Sigma_B)) / K with the definitions of docs/metrics.md, in plain numpy."""
    x = x.astype(np.float64)
    cls = np.unique(y)
    mu = np.stack([x[y == c].mean(0) for c in cls])
    n = np.array([(y == c).sum() for c in cls])
    mg = (n[:, None] * mu).sum(0) / n.sum()
    d = x - mu[np.searchsorted(cls, y)]
    sw = d.T @ d / len(x)
    sb = (mu - mg).T @ (mu - mg) / len(cls)
    return float(np.trace(sw @ np.linalg.pinv(sb)) / len(cls))


def test_noise_split_report_hand_built_case():
    """Four fine classes at 10*e_f (2 superclasses); 6 of 40 rows relabelled to the other superclass. Their
    features stay at their true fine class, and the 'net' memorised the noisy labels."""
    from nclab.finegrain.noisy import noise_split_report
    from nclab.finegrain.recovery import FineLabelRecovery

    rng = np.random.default_rng(0)
    fine = np.repeat(np.arange(4), 10)
    clean = fine // 2
    x = 10.0 * np.eye(4)[fine] + 0.1 * rng.standard_normal((40, 4))
    bad = np.zeros(40, bool)
    bad[[0, 11, 22, 23, 35, 39]] = True
    trained = np.where(bad, 1 - clean, clean)
    pred = trained.copy()  # memorised
    pred[0] = clean[0]  # except one row, where the net predicts the true label
    rec = FineLabelRecovery(np.array([0, 0, 1, 1]), normalize="none", guard=False, n_init=5)
    rec.fit(x, trained, fine, noisy_coarse=True)
    r = noise_split_report(x, trained, clean, fine, pred, rec.fit_pred_, rec, 2)
    assert (r["n_clean"], r["n_corrupted"]) == (34, 6)
    assert r["recovery_train_acc_clean"] == 1.0
    assert r["recovery_train_acc_corrupted"] == 0.0
    assert r["recovery_train_acc_corrupted_true_routing"] == 1.0
    assert r["recovery_train_acc_corrupted_predicted_routing"] == pytest.approx(1 / 6)  # only row 0 routed right
    assert r["net_agrees_noisy_label_corrupted"] == pytest.approx(5 / 6)
    assert r["net_agrees_true_label_corrupted"] == pytest.approx(1 / 6)
    assert r["ncc_corrupted_nearest_true_mean"] == 1.0 and r["ncc_corrupted_nearest_noisy_mean"] == 0.0
    assert r["nc1_clean"] == pytest.approx(_naive_nc1(x[~bad], clean[~bad]), rel=1e-6)
    assert r["nc1_corrupted_noisy_labels"] == pytest.approx(_naive_nc1(x[bad], trained[bad]), rel=1e-6)
    assert r["nc1_corrupted_true_labels"] == pytest.approx(_naive_nc1(x[bad], clean[bad]), rel=1e-6)


def test_recover_trainer_reports_clean_and_corrupted(tmp_path):
    from nclab.finegrain.pipeline import recover_trainer
    from nclab.train import Trainer, load_config

    cfg = load_config("tiny", ["data.labels=coarse", "data.label_noise.rate=0.2", "optim.epochs=2", "callbacks={}"])
    tr = Trainer(cfg, tmp_path / "r")
    tr.fit()
    rep = recover_trainer(tr, spec=None, keep_arrays=True)
    noise = tr.label_noise
    ln = rep["label_noise"]
    assert ln["n_corrupted"] == int(noise.corrupted.sum()) == int(round(0.2 * len(noise.labels)))
    a = rep["_arrays"]
    np.testing.assert_array_equal(a["train_coarse_noisy"], noise.labels)
    np.testing.assert_array_equal(a["train_coarse"], noise.clean)
    assert ln["recovery_train_acc_corrupted"] == 0.0
    # the overall fit-set accuracy is the clean rows' accuracy weighted by their share (corrupted rows score 0)
    assert rep["train_acc"] == pytest.approx(ln["recovery_train_acc_clean"] * ln["n_clean"] / len(noise.labels))


def test_baselines_group_by_the_noisy_labels_too(tmp_path):
    from nclab.finegrain.pipeline import baselines
    from nclab.train import Trainer, load_config

    cfg = load_config("tiny", ["data.labels=coarse", "data.label_noise.rate=0.3", "optim.epochs=1", "callbacks={}"])
    tr = Trainer(cfg, tmp_path / "r")
    tr.fit()
    route = tr.hierarchy.coarse_of(tr.dataset.test.y.numpy())
    out = baselines(tr, route, which=("raw_pixels",))
    # corrupted rows sit in a superclass their fine class is not in: at most the clean share is right on train
    assert out["raw_pixels"]["train_acc"] <= 1 - tr.label_noise.rate + 1e-12
