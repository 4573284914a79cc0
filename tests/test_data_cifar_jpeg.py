"""The shared CIFAR-10 JPEG copy: one cold decode per pytest run (its own cache dir), then cached loads."""

import json
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from nclab.cli import main as cli_main
from nclab.data import build_hierarchy, load_dataset
from nclab.data import cache as cache_mod
from nclab.data.cifar_meta import CIFAR10_CLASSES


@pytest.fixture(scope="package")
def cifar_cold(cifar_jpeg, tmp_path_factory):
    """(dataset, cache dir, misses during the load): the one cold decode of the pytest run."""
    cache = tmp_path_factory.mktemp("cifar10-jpeg-cache")
    misses = cache_mod.STATS["misses"]
    ds = load_dataset(f"imagefolder:{cifar_jpeg}", cache_dir=cache)
    return ds, cache, cache_mod.STATS["misses"] - misses


def test_counts_and_label_order(cifar_cold):
    ds, _, misses = cifar_cold
    assert misses == 1
    assert ds.class_names == CIFAR10_CLASSES  # sorted folder names = the standard CIFAR-10 order
    assert ds.train.x.shape == (50000, 3, 32, 32) and ds.test.x.shape == (10000, 3, 32, 32)
    assert ds.train.x.dtype == torch.uint8 and ds.train.y.dtype == torch.int64
    assert ds.train.y.bincount().tolist() == [5000] * 10 and ds.test.y.bincount().tolist() == [1000] * 10
    assert bool((ds.train.y[1:] >= ds.train.y[:-1]).all())  # grouped by class in label order
    # per-channel statistics of this copy as published with it (README next to the archive)
    mean, std = ds.channel_stats()
    assert mean == pytest.approx([0.4913, 0.4821, 0.4465], abs=2e-4)
    assert std == pytest.approx([0.2452, 0.2428, 0.2606], abs=2e-4)


def test_pixels_match_a_direct_pillow_decode(cifar_cold, cifar_jpeg):
    ds, _, _ = cifar_cold
    with tarfile.open(cifar_jpeg, "r:gz") as tf:
        names = [m.name for m in tf.getmembers() if m.isfile()]
        for split, cls, pos in (("train", "cat", 0), ("test", "truck", -1), ("train", "airplane", 1234)):
            members = sorted(n for n in names if n.split("/")[-3:-1] == [split, cls])
            k = CIFAR10_CLASSES.index(cls)
            per = 5000 if split == "train" else 1000
            idx = k * per + (pos % per)
            want = np.asarray(Image.open(tf.extractfile(members[pos])).convert("RGB")).transpose(2, 0, 1)
            got = getattr(ds, split).x[idx].numpy()
            assert np.array_equal(got, want)


def test_second_load_is_a_cache_hit_with_identical_tensors(cifar_cold, cifar_jpeg):
    ds, cache, _ = cifar_cold
    hits, misses = cache_mod.STATS["hits"], cache_mod.STATS["misses"]
    again = load_dataset(f"imagefolder:{cifar_jpeg}", cache_dir=cache)
    assert cache_mod.STATS["hits"] == hits + 1 and cache_mod.STATS["misses"] == misses
    for a, b in ((ds.train, again.train), (ds.test, again.test)):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert again.checksum == ds.checksum == "f33cb8dc523cafd312eb9bfaf0fa9446fdf3c2f43f0ebe40ec62a4e563f153e2"
    assert not list(cache.glob("datasets/.tmp-*"))


def test_cli_data_info_json_mod5(cifar_cold, cifar_jpeg, capsys):
    _, cache, _ = cifar_cold
    rc = cli_main(["data", "info", "--source", f"imagefolder:{cifar_jpeg}", "--hierarchy", "mod:5",
                   "--cache-dir", str(cache), "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    info = json.loads(out)  # stdout is JSON only
    tr, te = info["splits"]["train"], info["splits"]["test"]
    assert tr["n"] == 50000 and te["n"] == 10000
    assert [e["count"] for e in tr["fine"]] == [5000] * 10 and [e["name"] for e in te["fine"]] == CIFAR10_CLASSES
    assert [(e["name"], e["count"], e["fine"]) for e in te["coarse"]] == [
        ("airplane+dog", 2000, [0, 5]), ("automobile+frog", 2000, [1, 6]), ("bird+horse", 2000, [2, 7]),
        ("cat+ship", 2000, [3, 8]), ("deer+truck", 2000, [4, 9])]
    assert info["hierarchy"] == build_hierarchy("mod:5", CIFAR10_CLASSES).to_dict()
