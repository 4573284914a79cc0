"""Models: shapes, features/classifier consistency, taps, deep-linear head, fastnet whitening."""

import pytest
import torch

from nclab.models import MODEL_NAMES, build_model
from nclab.utils.errors import NclabError

SHAPES = {"resnet18": (3, 16, 16), "fastnet": (3, 16, 16), "vgg11": (3, 16, 16), "vgg16": (3, 16, 16),
          "mlp": (20,), "linear": (1, 4, 4)}
DIMS = {"resnet18": 512, "fastnet": 256, "vgg11": 512, "vgg16": 512, "mlp": 512, "linear": 16}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_shapes_features_classifier_taps(name):
    torch.manual_seed(0)
    shape = SHAPES[name]
    m = build_model(name, 7, shape)
    x = torch.randn(5, *shape)
    if hasattr(m, "data_init"):
        m.data_init(x)
    m.eval()
    z = m(x)
    f = m.features(x)
    assert z.shape == (5, 7) and f.shape == (5, DIMS[name])
    assert isinstance(m.classifier, torch.nn.Linear) and m.head_layers[-1] is m.classifier
    assert torch.equal(m.classifier(f), z)
    taps = m.forward_taps(x, m.tap_names())
    assert list(taps) == m.tap_names()
    assert torch.equal(taps["head.0"], f)  # M = 1: the head input is the feature
    for t in taps.values():
        assert t.dim() == 2 and t.shape[0] == 5


def test_resnet18_is_cifar_variant():
    m = build_model("resnet18", 10, (3, 32, 32)).eval()
    stem_conv = m.backbone.stem[0]
    assert stem_conv.kernel_size == (3, 3) and stem_conv.stride == (1, 1)
    assert not any(isinstance(mod, torch.nn.MaxPool2d) for mod in m.modules())
    assert [len(getattr(m.backbone, f"layer{i}")) for i in range(1, 5)] == [2, 2, 2, 2]
    taps = m.forward_taps(torch.randn(2, 3, 32, 32), ["layer1", "layer4"])
    assert taps["layer1"].shape == (2, 64 * 32 * 32) and taps["layer4"].shape == (2, 512 * 4 * 4)
    # 11.17M parameters for the 10-class CIFAR ResNet-18 (the widely quoted count)
    assert abs(sum(p.numel() for p in m.parameters()) - 11_173_962) == 0


@pytest.mark.parametrize("bias", [True, False])
def test_deep_linear_head_structure_and_algebra(bias):
    torch.manual_seed(1)
    m = build_model("mlp", 4, (6,), width=8, depth=1, head_depth=3, head_bias=bias, head_width=5).eval()
    assert len(m.head_layers) == 3
    assert [(l.in_features, l.out_features) for l in m.head_layers] == [(8, 5), (5, 5), (5, 4)]
    assert m.head_layers[0].bias is None and m.head_layers[1].bias is None
    assert (m.classifier.bias is not None) == bias
    x = torch.randn(3, 6)
    taps = m.forward_taps(x, ["head.0", "head.1", "head.2", "fc1"])
    h0 = taps["head.0"]
    assert torch.equal(h0, taps["fc1"])
    w1, w2 = m.head_layers[0].weight, m.head_layers[1].weight
    torch.testing.assert_close(taps["head.2"], h0 @ w1.T @ w2.T)  # linear, no activation, no bias
    torch.testing.assert_close(m.features(x), taps["head.2"])
    assert torch.equal(m(x), m.classifier(m.features(x)))


def test_fastnet_whitening_stem_whitens_patches():
    torch.manual_seed(2)
    # correlated channels: whitening must decorrelate them
    base = torch.randn(64, 1, 12, 12)
    x = torch.cat([base, base + 0.1 * torch.randn_like(base), torch.randn(64, 1, 12, 12)], 1)
    m = build_model("fastnet", 3, (3, 12, 12), widths=[8, 8, 8])
    m.data_init(x)
    conv = m.backbone.stem.conv
    assert not conv.weight.requires_grad
    out = torch.nn.functional.conv2d(x, conv.weight[:12])  # the 12 positive filters, no bias
    flat = out.permute(0, 2, 3, 1).reshape(-1, 12).double()
    cov = torch.cov(flat.T)
    # cov = diag(l / (l + eps)) with eps = 5e-4: identity up to the regulariser
    assert torch.allclose(cov, torch.diag(torch.diagonal(cov)), atol=1e-6)
    assert torch.diagonal(cov).min() > 0.5 and torch.diagonal(cov).max() < 1 + 1e-6
    torch.testing.assert_close(conv.weight[12:], -conv.weight[:12])


def test_registry_errors():
    with pytest.raises(NclabError, match="resnet18"):
        build_model("resnet19", 10, (3, 32, 32))
    with pytest.raises(NclabError, match="does not take depth"):
        build_model("fastnet", 10, (3, 32, 32), depth=3)
    with pytest.raises(NclabError, match="image input"):
        build_model("resnet18", 10, (20,))
    with pytest.raises(NclabError, match="head_depth"):
        build_model("mlp", 10, (20,), head_depth=0)
    with pytest.raises(NclabError, match="head_width sets the hidden layers .* needs head_depth >= 2"):
        build_model("mlp", 10, (20,), head_width=32)  # one layer: no hidden width to set
    with pytest.raises(NclabError, match="at least 9x9 pixels, got 8x8"):
        build_model("fastnet", 10, (3, 8, 8))


@pytest.mark.parametrize("name", ["fastnet", "resnet18", "vgg11"])
def test_image_models_take_other_input_sizes(name):
    """Square images of other sizes (e.g. data.image_size: 64) and non-square ones give the same feature width;
    fastnet's smallest legal input (9x9) works."""
    sizes = [(9, 9), (24, 40), (64, 64)] if name == "fastnet" else [(8, 8), (24, 40), (64, 64)]
    dims = set()
    for hw in sizes:
        m = build_model(name, 7, (3, *hw)).eval()
        x = torch.randn(2, 3, *hw)
        with torch.no_grad():
            h = m.features(x)
            assert torch.allclose(m.classifier(h), m(x), atol=1e-5)
        dims.add(h.shape[1])
    assert len(dims) == 1
