"""Every Python example of docs/integrations.md runs (in a temporary folder) and writes what the page says."""

from __future__ import annotations

import contextlib
import io
import json
import re
import warnings
from pathlib import Path

import pytest
import torch

DOC = Path(__file__).resolve().parents[1] / "docs" / "integrations.md"


def _blocks() -> dict[str, str]:
    """``{section heading: code}`` of the ```python blocks."""
    out, heading = {}, None
    text = DOC.read_text()
    for m in re.finditer(r"^## ([^\n]+)$|^```python\n(.*?)^```", text, flags=re.M | re.S):
        if m.group(1):
            heading = m.group(1).strip()
        else:
            out[heading] = m.group(2)
    return out


def _run(code: str, where: Path, monkeypatch) -> str:
    monkeypatch.chdir(where)
    torch.set_num_threads(1)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(code, str(DOC), "exec"), {"__name__": "__doc_example__"})
    return buf.getvalue()


def test_every_section_has_one_example():
    assert set(_blocks()) == {"Plain PyTorch", "Lightning", "Hugging Face Trainer", "TensorBoard, MLflow, wandb"}


def test_plain_pytorch_example(tmp_path, monkeypatch):
    out = _run(_blocks()["Plain PyTorch"], tmp_path, monkeypatch)
    assert out.startswith("coarse NC1 ") and " recovery " in out
    rows = [json.loads(s) for s in (tmp_path / "runs/plain/metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5]
    assert json.loads((tmp_path / "runs/plain/status.json").read_text())["status"] == "complete"


def test_lightning_example(tmp_path, monkeypatch):
    pytest.importorskip("lightning", reason="lightning not installed (pip install nclab[lightning])")
    out = _run(_blocks()["Lightning"], tmp_path, monkeypatch)
    assert out.strip().splitlines()[-1].startswith("NC1 ")
    assert "nc.val.fine.nc1" in (tmp_path / "runs/lightning_csv/version_0/metrics.csv").read_text()
    assert (tmp_path / "runs/lightning/metrics.jsonl").read_text().count("\n") == 2


def test_hf_example(tmp_path, monkeypatch):
    pytest.importorskip("transformers", reason="transformers not installed (pip install nclab[hf])")
    pytest.importorskip("accelerate", reason="the HF Trainer needs accelerate (pip install nclab[hf])")
    out = _run(_blocks()["Hugging Face Trainer"], tmp_path, monkeypatch)
    vals = eval(out.strip().splitlines()[-1][len("NC1 "):])  # the printed list of two floats
    assert len(vals) == 2 and all(v > 0 for v in vals)


def test_loggers_example(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard", reason="tensorboard not installed (pip install nclab[tensorboard])")
    pytest.importorskip("mlflow", reason="mlflow not installed (pip install nclab[mlflow])")
    from tensorboard.backend.event_processing import event_accumulator

    out = _run(_blocks()["TensorBoard, MLflow, wandb"], tmp_path, monkeypatch)
    assert out.startswith("mlflow run ")
    acc = event_accumulator.EventAccumulator(str(tmp_path / "runs/tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("nc.val.fine.nc1")] == [6, 12]
    assert "nc/nc1_across_epochs" in acc.Tags()["images"]
