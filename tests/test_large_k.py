"""Large-K (token-level) statistics and tiled pairwise metrics against the dense engine and naive numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nclab.collapse import ClassStats, compute_metrics
from nclab.collapse.large_k import SparseClassStats, frame_errors, large_k_metrics, pair_metrics


def _data(k=40, d=12, n=900, seed=0, absent=(3, 17)):
    g = np.random.default_rng(seed)
    y = g.integers(0, k, n)
    y[np.isin(y, absent)] = 0  # classes that never occur
    mu = g.normal(size=(k, d)) * 3
    h = mu[y] + g.normal(size=(n, d))
    return torch.from_numpy(h), torch.from_numpy(y)


def test_sparse_stats_equal_dense_stats():
    h, y = _data()
    sp, dense = SparseClassStats(40, 12), ClassStats(40, 12)
    for i in range(0, len(y), 37):  # batches that miss many classes
        sp.update(h[i : i + 37], y[i : i + 37])
    dense.update(h, y)
    torch.testing.assert_close(sp.counts, dense.counts)
    torch.testing.assert_close(sp.means, dense.means, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sp.traces, dense.traces, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(sp.scatter, dense.scatter[0], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("d", [12, 60])  # K > D + 1 (no simplex ETF) and K <= D + 1
def test_large_k_metrics_equal_the_dense_metrics(d):
    h, y = _data(d=d)
    W = torch.from_numpy(np.random.default_rng(1).normal(size=(40, d)))
    sp = SparseClassStats(40, d)
    for i in range(0, len(y), 64):
        sp.update(h[i : i + 64], y[i : i + 64])
    got = large_k_metrics(sp, W, rows=7, cols=11)  # partial tiles on both axes
    dense = ClassStats(40, d)
    dense.update(h, y)
    ref = compute_metrics(dense, W)
    assert got["n_classes"] == 38 and got["n_classes_absent"] == 2
    for key in ("trace_within", "trace_between", "nc1", "nc1_quotient", "cdnv", "equinorm_means",
                "equiangular_means", "maxangle_means", "of_error_means", "equinorm_weights", "equiangular_weights",
                "maxangle_weights", "of_error_weights", "self_duality"):
        assert got[key] == pytest.approx(ref[key], rel=1e-9, abs=1e-12), key
    if 38 > d + 1:
        assert "etf_error_means" not in got and "hyperspherical_log_energy_means" in got
    else:
        assert got["etf_error_means"] == pytest.approx(ref["etf_error_means"], rel=1e-7, abs=1e-9)
        assert "hyperspherical_log_energy_means" not in got


def test_pair_energies_equal_naive_numpy():
    v = np.random.default_rng(2).normal(size=(30, 5))
    got = pair_metrics(torch.from_numpy(v), rows=4, cols=9)
    u = v / np.linalg.norm(v, axis=1, keepdims=True)
    i, j = np.triu_indices(30, 1)
    dist = np.linalg.norm(u[i] - u[j], axis=1)
    cos = (u[i] * u[j]).sum(1)
    assert got["hyperspherical_log_energy"] == pytest.approx(np.mean(-np.log(dist)), rel=1e-10)
    assert got["hyperspherical_riesz1_energy"] == pytest.approx(np.mean(1 / dist), rel=1e-10)
    assert got["equiangular"] == pytest.approx(np.std(cos), rel=1e-9)


def test_frame_errors_closed_form_on_an_exact_simplex():
    k = 7
    m = torch.eye(k, dtype=torch.float64) - 1.0 / k
    assert frame_errors(m, centred=True) == pytest.approx(0.0, abs=1e-7)
    assert frame_errors(torch.eye(k, dtype=torch.float64), centred=False) == pytest.approx(0.0, abs=1e-7)
    # the orthogonal frame is far from a simplex: ‖I/√K − T/√(K−1)‖ = √(2 − 2√((K−1)/K))
    assert frame_errors(torch.eye(k, dtype=torch.float64), centred=True) == pytest.approx(
        math.sqrt(2 - 2 * math.sqrt((k - 1) / k)), rel=1e-9)


def test_token_probe_of_a_tiny_gpt2_equals_dense_metrics(tmp_path, capsys):
    tr = pytest.importorskip("transformers", reason="transformers not installed (pip install 'nclab[hf]')")
    import json

    from nclab.cli import main as cli
    from nclab.experiments.tokens import probe_text

    torch.manual_seed(0)
    tr.GPT2LMHeadModel(tr.GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=40,
                                     n_positions=16)).save_pretrained(tmp_path / "m")
    ids = np.random.default_rng(0).integers(0, 30, 8 * 9 + 5)  # tokens 30..39 never occur
    np.save(tmp_path / "ids.npy", ids)
    # one forward: the same floats
    res = probe_text(f"hf:{tmp_path / 'm'}", ids, layers="transformer.h.0,transformer.ln_f", classifier="lm_head",
                     context=8, batch_size=9)
    from nclab.models.sources import load_model

    net = load_model(f"hf:{tmp_path / 'm'}").module
    win = torch.from_numpy(ids[: 9 * 8 + 1])
    x = win[:72].view(9, 8)
    y = win[1:73]
    with torch.no_grad():
        hs = net(x, output_hidden_states=True).hidden_states
    # hidden_states[1] = output of block 0, hidden_states[2] = ln_f(output of the last block)
    for i, layer in enumerate(["transformer.h.0", "transformer.ln_f"]):
        dense = ClassStats(40, 16)
        dense.update(hs[i + 1].reshape(-1, 16).double(), y)
        ref = compute_metrics(dense, net.lm_head.weight.detach())
        got = res.metrics["text"][layer]["fine"]
        assert got["n_samples"] == 72 and got["n_classes_absent"] == 40 - len(np.unique(y.numpy()))
        for key in ("nc1", "cdnv", "equiangular_means", "self_duality", "equiangular_weights"):
            assert got[key] == pytest.approx(ref[key], rel=1e-6), (layer, key)
        assert "etf_error_means" not in got and got["hyperspherical_log_energy_means"] is not None  # K=30 > D+1
    assert res.info["not_applicable"]["metrics"] == ["ncc_mismatch", "classifier_acc"]
    out = tmp_path / "out"
    assert cli(["probe", "--model", f"hf:{tmp_path / 'm'}", "--text", str(tmp_path / "ids.npy"), "--layers",
                "all-blocks", "--context", "8", "--out", str(out), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["metrics"]["text"]["transformer.h.0"]["fine"]["nc1"] == pytest.approx(
        res.metrics["text"]["transformer.h.0"]["fine"]["nc1"], rel=1e-12)
