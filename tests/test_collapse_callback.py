"""NCMetricsCallback: key names, values equal to a direct computation, no global RNG use, CLI --run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nclab.collapse import hierarchy_metrics_from_arrays, metrics_from_arrays
from nclab.collapse.callback import NCMetricsCallback, log_epochs
from nclab.data.hierarchy import Hierarchy
from nclab.data.types import Dataset, Split
from nclab.utils.errors import NclabError
from test_collapse import assert_close, naive

F2C = [0, 0, 1, 1, 2, 2]


class FakeTrainer:
    """The documented trainer surface: coarse-label training, eval_loader yields the training targets."""

    def __init__(self, head_depth=2):
        from nclab.models import build_model

        g = torch.Generator().manual_seed(0)
        means = torch.randn(6, 8, generator=g) * 2
        def split(n):
            y = torch.arange(n) % 6
            return Split(means[y] + torch.randn(n, 8, generator=g), y)
        self.hierarchy = Hierarchy(F2C, [f"f{i}" for i in range(6)], ["a", "b", "c"])
        self.dataset = Dataset("fake", split(240), split(96), [f"f{i}" for i in range(6)], hierarchy=self.hierarchy)
        torch.manual_seed(1)
        self.model = build_model("mlp", 3, (8,), width=16, depth=1, head_depth=head_depth)
        self.device = torch.device("cpu")
        self.cfg = {"optim": {"epochs": 30}}
        self.num_classes = 3

    def train_targets(self, split):
        return self.hierarchy.coarse_of(getattr(self.dataset, split).y)

    def eval_loader(self, split):
        s = getattr(self.dataset, split)
        t = self.train_targets(split)
        return [(s.x[i : i + 50], t[i : i + 50]) for i in range(0, len(s), 50)]


def _collect(tr, split, tap=None):
    with torch.no_grad():
        batches = tr.eval_loader(split)
        if tap is None:
            return torch.cat([tr.model.features(x) for x, _ in batches]).double()
        return torch.cat([tr.model.forward_taps(x, [tap])[tap] for x, _ in batches]).double()


def test_callback_logs_documented_keys_with_values_of_a_direct_computation():
    tr = FakeTrainer()
    tr.model.train()
    cb = NCMetricsCallback(epochs=[2], splits=["train", "test"])
    cb.on_train_start(tr)
    rng_before, np_before = torch.get_rng_state(), np.random.get_state()[1].copy()
    logs = {}
    cb.on_epoch_end(tr, 1, logs)
    assert logs == {}  # epoch 1 not scheduled
    cb.on_epoch_end(tr, 2, logs)
    assert torch.equal(torch.get_rng_state(), rng_before) and np.array_equal(np.random.get_state()[1], np_before)
    assert tr.model.training  # mode restored
    json.dumps(logs, allow_nan=False)  # undefined values are null, never NaN tokens

    W, b = tr.model.classifier.weight.detach().double(), tr.model.classifier.bias.detach().double()
    for split in ("train", "test"):
        y = getattr(tr.dataset, split).y
        ref = hierarchy_metrics_from_arrays(_collect(tr, split), y, tr.hierarchy, W, b)
        for view in ("coarse", "fine"):
            for key, val in ref[view].items():
                assert logs[f"nc.{split}.{view}.{key}"] == pytest.approx(val, rel=1e-9), (split, view, key)
        assert logs[f"nc.{split}.fine_within_coarse.mean"] == pytest.approx(ref["fine_within_coarse"]["mean"], rel=1e-9)
        assert f"nc.{split}.fine_within_coarse.2" in logs
        assert "ncc_mismatch" in ref["coarse"] and "ncc_mismatch" not in ref["fine"]  # W has coarse rows
        # per-layer: the input of the first (hidden) head layer
        tap = metrics_from_arrays(_collect(tr, split, "head.0"), tr.hierarchy.coarse_of(y))
        assert logs[f"nc.{split}.coarse.head.0.nc1"] == pytest.approx(tap["nc1"], rel=1e-9)
        assert f"nc.{split}.fine.head.0.cdnv" in logs


def test_wide_features_use_the_projected_second_pass_with_the_same_result():
    tr = FakeTrainer()
    full = NCMetricsCallback(epochs="all").compute(tr)
    lean = NCMetricsCallback(epochs="all", max_scatter_dim=4).compute(tr)  # no D x D scatter kept
    for key in ("nc.train.coarse.nc1", "nc.train.fine.nc1", "nc.train.coarse.head.0.nc1"):
        assert lean[key] == pytest.approx(full[key], rel=1e-9)
    assert "nc.train.fine_within_coarse.mean" not in lean  # needs the per-superclass scatters


def test_epoch_schedule_and_bad_options():
    e = log_epochs(350)
    assert e[0] == 1 and e[-1] == 350 and all(a < b for a, b in zip(e, e[1:])) and 35 <= len(e) <= 51
    assert log_epochs(5) == [1, 2, 3, 4, 5]
    tr = FakeTrainer(head_depth=1)
    cb = NCMetricsCallback()  # "log" over cfg optim.epochs = 30
    assert [ep for ep in range(1, 31) if cb.should_log(tr, ep)] == log_epochs(30)
    assert not any(".head." in k for k in NCMetricsCallback().compute(tr))  # head_depth 1: no taps by default
    for bad in ({"splits": ["val"]}, {"epochs": "sometimes"}, {"views": ["medium"]}, {"epochs": ["x"]}):
        with pytest.raises(NclabError):
            NCMetricsCallback(**bad)
    with pytest.raises(NclabError, match="unknown tap"):
        NCMetricsCallback(taps=["nope"]).on_train_start(tr)


def test_trainer_run_and_cli_rerun_agree(tmp_path, capsys):
    pytest.importorskip("nclab.train.trainer")
    from nclab.cli import main
    from nclab.train import Trainer, load_config

    cfg = load_config({
        "name": "nc", "data": {"source": "synthetic:coarse=2,fine_per_coarse=2,dim=8,n_train=40,n_test=20",
                               "labels": "coarse"},
        "model": {"name": "mlp", "width": 16, "depth": 1, "head_depth": 2},
        "optim": {"epochs": 2, "batch_size": 32, "lr": 0.05},
        "train": {"device": "cpu", "bf16": False, "channels_last": False},
        "callbacks": {"nc_metrics": {"epochs": "all"}},
    })
    Trainer(cfg, tmp_path / "run").fit()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and "nc.train.coarse.nc1" in rows[0] and "nc.train.coarse.head.0.nc1" in rows[0]
    capsys.readouterr()
    assert main(["metrics", "--run", str(tmp_path / "run"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["epoch"] == 2
    nc_keys = [k for k in rows[-1] if k.startswith("nc.") and not k.endswith("time_s")]
    assert len(nc_keys) > 30
    for k in nc_keys:
        assert out[k] == pytest.approx(rows[-1][k], rel=1e-9, abs=1e-15), k
    assert main(["metrics", "--run", str(tmp_path / "run"), "--epoch", "7"]) == 2


def test_cached_first_pass_features_give_the_same_second_pass_as_a_fresh_forward():
    from nclab.collapse.callback import measure

    tr = FakeTrainer()
    calls = {"n": 0}
    forward = tr.model.forward_taps  # with taps, every forward pass goes through forward_taps

    def counting(x, names):
        calls["n"] += 1
        return forward(x, names)

    tr.model.forward_taps = counting
    args = dict(hierarchy=tr.hierarchy, taps=["head.0"], max_scatter_dim=4)  # forces a second pass
    batches = tr.eval_loader("train")
    cached = measure(tr.model, batches, fine_labels=tr.dataset.train.y, **args)
    n_cached, calls["n"] = calls["n"], 0
    fresh = measure(tr.model, batches, fine_labels=tr.dataset.train.y, max_cache_bytes=0, **args)
    assert calls["n"] == 2 * n_cached > 0  # the cache really saved the second forward pass
    for view in ("coarse", "fine"):
        for key, val in fresh[view].items():
            assert cached[view][key] == pytest.approx(val, rel=1e-12, nan_ok=True), (view, key)
    assert cached["taps"]["head.0"]["coarse"]["nc1"] == pytest.approx(fresh["taps"]["head.0"]["coarse"]["nc1"],
                                                                      rel=1e-12)


def test_measure_with_a_cache_that_overflows_recomputes_every_batch():
    """max_cache_bytes between one batch and all batches: the second pass must still see every sample (same
    numbers as max_cache_bytes=0 and as the naive reference on all features)."""
    from nclab.collapse.callback import measure
    from test_collapse_callback import FakeTrainer, _collect

    tr = FakeTrainer()
    batches = tr.eval_loader("train")  # 5 batches (50, 50, 50, 50, 40) of 16 float32 features: 3200 B each
    fine = tr.dataset.train.y
    args = dict(hierarchy=tr.hierarchy, fine_labels=fine)
    part = measure(tr.model, batches, max_cache_bytes=5000, **args)
    fresh = measure(tr.model, batches, max_cache_bytes=0, **args)
    H = _collect(tr, "train").numpy()
    assert H.shape == (240, 16)
    W = tr.model.classifier.weight.detach().double().numpy()
    b = tr.model.classifier.bias.detach().double().numpy()
    ref = naive(H, tr.hierarchy.coarse_of(fine.numpy()), 3, W, b)
    for res in (part, fresh):
        assert_close(res["coarse"], ref, rtol=1e-6)
        assert res["coarse"]["n_samples"] == 240
    for key, val in fresh["coarse"].items():
        assert part["coarse"][key] == pytest.approx(val, rel=1e-12, nan_ok=True), key
