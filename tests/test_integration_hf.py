"""NCTrainerCallback in a real Hugging Face Trainer (CPU, 2 epochs, a tiny BERT built from its config): the NC1
that Trainer.log received equals metrics_from_arrays on features extracted by hand from the saved model."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

transformers = pytest.importorskip("transformers", reason="transformers not installed (pip install nclab[hf])")
pytest.importorskip("accelerate", reason="the HF Trainer needs accelerate (pip install nclab[hf])")

from integration_utils import hand_features  # noqa: E402
from nclab.collapse import metrics_from_arrays  # noqa: E402
from nclab.integrations import NCTrainerCallback  # noqa: E402
from nclab.utils.errors import NclabError  # noqa: E402

torch.set_num_threads(1)
K, T, VOCAB = 4, 8, 40


def _dataset(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % K
    ids = torch.randint(5, VOCAB, (n, T), generator=g)
    ids[:, 0] = 1 + y  # the class shows in the first token
    return [{"input_ids": ids[i], "attention_mask": torch.ones(T, dtype=torch.long), "labels": y[i]}
            for i in range(n)]


def _model():
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=32, max_position_embeddings=T, num_labels=K)
    return transformers.BertForSequenceClassification(cfg)


def test_hf_trainer_logged_nc1_equals_hand_extracted(tmp_path):
    ds = _dataset()
    loader = DataLoader(ds, batch_size=32)
    cb = NCTrainerCallback(loader, ["bert.encoder.layer.1", "classifier:input"], classifier="classifier",
                           num_classes=K, run_dir=tmp_path / "nc_run")
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "out"), num_train_epochs=2,
                                          per_device_train_batch_size=16, learning_rate=5e-3, use_cpu=True,
                                          report_to=[], save_strategy="no", logging_strategy="no",
                                          disable_tqdm=True, seed=0, dataloader_num_workers=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = transformers.Trainer(model=_model(), args=args, train_dataset=ds)
        cb.attach(trainer).train()
        trainer.save_model(str(tmp_path / "saved"))
    logged = [h for h in trainer.state.log_history if "nc.val.fine.nc1" in h]
    assert [h["epoch"] for h in logged] == [1.0, 2.0]
    assert logged[-1]["step"] == trainer.state.global_step
    saved = transformers.BertForSequenceClassification.from_pretrained(str(tmp_path / "saved"))
    H, y = hand_features(saved, saved.classifier, loader, use_input=True)
    W, b = saved.classifier.weight.detach().double(), saved.classifier.bias.detach().double()
    ref = metrics_from_arrays(H.astype(np.float64), y, W, b, num_classes=K)
    assert logged[-1]["nc.val.fine.nc1"] == pytest.approx(ref["nc1"], rel=1e-8)
    assert logged[-1]["nc.val.fine.self_duality"] == pytest.approx(ref["self_duality"], rel=1e-8)
    H1, _ = hand_features(saved, saved.bert.encoder.layer[1], loader)  # (N, T, D) flattened, as reduce="auto"
    ref1 = metrics_from_arrays(H1.astype(np.float64), y, num_classes=K)
    assert logged[-1]["nc.val.fine.bert.encoder.layer.1.nc1"] == pytest.approx(ref1["nc1"], rel=1e-8)
    assert (tmp_path / "nc_run" / "metrics.jsonl").read_text().count("\n") == 2


def test_hf_callback_must_be_attached(tmp_path):
    ds = _dataset(16)
    cb = NCTrainerCallback(DataLoader(ds, batch_size=8), ["classifier:input"], num_classes=K)
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "o"), num_train_epochs=1, use_cpu=True,
                                          report_to=[], save_strategy="no", disable_tqdm=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = transformers.Trainer(model=_model(), args=args, train_dataset=ds, callbacks=[cb])
        with pytest.raises(NclabError, match=r"call cb.attach\(trainer\)"):
            trainer.train()
