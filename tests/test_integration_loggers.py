"""TensorBoard / MLflow export read back with the frameworks' own readers; missing extras name the pip extra."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from integration_utils import K_FINE, toy_data, toy_model
from nclab.track import CollapseTracker

torch.set_num_threads(1)


def _run(tmp_path, loggers, epochs=3, every=1):
    model = toy_model()
    x, y = toy_data(120)
    loader = DataLoader(TensorDataset(x, y), batch_size=40)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    tr = CollapseTracker(model, ["0", "4:input"], num_classes=K_FINE, loader=loader, classifier="4",
                         loggers=loggers, every_n_epochs=every, run_dir=tmp_path / "run")
    rows = {}
    steps = 0
    for e in range(1, epochs + 1):
        for xb, yb in loader:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
            steps += 1
        got = tr.track(epoch=e, step=steps)
        if got:
            rows[steps] = got
    tr.close()
    return rows


def test_tensorboard_event_files_hold_the_nc_scalars(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard not installed (pip install nclab[tensorboard])")
    from tensorboard.backend.event_processing import event_accumulator

    from nclab.integrations import TensorBoardLogger

    tb = TensorBoardLogger(tmp_path / "tb")
    rows = _run(tmp_path, [tb], epochs=4, every=2)
    assert sorted(rows) == [6, 12]  # 3 batches per epoch, measured at epochs 2 and 4
    acc = event_accumulator.EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    for key in ("nc.val.fine.nc1", "nc.val.fine.0.nc1", "nc.val.fine.self_duality"):
        events = acc.Scalars(key)
        assert [ev.step for ev in events] == [6, 12]
        assert [ev.value for ev in events] == pytest.approx([rows[6][key], rows[12][key]], rel=1e-6)
    assert "nc/nc1_across_epochs" in tags["images"]
    assert acc.Images("nc/nc1_across_epochs")[-1].step == 12


def test_mlflow_local_store_holds_the_same_keys(tmp_path):
    pytest.importorskip("mlflow", reason="mlflow not installed (pip install nclab[mlflow])")
    from mlflow.tracking import MlflowClient

    from nclab.integrations import MLflowLogger
    from nclab.integrations.loggers import mlflow_key

    uri = (tmp_path / "mlruns").as_uri()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ml = MLflowLogger(tracking_uri=uri, experiment="nc-test", run_name="toy")
        rows = _run(tmp_path, [ml], epochs=2)
        client = MlflowClient(tracking_uri=uri)
        run = client.get_run(ml.run_id)
    last = rows[max(rows)]
    numeric = {mlflow_key(k) for k, v in last.items() if v is not None}
    assert numeric <= set(run.data.metrics)
    assert run.info.status == "FINISHED"
    hist = client.get_metric_history(ml.run_id, "nc.val.fine.nc1")
    assert sorted(m.step for m in hist) == sorted(rows)
    assert sorted(hist, key=lambda m: m.step)[-1].value == pytest.approx(last["nc.val.fine.nc1"], rel=1e-12)


def test_wandb_offline_run(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb not installed (pip install nclab[wandb])")
    from nclab.integrations import WandbLogger

    monkeypatch.setenv("WANDB_SILENT", "true")
    wb = WandbLogger("nclab-test", dir=tmp_path, mode="offline")
    rows = _run(tmp_path, [wb], epochs=2)
    files = list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    assert files and files[0].stat().st_size > 0 and rows


def test_missing_extra_names_the_pip_extra_api_and_cli(tmp_path):
    # a child interpreter where the frameworks cannot be imported (a meta-path finder refuses them)
    code = r"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('lightning', 'transformers', 'tensorboard', 'mlflow', 'wandb') or \
           name == 'torch.utils.tensorboard':
            raise ImportError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
import nclab.integrations as I
for name in ('NCLightningCallback', 'NCTrainerCallback', 'TensorBoardLogger'):
    try:
        getattr(I, name) if name != 'TensorBoardLogger' else I.TensorBoardLogger('x')
    except ImportError as e:
        print(type(e).__name__, '|', e)
from nclab.cli import main
sys.exit(main(sys.argv[1:]))
"""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data: {source: 'synthetic:n_train=20,n_test=5'}\noptim: {epochs: 1, batch_size: 20}\n"
                   "model: {name: linear}\ntrain: {loggers: [tensorboard], device: cpu, bf16: false}\n")
    p = subprocess.run([sys.executable, "-c", code, "train", "--config", str(cfg), "--runs", str(tmp_path / "runs")],
                       capture_output=True, text=True, timeout=120)
    out = p.stdout.splitlines()
    assert out[0].startswith("MissingExtra | NCLightningCallback needs lightning") and \
        out[0].endswith("install it with: pip install nclab[lightning]")
    assert out[1].endswith("pip install nclab[hf]") and out[2].endswith("pip install nclab[tensorboard]")
    assert p.returncode == 2, (p.stdout, p.stderr)
    err = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and err[0].endswith("pip install nclab[tensorboard]"), p.stderr


def test_nclab_trainer_exports_through_train_loggers(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard not installed (pip install nclab[tensorboard])")
    from tensorboard.backend.event_processing import event_accumulator

    from nclab.train.trainer import Trainer

    cfg = {"name": "tbrun", "seed": 0, "data": {"source": "synthetic:n_train=30,n_test=10"},
           "model": {"name": "mlp", "width": 16, "depth": 1}, "optim": {"lr": 0.05, "batch_size": 16, "epochs": 3},
           "train": {"device": "cpu", "bf16": False, "channels_last": False, "threads": 1,
                     "loggers": {"tensorboard": None}},
           "callbacks": {"nc_metrics": {"epochs": "all"}}}
    out = Trainer(cfg, tmp_path / "tbrun").fit()
    rows = [json.loads(s) for s in (tmp_path / "tbrun" / "metrics.jsonl").read_text().splitlines()]
    acc = event_accumulator.EventAccumulator(str(tmp_path / "tbrun" / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    for key in ("train_loss", "nc.train.fine.nc1"):
        ev = acc.Scalars(key)
        assert [e.step for e in ev] == [1, 2, 3]
        assert [e.value for e in ev] == pytest.approx([r[key] for r in rows], rel=1e-6)
    assert out["status"] == "complete"


@pytest.mark.parametrize("spec, msg", [
    ("tensorboard", "train.loggers must be a list of kinds or a mapping"),
    (["tensorbord"], "unknown logger 'tensorbord'"),
    ({"mlflow": 3}, "train.loggers.mlflow must be a mapping of options or null"),
])
def test_bad_train_loggers(spec, msg):
    from nclab.train.loggers import build_loggers, check_loggers
    from nclab.utils.errors import NclabError

    with pytest.raises(NclabError, match=msg):
        check_loggers(spec)
    with pytest.raises(NclabError, match=msg):
        build_loggers(spec)
