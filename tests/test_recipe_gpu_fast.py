"""The gpu-fast recipe on the CPU: its config, fastnet's deeper groups (shapes, a hand-written forward), a few
training steps on a tiny image set, and resume equal to an uninterrupted run."""

from __future__ import annotations

import pytest
import torch

from nclab.data.types import Dataset, Split
from nclab.experiments.finegrain_runs import CALLBACKS, build_config
from nclab.models import build_model
from nclab.train import Trainer, load_config
from nclab.utils.errors import NclabError


def _images(n_train=24, n_test=12, size=16, seed=0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    sp = lambda n: Split(torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8),  # noqa: E731
                         torch.arange(n) % 4)
    return Dataset("imgs", sp(n_train), sp(n_test), ["a", "b", "c", "d"], source="random")


def test_reproduce_gpu_fast_resolves_to_the_recipe_on_coarse_labels():
    cfg = build_config("cifar10-coarse5", recipe="gpu-fast")
    assert cfg.model.name == "fastnet" and cfg.model.widths == (128, 384, 512) and cfg.model.group_depth == 3
    assert cfg.data.labels == "coarse" and cfg.data.hierarchy == "mod:5"
    assert cfg.data.source == "imagefolder:$NCLAB_DATA/cifar10-jpeg.tar.gz"
    assert cfg.train.compile == "reduce-overhead" and cfg.train.tta == "flip" and cfg.optim.lookahead_every == 5
    assert cfg.callbacks == CALLBACKS["gpu-fast"]
    assert load_config("gpu_fast").data.labels == "fine"  # the 10-class baseline's config


def test_deeper_groups_match_a_hand_written_forward():
    net = build_model("fastnet", 5, (3, 32, 32), widths=(8, 16, 16), group_depth=3, whiten=False).eval()
    g = net.backbone.group2
    assert [n for n, _ in g.named_children() if n.startswith("conv")] == ["conv1", "conv2", "conv3"]
    x = torch.randn(2, 8, 16, 16)
    with torch.no_grad():
        h = g.act(g.norm1(g.pool(g.conv1(x))))
        h = g.act(g.norm2(g.conv2(h)))
        h = g.act(g.norm3(g.conv3(h)))
        torch.testing.assert_close(g(x), h, rtol=0, atol=0)
        assert net(torch.randn(2, 3, 32, 32)).shape == (2, 5)
        assert net.features(torch.randn(2, 3, 32, 32)).shape == (2, 16)
    # the default depth builds airbench94's net: the same parameters as before the option existed
    two = build_model("fastnet", 5, (3, 32, 32), widths=(8, 16, 16), whiten=False)
    assert not any(k.endswith(("conv3.weight", "norm3.bias")) for k in two.state_dict())
    three = set(net.state_dict())
    assert set(two.state_dict()) < three and len(three - set(two.state_dict())) == 3 * (1 + 5)
    # per group: conv3.weight, norm3.{weight, bias, running_mean, running_var, num_batches_tracked}
    with pytest.raises(NclabError, match="group_depth"):
        build_model("fastnet", 5, (3, 32, 32), group_depth=1)


def _recipe_cfg(epochs: int, widths=(8, 16, 16)):
    cfg = load_config("gpu_fast", ["train.device=cpu", "train.bf16=false", f"optim.epochs={epochs}",
                                   "optim.batch_size=8", "train.checkpoint_every=1", "train.eval_every=1"])
    return cfg.replace(model=cfg.model.replace(widths=list(widths)), name="g")


def test_a_few_recipe_steps_on_tiny_images_lower_the_loss(tmp_path):
    ds = _images()
    cfg = _recipe_cfg(3, widths=(128, 384, 512))  # the recipe's own widths and depth
    tr = Trainer(cfg, tmp_path / "r", dataset=ds)
    assert tr._fwd is tr.model  # reduce-overhead = CUDA graphs; on a CPU the eager model runs
    tr.fit()
    losses = [r["train_loss"] for r in tr.metrics]
    assert losses == sorted(losses, reverse=True) and losses[-1] < losses[0]  # it learns the 24 images


def test_recipe_resume_equals_an_uninterrupted_run(tmp_path):
    ds = _images()
    ref = Trainer(_recipe_cfg(3), tmp_path / "ref", dataset=ds)
    ref.fit()
    first = Trainer(_recipe_cfg(3).replace(train=_recipe_cfg(3).train.replace(time_limit_s=1e-9)),
                    tmp_path / "cut", dataset=ds)
    from nclab.utils.errors import RunPaused

    with pytest.raises(RunPaused):
        first.fit()
    assert first.epoch == 1
    rest = Trainer(_recipe_cfg(3), tmp_path / "cut", dataset=ds)
    rest.fit(resume=True)
    for (k, a), b in zip(ref.model.state_dict().items(), rest.model.state_dict().values()):
        assert torch.equal(a, b), k
    drop = ("epoch_time_s", "images_per_s", "time_s", "train_time_s", "train_time_total_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in rest.metrics] == \
        [{k: v for k, v in r.items() if k not in drop} for r in ref.metrics]
