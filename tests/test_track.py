"""CollapseTracker in a plain PyTorch loop: keys equal metrics_from_arrays on hand-extracted features, the
schedule, the run directory (read back by nclab's report loader), bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from integration_utils import K_COARSE, K_FINE, hand_features, toy_data, toy_model
from nclab.collapse import hierarchy_metrics_from_arrays, metrics_from_arrays
from nclab.data.hierarchy import Hierarchy
from nclab.track import CollapseTracker
from nclab.utils.errors import NclabError

torch.set_num_threads(1)
F2C = np.arange(K_FINE) % K_COARSE


def _loader(n=240, seed=0, bs=64):
    x, y = toy_data(n, seed)
    return DataLoader(TensorDataset(x, y), batch_size=bs, shuffle=False)


def _train(model, loader, epochs, tracker=None, coarse=False):
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for e in range(1, epochs + 1):
        for x, y in loader:
            opt.zero_grad()
            t = torch.as_tensor(F2C)[y] if coarse else y
            torch.nn.functional.cross_entropy(model(x), t).backward()
            opt.step()
        if tracker is not None:
            tracker.track(epoch=e, logs={"train_epoch_marker": float(e)})


def test_tracker_keys_equal_metrics_from_arrays():
    model, loader = toy_model(), _loader()
    tr = CollapseTracker(model, ["0", "4:input"], num_classes=K_FINE, loader=loader, classifier="4")
    _train(model, loader, 2, tr)
    got = tr.last
    H, y = hand_features(model, model[4], loader, use_input=True)
    W, b = model[4].weight.detach().double(), model[4].bias.detach().double()
    ref = metrics_from_arrays(H.astype(np.float64), y, W, b, num_classes=K_FINE)
    assert got["nc.val.fine.nc1"] == pytest.approx(ref["nc1"], rel=1e-8, abs=1e-12)
    assert got["nc.val.fine.self_duality"] == pytest.approx(ref["self_duality"], rel=1e-8, abs=1e-12)
    assert got["nc.val.fine.ncc_mismatch"] == pytest.approx(ref["ncc_mismatch"], abs=1e-12)
    H0, _ = hand_features(model, model[0], loader)
    ref0 = metrics_from_arrays(H0.astype(np.float64), y, num_classes=K_FINE)
    assert got["nc.val.fine.0.nc1"] == pytest.approx(ref0["nc1"], rel=1e-8)
    assert got["nc.val.fine.0.cdnv"] == pytest.approx(ref0["cdnv"], rel=1e-8)
    assert "nc.val.fine.4:input.nc1" not in got  # the main layer has the unprefixed keys


def test_tracker_hierarchy_views_recovery_and_metric_filter():
    model, loader = toy_model(out=K_COARSE), _loader()
    hier = Hierarchy.from_mapping(F2C, [str(i) for i in range(K_FINE)], spec="array")
    _train(model, loader, 2, coarse=True)
    tr = CollapseTracker(model, ["2"], hierarchy=hier, loader=loader, recover=True, split="test",
                         metrics=["nc1", "fine_within_coarse", "test_acc"])
    got = tr.measure()
    H, y = hand_features(model, model[2], loader)
    ref = hierarchy_metrics_from_arrays(H.astype(np.float64), y, hier)
    assert got["nc.test.coarse.nc1"] == pytest.approx(ref["coarse"]["nc1"], rel=1e-8)
    assert got["nc.test.fine.nc1"] == pytest.approx(ref["fine"]["nc1"], rel=1e-8)
    assert got["nc.test.fine_within_coarse.mean"] == pytest.approx(ref["fine_within_coarse"]["mean"], rel=1e-8)
    assert 0.0 <= got["recovery.test_acc"] <= 1.0
    assert not any(k.endswith(".cdnv") for k in got)  # filtered out
    # recovery keys follow the pipeline: compare with evaluate_recovery on the same rows
    from nclab.finegrain.evaluate import evaluate_recovery

    rep = evaluate_recovery(H, F2C[y], y, H, None, y, hier)
    assert got["recovery.test_acc"] == pytest.approx(rep["test_acc"], abs=1e-12)


def test_tracker_schedule_and_dict_batches():
    model = toy_model()
    x, y = toy_data(120)
    batches = [{"inp": x[i:i + 40], "labels": y[i:i + 40]} for i in range(0, 120, 40)]

    class Wrap(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, inp):
            return self.net(inp)

    w = Wrap(model)
    tr = CollapseTracker(w, "net.2", num_classes=K_FINE, epochs=[2, 3])
    assert [tr.should_measure(epoch=e) for e in (1, 2, 3, 4)] == [False, True, True, False]
    assert tr.track(epoch=1, batches=batches) == {}
    got = tr.track(epoch=2, batches=batches)
    H, yy = hand_features(w, model[2], batches)
    assert got["nc.val.fine.nc1"] == pytest.approx(metrics_from_arrays(H.astype(np.float64), yy,
                                                                       num_classes=K_FINE)["nc1"], rel=1e-8)
    st = CollapseTracker(w, "net.2", num_classes=K_FINE, steps=[10, 20])
    assert st.should_measure(step=20) and not st.should_measure(epoch=1, step=11)
    ev = CollapseTracker(w, "net.2", num_classes=K_FINE, every_n_epochs=3)
    assert [ev.should_measure(epoch=e) for e in (1, 3, 6)] == [False, True, True]


def test_tracker_fine_labels_override_and_leaves_rng():
    model, loader = toy_model(), _loader()
    _, y = toy_data(240)
    shuffled = y[torch.randperm(240, generator=torch.Generator().manual_seed(3))]
    tr = CollapseTracker(model, "2", num_classes=K_FINE, loader=loader, fine_labels=shuffled)
    torch.manual_seed(11)
    before = torch.random.get_rng_state()
    got = tr.measure()
    assert torch.equal(before, torch.random.get_rng_state())
    H, _ = hand_features(model, model[2], loader)
    ref = metrics_from_arrays(H.astype(np.float64), shuffled.numpy(), num_classes=K_FINE)
    assert got["nc.val.fine.nc1"] == pytest.approx(ref["nc1"], rel=1e-8)


def test_tracker_run_directory_reads_as_an_nclab_run(tmp_path):
    from nclab.report.load import load_run

    model, loader = toy_model(), _loader()
    run = tmp_path / "userloop"
    with CollapseTracker(model, ["0", "4:input"], num_classes=K_FINE, loader=loader, classifier="4",
                         run_dir=run, config={"lr": 0.05}) as tr:
        _train(model, loader, 3, tr)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[-1]["nc.val.fine.nc1"] == pytest.approx(tr.last["nc.val.fine.nc1"], rel=1e-12)
    assert json.loads((run / "status.json").read_text())["status"] == "complete"
    data = load_run(run)
    assert data.problems == [] and data.series.xkey == "epoch"
    assert np.allclose(data.series.values["nc.val.fine.nc1"], [r["nc.val.fine.nc1"] for r in rows])
    assert data.config["track"]["layers"] == ["0", "4:input"] and data.config["user"] == {"lr": 0.05}
    with pytest.raises(NclabError, match="already holds a run"):
        CollapseTracker(model, "0", num_classes=K_FINE, run_dir=run)


@pytest.mark.parametrize("kwargs, msg", [
    ({"layers": "nope"}, "unknown layer 'nope'"),
    ({"layers": "0"}, "pass num_classes="),
    ({"layers": "0", "num_classes": 6, "every_n_epochs": 0}, "every_n_epochs must be an integer >= 1"),
    ({"layers": "0", "num_classes": 6, "classifier": "1"}, "not an nn.Linear"),
    ({"layers": "0", "num_classes": 6, "recover": True}, "recover=True needs a hierarchy"),
    ({"layers": "0", "num_classes": 6, "split": "a.b"}, "split must be a name without dots"),
])
def test_tracker_bad_arguments(kwargs, msg):
    layers = kwargs.pop("layers")
    with pytest.raises(NclabError, match=msg):
        CollapseTracker(toy_model(), layers, **kwargs)


def test_tracker_bad_data():
    tr = CollapseTracker(toy_model(), "0", num_classes=3)
    x, y = toy_data(24)
    with pytest.raises(NclabError, match="label 5 outside 0..2"):
        tr.measure([(x, y)])
    with pytest.raises(NclabError, match="no data to measure on"):
        tr.measure()
    with pytest.raises(NclabError, match="each batch must be"):
        tr.measure([x])
    with pytest.raises(NclabError, match="unknown metric"):
        CollapseTracker(toy_model(), "0", num_classes=6, metrics=["nc9"]).measure([(x, y)])
