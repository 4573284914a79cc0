"""nclab probe: model sources, layer hooks, the streamed engine and the CLI, against independent references
(hand-written forwards, metrics_from_arrays on the same features, closed forms). Models are built locally
from constructors/configs: nothing is downloaded."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import numpy as np

import pytest
import torch
from torch import nn

from nclab.cli import main as cli
from nclab.collapse import hierarchy_metrics_from_arrays, metrics_from_arrays
from nclab.data import Hierarchy, load_dataset
from nclab.experiments.probe import probe
from nclab.models.hooks import LayerTaps, block_names, resolve_layers
from nclab.models.sources import load_model
from nclab.utils.errors import NclabError, RunPaused

MODEL_PY = textwrap.dedent('''
    import torch
    from torch import nn

    class Net(nn.Module):
        input_shape = (1, 8, 8)

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 6, 3, padding=1)
            self.blocks = nn.Sequential(nn.Conv2d(6, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1))
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.flat = nn.Flatten()
            self.hidden = nn.Linear(6, 12)
            self.fc = nn.Linear(12, 5)

        def forward(self, x):
            h = self.blocks(torch.relu(self.conv(x)))
            return self.fc(torch.relu(self.hidden(self.flat(self.pool(h)))))

    def make(seed=0):
        torch.manual_seed(seed)
        return Net()

    def make_other():
        return make(1)

    class Dicty(nn.Module):
        input_shape = (1, 8, 8)
        def __init__(self):
            super().__init__()
            self.inner = Inner()
        def forward(self, x):
            return self.inner(x)["h"]

    class Inner(nn.Module):
        def forward(self, x):
            return {"h": x.flatten(1)}

    def make_dicty():
        return Dicty()

    def not_a_module():
        return 3

    class Mlp(nn.Module):
        input_shape = (16,)

        def __init__(self):
            super().__init__()
            self.l1 = nn.Linear(16, 32)
            self.l2 = nn.Linear(32, 24)
            self.fc = nn.Linear(24, 6)

        def forward(self, x):
            return self.fc(torch.relu(self.l2(torch.relu(self.l1(x)))))

    def make_mlp():
        torch.manual_seed(0)
        return Mlp()
''')


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("models") / "net.py"
    p.write_text(MODEL_PY)
    return p


def _spec(model_file, fn="make") -> str:
    return f"python:{model_file}:{fn}"


def _hand_forward(net, x):
    """The same network written out by hand, layer by layer (the reference for the hooks)."""
    c = torch.relu(torch.nn.functional.conv2d(x, net.conv.weight, net.conv.bias, padding=1))
    b0 = torch.nn.functional.conv2d(c, net.blocks[0].weight, net.blocks[0].bias, padding=1)
    b1 = torch.nn.functional.conv2d(b0, net.blocks[1].weight, net.blocks[1].bias, padding=1)
    pooled = b1.mean((2, 3))
    hid = pooled @ net.hidden.weight.T + net.hidden.bias
    return {"blocks.0": b0.mean((2, 3)), "blocks.1": pooled, "hidden": hid, "fc:input": torch.relu(hid)}


def _digits_x(n=64):
    ds = load_dataset("digits")
    return ds.train.x[:n].float() * (1.0 / 255.0), ds.train.y[:n]


# hooks --------------------------------------------------------------------------------------------
def test_hooked_features_equal_a_hand_written_forward(model_file):
    net = load_model(_spec(model_file)).module
    x, _ = _digits_x()
    with torch.no_grad(), LayerTaps(net, "blocks.*,hidden,fc:input") as taps:
        got = taps(x)
        ref = _hand_forward(net, x)
    assert list(got) == ["blocks.0", "blocks.1", "hidden", "fc:input"]
    assert taps.reductions == {"blocks.0": "spatial_mean", "blocks.1": "spatial_mean", "hidden": "identity",
                               "fc:input": "identity"}
    for k in got:
        torch.testing.assert_close(got[k], ref[k], rtol=1e-5, atol=1e-6)
    # flatten keeps every value of the map
    with torch.no_grad(), LayerTaps(net, ["blocks.1"], reduce="flatten") as taps:
        flat = taps(x)["blocks.1"]
    assert flat.shape == (64, 6 * 8 * 8)


def test_layer_names_globs_and_all_blocks(model_file):
    net = load_model(_spec(model_file)).module
    assert block_names(net) == ["blocks.0", "blocks.1"]
    assert resolve_layers(net, "all-blocks,hidden,blocks.1") == ["blocks.0", "blocks.1", "hidden"]
    with pytest.raises(NclabError, match="unknown layer 'hiden'.*did you mean hidden"):
        resolve_layers(net, "hiden")
    with pytest.raises(NclabError, match="matches no module"):
        resolve_layers(net, "layer*")


def test_list_layers_shapes(model_file, capsys):
    assert cli(["probe", "--list-layers", _spec(model_file), "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["layers"]}
    # by hand: 8x8 maps keep their size (padding 1), 6 channels; pooled 1x1; hidden 12; logits 5
    assert rows["conv"]["shape"] == [2, 6, 8, 8] and rows["conv"]["dim"] == 6
    assert rows["blocks.1"]["reduction"] == "spatial_mean"
    assert rows["flat"]["shape"] == [2, 6] and rows["hidden"]["shape"] == [2, 12] and rows["fc"]["shape"] == [2, 5]
    assert rows["blocks"]["shape"] == [2, 6, 8, 8]


# the engine against metrics_from_arrays ------------------------------------------------------------
def _features(net, x, layer):
    """The same features the probe sees (the hooks themselves are checked against _hand_forward above)."""
    with torch.no_grad(), LayerTaps(net, [layer]) as taps:
        return torch.cat([taps(x[i : i + 100])[layer] for i in range(0, len(x), 100)]).double()


def test_probe_metrics_equal_metrics_from_arrays(model_file):
    lm = load_model(_spec(model_file))
    ds = load_dataset("digits")
    hier = Hierarchy.from_mapping([0, 0, 1, 1, 2, 2, 3, 3, 4, 4], ds.class_names)
    res = probe(lm, "digits", layers="blocks.1,hidden", hierarchy=hier, classifier="fc", batch_size=100,
                precision="fp32")  # the reference is an fp32 forward
    x = ds.train.x.float() * (1.0 / 255.0)
    y = ds.train.y
    W, b = lm.module.fc.weight.detach().double(), lm.module.fc.bias.detach().double()
    for layer in ("blocks.1", "hidden", "fc:input"):
        h = _features(lm.module, x, layer)
        use_w = layer == "fc:input"  # W has 5 rows = the coarse classes
        # the same 100-row batches as the probe: a random net's class means are nearly degenerate (NC1 ~ 600 at
        # `hidden`), so a different summation order alone moves NC1 by 1e-5; same order -> same numbers
        ref = hierarchy_metrics_from_arrays(h, y, hier, W if use_w else None, b if use_w else None, batch_size=100)
        got = res.metrics["train"][layer]
        for view in ("fine", "coarse"):
            for key, val in ref[view].items():
                if isinstance(val, float) and math.isfinite(val):
                    assert got[view][key] == pytest.approx(val, rel=1e-10, abs=1e-12), (layer, view, key)
        for c, val in ref["fine_within_coarse"].items():
            assert got["fine_within_coarse"][c] == pytest.approx(val, rel=1e-10), (layer, c)
    assert "self_duality" in res.metrics["train"]["fc:input"]["coarse"]
    assert "ncc_mismatch" in res.metrics["train"]["fc:input"]["coarse"]
    assert "self_duality" not in res.metrics["train"]["hidden"]["coarse"]


SYNTH = "synthetic:coarse=2,fine_per_coarse=3,dim=16,n_train=600,n_test=60,seed=3"


def test_probe_equals_flat_metrics_from_arrays_on_separated_classes(model_file):
    """Well-separated classes (the synthetic mixture): NC1 is well conditioned, so any exact route agrees."""
    lm = load_model(_spec(model_file, "make_mlp"))
    ds = load_dataset(SYNTH)
    res = probe(lm, SYNTH, layers="l1,l2", classifier="fc", batch_size=64, precision="fp32")
    W, b = lm.module.fc.weight.detach().double(), lm.module.fc.bias.detach().double()
    for layer in ("l1", "l2", "fc:input"):
        h = _features(lm.module, ds.train.x, layer)
        use_w = layer == "fc:input"
        ref = metrics_from_arrays(h, ds.train.y, W if use_w else None, b if use_w else None, num_classes=6)
        got = res.metrics["train"][layer]["fine"]
        assert {"nc1", "cdnv", "etf_error_means", "equiangular_means"} <= set(got)
        for key, val in ref.items():
            if key in got and math.isfinite(val):
                assert got[key] == pytest.approx(val, rel=1e-10, abs=1e-12), (layer, key)
    assert res.metrics["train"]["fc:input"]["fine"]["ncc_mismatch"] is not None


def test_streaming_equals_all_at_once(model_file):
    lm = load_model(_spec(model_file, "make_mlp"))
    ds = load_dataset(SYNTH)
    x, y = ds.train.x, ds.train.y
    small = [(x[i : i + 7], y[i : i + 7]) for i in range(0, len(y), 7)]
    one = [(x, y)]
    a = probe(lm, small, layers="l1,l2", hierarchy="adjacent:2", num_classes=6)
    b = probe(lm, one, layers="l1,l2", hierarchy="adjacent:2", num_classes=6)
    assert b.metrics["data"]["l2"]["fine"]["nc1"] < 10  # well conditioned: the check below is meaningful
    for layer in a.layers:
        for view in ("fine", "coarse"):
            for key, val in b.metrics["data"][layer][view].items():
                if val is not None:
                    assert a.metrics["data"][layer][view][key] == pytest.approx(val, rel=1e-10, abs=1e-13)


class _EtfNet(nn.Module):
    """Input one-hot(y) + noise; ``noisy`` keeps the noise, ``etf`` maps e_y to the y-th simplex-ETF vertex
    exactly (the noise is removed by rounding the one-hot part), so its features are an exact simplex ETF."""

    def __init__(self, k: int):
        super().__init__()
        self.noisy = nn.Identity()
        m = torch.eye(k, dtype=torch.float64) - 1.0 / k  # rows: the centred simplex vertices
        self.register_buffer("vertices", m)
        self.etf = nn.Identity()
        self.fc = nn.Linear(k, k)

    def forward(self, x):
        h = self.noisy(x)
        onehot = torch.nn.functional.one_hot(h[:, : self.vertices.shape[0]].argmax(1), self.vertices.shape[0])
        z = self.etf(onehot.to(torch.float64) @ self.vertices)
        return self.fc(z.float())


def test_exact_simplex_etf_gives_nc1_zero():
    k = 6
    g = torch.Generator().manual_seed(0)
    y = torch.arange(600) % k
    x = torch.nn.functional.one_hot(y, k).double() * 3 + 0.3 * torch.randn(600, k, generator=g, dtype=torch.float64)
    res = probe(_EtfNet(k), [(x[i : i + 50], y[i : i + 50]) for i in range(0, 600, 50)], layers="noisy,etf",
                num_classes=k)
    etf = res.metrics["data"]["etf"]["fine"]
    # every row of a class is the same vertex: Σ_W = 0 up to float64 rounding of the means
    assert etf["nc1"] < 1e-25 and etf["trace_within"] < 1e-25
    assert etf["etf_error_means"] == pytest.approx(0.0, abs=1e-12)
    assert etf["equiangular_means"] == pytest.approx(0.0, abs=1e-12)
    assert res.metrics["data"]["noisy"]["fine"]["nc1"] > 1e-3  # the noisy layer is not collapsed


def test_recovery_per_layer_equals_evaluate_recovery(model_file):
    from nclab.finegrain.evaluate import evaluate_recovery

    lm = load_model(_spec(model_file))
    ds = load_dataset("digits")
    hier = Hierarchy.from_mapping([0, 0, 1, 1, 2, 2, 3, 3, 4, 4], ds.class_names)
    res = probe(lm, "digits", layers="hidden", hierarchy=hier, classifier="fc", recover=True,
                splits=("train", "test"), max_samples=500, recovery_options={"n_init": 2}, precision="fp32")
    from nclab.experiments.probe import sample_indices

    sel = sample_indices(len(ds.train.y), 500)  # the documented seeded subset of kept rows
    assert len(torch.unique(ds.train.y[sel])) == 10
    xtr, ytr = ds.train.x[sel].float() * (1.0 / 255.0), ds.train.y[sel]
    xte, yte = ds.test.x.float() * (1.0 / 255.0), ds.test.y
    with torch.no_grad():
        route = lm.module(xte).argmax(1).numpy()  # fc has 5 outputs = the coarse classes: it routes
    ref = evaluate_recovery(_features(lm.module, xtr, "hidden").float().numpy(), hier.coarse_of(ytr.numpy()),
                            ytr.numpy(), _features(lm.module, xte, "hidden").float().numpy(), route, yte.numpy(),
                            hier, n_init=2)
    got = res.recovery["hidden"]
    assert (got["test_acc"] == pytest.approx(ref["test_acc"])
            and got["oracle_test_acc"] == pytest.approx(ref["oracle_test_acc"]))
    assert got["options"]["routing"] == "predicted"
    assert res.info["recovery_samples"] == {"train": 500, "test": 450}


def test_pause_and_resume_equal_an_uninterrupted_probe(model_file, tmp_path):
    lm = load_model(_spec(model_file))
    state = tmp_path / "probe_state.pt"
    full = probe(lm, "digits", layers="hidden", hierarchy="mod:5", batch_size=200)
    with pytest.raises(RunPaused):
        probe(lm, "digits", layers="hidden", hierarchy="mod:5", batch_size=200, time_limit=1e-9, state_path=state)
    assert state.exists()
    again = probe(lm, "digits", layers="hidden", hierarchy="mod:5", batch_size=200, state_path=state)
    assert not state.exists()
    for view in ("fine", "coarse"):
        assert again.metrics["train"]["hidden"][view]["nc1"] == pytest.approx(
            full.metrics["train"]["hidden"][view]["nc1"], rel=1e-12)
    assert again.metrics["train"]["hidden"]["fine"]["n_samples"] == 1347


def test_result_table(model_file):
    res = probe(load_model(_spec(model_file)), "digits", layers="blocks.0,hidden", hierarchy="mod:5", limit=200)
    rows = res.rows()
    nc1 = [r for r in rows if r["metric"] == "nc1" and r["view"] == "coarse"]
    assert [r["layer"] for r in nc1] == ["blocks.0", "hidden"] and [r["depth"] for r in nc1] == [0, 1]
    assert nc1[1]["value"] == res.metrics["train"]["hidden"]["coarse"]["nc1"]
    assert res.info["not_applicable"]["metrics"][0] == "equinorm_weights"
    assert set(res.depth_series()) == {"coarse nc1", "fine nc1", "fine_within_coarse nc1"}


# sources -----------------------------------------------------------------------------------------
def test_weights_pt_and_safetensors(model_file, tmp_path):
    other = load_model(_spec(model_file, "make_other")).module
    torch.save(other.state_dict(), tmp_path / "w.pt")
    from safetensors.torch import save_file

    save_file(other.state_dict(), str(tmp_path / "w.safetensors"))
    x, _ = _digits_x(8)
    want = other(x)
    for f in ("w.pt", "w.safetensors"):
        got = load_model(_spec(model_file), weights=tmp_path / f).module(x)
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_torchscript_source_probes_the_output(model_file, tmp_path):
    net = load_model(_spec(model_file)).module
    torch.jit.save(torch.jit.script(net), str(tmp_path / "net.pt"))
    lm = load_model(f"torchscript:{tmp_path / 'net.pt'}")
    x, _ = _digits_x(16)
    with torch.no_grad(), LayerTaps(lm.module, "output") as taps:
        got = taps(x)["output"]
    torch.testing.assert_close(got, net(x).detach())


def test_nclab_probe_api_is_lazy():
    import nclab

    assert nclab.probe is probe


# bad input: one error line, exit 2, nothing written ----------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["--model", "keras:resnet"], "unknown model library 'keras'"),
    (["--model", "timm:vit_tiny_patch16_224"], "pip install 'nclab[vision]'"),
    (["--layers", "nope"], "unknown layer 'nope'"),
    (["--model", "python:{f}:make_dicty", "--layers", "inner"], "returns dict, not a tensor"),
    (["--weights", "{other}"], "another architecture"),
    (["--model", "python:{f}:not_a_module"], "not a torch nn.Module"),
    (["--classifier", "conv"], "not an nn.Linear"),
    (["--data", "cifar10:/nonexistent/cifar"], ""),
])
def test_bad_input_is_one_error_line(args, message, model_file, tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "timm", None)  # a missing library, even where it is installed
    other = tmp_path / "other.pt"
    torch.save({"w": torch.zeros(3)}, other)
    base = {"--model": _spec(model_file), "--data": "digits", "--layers": "hidden"}
    given = dict(zip(args[::2], args[1::2]))
    merged = {**base, **given}
    argv = ["probe"] + [t.format(f=model_file, other=other) for kv in merged.items() for t in kv]
    out = tmp_path / "out"
    assert cli(argv + ["--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not out.exists()


def test_cli_writes_json_and_html(model_file, tmp_path, capsys):
    out = tmp_path / "p"
    rc = cli(["probe", "--model", _spec(model_file), "--data", "digits", "--hierarchy", "mod:5", "--layers",
              "all-blocks,hidden", "--classifier", "fc", "--limit", "300", "--out", str(out), "--json"])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    on_disk = json.loads((out / "probe.json").read_text())
    assert printed == on_disk
    assert on_disk["layers"] == ["blocks.0", "blocks.1", "hidden", "fc:input"]
    assert (out / "probe.html").read_text().count("<tr>") > 4 and (out / "figures" / "depth.png").stat().st_size > 0
    # a second run refuses to overwrite
    assert cli(["probe", "--model", _spec(model_file), "--data", "digits", "--layers", "hidden",
                "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err


# real libraries ----------------------------------------------------------------------------------
def test_hf_gpt2_hooks_equal_its_hidden_states(tmp_path):
    tr = pytest.importorskip("transformers", reason="transformers not installed (pip install 'nclab[hf]')")
    torch.manual_seed(0)
    tr.GPT2LMHeadModel(tr.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=50,
                                     n_positions=32)).save_pretrained(tmp_path)
    lm = load_model(f"hf:{tmp_path}")
    assert lm.kind == "causal_lm"
    ids = torch.randint(0, 50, (3, 10))
    with torch.no_grad(), LayerTaps(lm.module, "all-blocks", reduce="tokens") as taps:
        got = taps(ids)
        hs = lm.module(ids, output_hidden_states=True).hidden_states
    assert list(got) == ["transformer.h.0", "transformer.h.1"]
    torch.testing.assert_close(got["transformer.h.0"], hs[1].reshape(-1, 32))


def test_hf_vit_probe_equals_metrics_from_arrays(tmp_path):
    tr = pytest.importorskip("transformers", reason="transformers not installed (pip install 'nclab[hf]')")
    torch.manual_seed(0)
    cfg = tr.ViTConfig(image_size=8, patch_size=4, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=32, num_channels=1)
    tr.ViTModel(cfg).save_pretrained(tmp_path)
    lm = load_model(f"hf:{tmp_path}")
    assert lm.input_shape == (1, 8, 8)
    res = probe(lm, "digits", layers="model.encoder.layer.*", hierarchy="mod:5", limit=200, reduce="mean",
                precision="fp32")
    assert res.reductions["model.encoder.layer.1"].endswith("token_mean")
    ds = load_dataset("digits")
    from nclab.experiments.probe import sample_indices

    sel = sample_indices(len(ds.train.y), 200)  # --limit: a seeded uniform subset
    x = (ds.train.x[sel].float() * (1.0 / 255.0) - 0.5) / 0.5  # the documented 0.5/0.5 default for one channel
    with torch.no_grad():
        hs = lm.module.model(pixel_values=x, output_hidden_states=True).hidden_states
    ref = metrics_from_arrays(hs[2].mean(1).double(), ds.train.y[sel], num_classes=10)
    assert res.metrics["train"]["model.encoder.layer.1"]["fine"]["nc1"] == pytest.approx(ref["nc1"], rel=1e-6)


def test_torchvision_resnet18_hooks():
    tv = pytest.importorskip("torchvision.models", reason="torchvision not importable beside this torch build")
    net = tv.resnet18(num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), LayerTaps(net, "layer4,avgpool,fc:input") as taps:
        got = taps(x)
        ref = net.layer4(net.layer3(net.layer2(net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(x))))))))
    torch.testing.assert_close(got["layer4"], ref.mean((2, 3)))
    torch.testing.assert_close(got["fc:input"], ref.mean((2, 3)))


def test_timm_source_builds_without_weights():
    pytest.importorskip("timm", reason="timm needs torchvision, not importable beside this torch build")
    lm = load_model("timm:resnet18")
    assert lm.preprocess == "timm data config" and len(block_names(lm.module)) >= 8


def test_run_source_equals_the_trained_model(tmp_path):
    """run:RUN_DIR rebuilds the model nclab trained (same logits) and probes it with its normalisation."""
    from nclab.train import Trainer

    cfg_path = Path(__file__).resolve().parents[1] / "src" / "nclab" / "configs" / "tiny.yaml"
    tr = Trainer(str(cfg_path), tmp_path / "run")
    tr.fit()
    lm = load_model(f"run:{tmp_path / 'run'}")
    x = tr.dataset.test.x[:32]
    torch.testing.assert_close(lm.module(x), tr.model.eval()(x))
    res = probe(lm, tr.cfg.data.source, layers="backbone.fc1,backbone.fc2", hierarchy="adjacent:2",
                classifier="head.0")
    assert res.metrics["train"]["head.0:input"]["fine"]["classifier_acc"] is not None


def test_cli_time_limit_pauses_and_resume_finishes(model_file, tmp_path, capsys):
    out = tmp_path / "p"
    base = ["probe", "--model", _spec(model_file), "--data", "digits", "--hierarchy", "mod:5", "--layers", "hidden",
            "--batch-size", "200", "--out", str(out), "--quiet"]
    assert cli(base + ["--time-limit", "1e-9"]) == 75  # EXIT_PAUSED
    assert (out / "probe_state.pt").exists() and not (out / "probe.json").exists()
    assert cli(base + ["--resume", "--json"]) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert not (out / "probe_state.pt").exists()
    whole = tmp_path / "q"
    assert cli(base[:-3] + ["--out", str(whole), "--json"]) == 0
    ref = json.loads(capsys.readouterr().out)
    assert resumed["metrics"]["train"]["hidden"]["coarse"]["nc1"] == pytest.approx(
        ref["metrics"]["train"]["hidden"]["coarse"]["nc1"], rel=1e-12)


def test_linear_probe_checks_labels_like_the_recovery():
    from nclab.data.synthetic import make_hierarchical_gaussian
    from nclab.finegrain.probe import linear_probe

    x, y, h = make_hierarchical_gaussian(2, 2, 8, n_per_class=20, fine_sep=4)
    c = h.coarse_of(y)
    base = linear_probe(x, c, y, x, c, y, h)["test_acc"]
    assert linear_probe(x, c, y, x, c, y, h.fine_to_coarse)["test_acc"] == base  # an array hierarchy works
    for args, msg in (((x, c, y + 0.5, x, c, y, h), "integers"), ((x, c, y, x, c[:-1], y, h), "rows"),
                      ((x, c, y, x, c + 2, y, h), "predicted coarse label"), ((x, 1 - c, y, x, c, y, h), "disagree")):
        with pytest.raises(NclabError, match=msg):
            linear_probe(*args)


def test_probe_standardises_with_the_superclass_statistics():
    """linear_probe against scikit-learn's LogisticRegression(C=0.1) on features standardised with each
    superclass's own train mean and std (docstring). The fine split of superclass 0 lives in a feature whose
    spread over the whole train set is ~1000x larger (superclass 1 uses it): standardising with the all-train
    std would shrink it below the regularisation."""
    from sklearn.linear_model import LogisticRegression

    from nclab.finegrain.evaluate import as_hierarchy
    from nclab.finegrain.probe import linear_probe

    rng = np.random.default_rng(13)
    f2c = np.array([0, 0, 1, 1])
    fine = rng.integers(0, 4, 600)
    x = rng.normal(size=(600, 3)) * 0.03
    s = np.where(fine % 2 == 0, -1.0, 1.0)
    x[:, 0] += np.where(f2c[fine] == 0, 0.1 * s, 100.0 * s)
    x[:, 1] += 20.0 * f2c[fine]
    tr, te = slice(0, 400), slice(400, 600)
    out = linear_probe(x[tr], f2c[fine[tr]], fine[tr], x[te], None, fine[te], as_hierarchy(f2c))
    for c in (0, 1):
        m, mt = f2c[fine[tr]] == c, f2c[fine[te]] == c
        xs = x[tr][m]
        mu, sd = xs.mean(0), xs.std(0)
        clf = LogisticRegression(C=0.1, max_iter=1000).fit((xs - mu) / sd, fine[tr][m])
        ref = np.mean(clf.predict((x[te][mt] - mu) / sd) == fine[te][mt])
        assert out["per_superclass"][c]["test_acc"] == pytest.approx(ref)
        assert ref > 0.95
