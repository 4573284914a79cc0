"""The method-selection protocol: it picks the known-best method on synthetic data and never reads test labels."""

import numpy as np
import pytest

from nclab.finegrain.select import choose, compare_methods
from nclab.utils.errors import NclabError

NAMES = ["kmeans/none", "kmeans/center+l2", "kmeans/whiten"]


def anisotropic(n_per_class: int, seed: int):
    """Two superclasses of two fine classes. The fine split lies along axis 0 (centres -3, +3, unit noise); five
    other axes are unimodal noise of std 4. Splitting a std-4 Gaussian lowers the k-means objective more than the
    fine split does, so raw-scale k-means cuts the noise (about 50 %); after whitening every axis has unit
    variance and the bimodal axis is the best cut: whitening is the known-best method here."""
    rng = np.random.default_rng(seed)
    fine = np.repeat(np.arange(4), n_per_class)
    coarse = fine // 2
    x = np.zeros((len(fine), 8))
    x[:, 0] = np.where(fine % 2 == 0, -3.0, 3.0) + rng.standard_normal(len(fine))
    x[:, 1:6] = 4.0 * rng.standard_normal((len(fine), 5))
    x[:, 6] = 40.0 * coarse + rng.standard_normal(len(fine))
    x[:, 7] = rng.standard_normal(len(fine))
    return x.astype(np.float32), coarse, fine


def _arrays(seed=0):
    xtr, ctr, ftr = anisotropic(300, seed)
    xte, cte, fte = anisotropic(200, seed + 100)
    return {"train_features": xtr, "train_coarse": ctr, "train_fine": ftr, "test_features": xte,
            "test_coarse_pred": cte, "test_fine": fte}


def test_protocol_picks_the_known_best_method():
    rows = compare_methods(_arrays(), np.array([0, 0, 1, 1]), {"n_init": 3}, NAMES)
    by = {r["name"]: r for r in rows}
    assert by["kmeans/none"]["test_acc"] < 0.7 < 0.9 < by["kmeans/whiten"]["test_acc"]  # the construction holds
    sel = choose([rows])
    assert sel["chosen"] == "kmeans/whiten"
    assert max(rows, key=lambda r: r["test_acc"])["name"] == sel["chosen"]


def test_choice_does_not_depend_on_test_labels():
    a = _arrays(1)
    rows = compare_methods(a, np.array([0, 0, 1, 1]), {"n_init": 3}, NAMES)
    b = dict(a, test_fine=np.random.default_rng(0).permutation(a["test_fine"]))  # scrambled test labels
    rows_b = compare_methods(b, np.array([0, 0, 1, 1]), {"n_init": 3}, NAMES)
    assert [r["train_acc"] for r in rows] == [r["train_acc"] for r in rows_b]
    assert choose([rows])["chosen"] == choose([rows_b])["chosen"]
    assert [r["test_acc"] for r in rows] != [r["test_acc"] for r in rows_b]


def test_choose_averages_train_scores_over_runs():
    run1 = [{"name": "a", "train_acc": 0.9, "train_silhouette": 0.1, "test_acc": 0.5, "oracle_test_acc": 0.5},
            {"name": "b", "train_acc": 0.8, "train_silhouette": 0.2, "test_acc": 0.9, "oracle_test_acc": 0.9}]
    run2 = [{"name": "a", "train_acc": 0.6, "train_silhouette": 0.1, "test_acc": 0.5, "oracle_test_acc": 0.5},
            {"name": "b", "train_acc": 0.8, "train_silhouette": 0.2, "test_acc": 0.7, "oracle_test_acc": 0.7}]
    sel = choose([run1, run2])
    assert sel["chosen"] == "b"  # mean 0.80 > 0.75, though a wins run 1
    row = next(t for t in sel["table"] if t["name"] == "b")
    assert row["test_acc_mean"] == pytest.approx(0.8) and row["test_acc_runs"] == [0.9, 0.7]
    with pytest.raises(NclabError, match="unknown candidate"):
        compare_methods(_arrays(), np.array([0, 0, 1, 1]), None, ["kmeans/bogus"])


def test_cli_compare_methods_on_arrays(tmp_path, capsys):
    import json

    from nclab.cli import main

    a = _arrays(2)
    paths = {}
    for k, v in a.items():
        paths[k] = tmp_path / f"{k}.npy"
        np.save(paths[k], v)
    rc = main(["recover", "--compare-methods", "--candidates", "kmeans/none,kmeans/whiten", "--n-init", "3",
               "--features-train", str(paths["train_features"]), "--coarse-train", str(paths["train_coarse"]),
               "--fine-train", str(paths["train_fine"]), "--features-test", str(paths["test_features"]),
               "--coarse-pred", str(paths["test_coarse_pred"]), "--fine-test", str(paths["test_fine"]), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["chosen"] == "kmeans/whiten" and [r["name"] for r in out["candidates"]] == [
        "kmeans/none", "kmeans/whiten"]


def test_cli_refuses_candidates_without_compare_and_unknown_names(tmp_path, capsys):
    from nclab.cli import main

    assert main(["recover", "--candidates", "kmeans/none", "--run", str(tmp_path)]) == 2
    assert "--candidates selects the candidates of --compare-methods" in capsys.readouterr().err
    a = _arrays(3)
    args = []
    for k, flag in (("train_features", "--features-train"), ("train_coarse", "--coarse-train"),
                    ("train_fine", "--fine-train"), ("test_features", "--features-test"),
                    ("test_coarse_pred", "--coarse-pred"), ("test_fine", "--fine-test")):
        np.save(tmp_path / f"{k}.npy", a[k])
        args += [flag, str(tmp_path / f"{k}.npy")]
    assert main(["recover", "--compare-methods", "--candidates", "kmeans/typo", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown candidate(s) kmeans/typo") and err.count("\n") == 1
