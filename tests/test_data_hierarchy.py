"""Hierarchy builders, their validation errors, split pseudo labels, and subsampling."""

import json

import numpy as np
import pytest
import torch

from nclab.data import Hierarchy, build_hierarchy, load_dataset, split_labels, subsample
from nclab.data.cifar_meta import CIFAR10_CLASSES, CIFAR100_FINE
from nclab.train import Trainer
from nclab.utils.errors import NclabError
from test_train import base_cfg

C10 = CIFAR10_CLASSES


def groups(h):
    return [sorted(h.fine_names[f] for f in h.fine_classes(c)) for c in range(h.num_coarse)]


def test_mod5_on_cifar10_gives_the_paper_pairs():
    h = build_hierarchy("mod:5", C10)
    assert groups(h) == [["airplane", "dog"], ["automobile", "frog"], ["bird", "horse"], ["cat", "ship"],
                         ["deer", "truck"]]
    assert h.coarse_names[0] == "airplane+dog" and h.spec == "mod:5"
    assert all(h.fine_to_coarse[f] == f % 5 for f in range(10))


def test_adjacent5_pairs_neighbours():
    h = build_hierarchy("adjacent:5", C10)
    assert groups(h) == [["airplane", "automobile"], ["bird", "cat"], ["deer", "dog"], ["frog", "horse"],
                         ["ship", "truck"]]
    # K not dividing n: still every fine class in one group, sizes differ by at most one
    h3 = build_hierarchy("adjacent:3", C10)
    sizes = np.bincount(h3.fine_to_coarse)
    assert sizes.sum() == 10 and sizes.max() - sizes.min() <= 1
    assert np.all(np.diff(h3.fine_to_coarse) >= 0)  # contiguous blocks


def test_identity():
    h = build_hierarchy("identity", C10)
    assert np.array_equal(h.fine_to_coarse, np.arange(10)) and h.coarse_names == C10


@pytest.mark.parametrize("k", [2, 3, 5, 7])
def test_random_is_balanced_deterministic_and_seeded(k):
    a = build_hierarchy(f"random:11:{k}", C10)
    b = build_hierarchy(f"random:11:{k}", C10)
    assert np.array_equal(a.fine_to_coarse, b.fine_to_coarse)
    sizes = np.bincount(a.fine_to_coarse, minlength=k)
    assert a.num_coarse == k and sizes.min() >= 1 and sizes.max() - sizes.min() <= 1
    others = {tuple(build_hierarchy(f"random:{s}:{k}", C10).fine_to_coarse) for s in range(10)}
    assert len(others) > 1  # the seed matters


def test_random_default_k_is_pairs():
    assert build_hierarchy("random:0", C10).num_coarse == 5


# Independent listing of the official superclasses (from the CIFAR-100 web page, by name).
OFFICIAL_SUPERCLASSES = {
    "aquatic_mammals": ["beaver", "dolphin", "otter", "seal", "whale"],
    "fish": ["aquarium_fish", "flatfish", "ray", "shark", "trout"],
    "flowers": ["orchid", "poppy", "rose", "sunflower", "tulip"],
    "food_containers": ["bottle", "bowl", "can", "cup", "plate"],
    "fruit_and_vegetables": ["apple", "mushroom", "orange", "pear", "sweet_pepper"],
    "household_electrical_devices": ["clock", "keyboard", "lamp", "telephone", "television"],
    "household_furniture": ["bed", "chair", "couch", "table", "wardrobe"],
    "insects": ["bee", "beetle", "butterfly", "caterpillar", "cockroach"],
    "large_carnivores": ["bear", "leopard", "lion", "tiger", "wolf"],
    "large_man-made_outdoor_things": ["bridge", "castle", "house", "road", "skyscraper"],
    "large_natural_outdoor_scenes": ["cloud", "forest", "mountain", "plain", "sea"],
    "large_omnivores_and_herbivores": ["camel", "cattle", "chimpanzee", "elephant", "kangaroo"],
    "medium_mammals": ["fox", "porcupine", "possum", "raccoon", "skunk"],
    "non-insect_invertebrates": ["crab", "lobster", "snail", "spider", "worm"],
    "people": ["baby", "boy", "girl", "man", "woman"],
    "reptiles": ["crocodile", "dinosaur", "lizard", "snake", "turtle"],
    "small_mammals": ["hamster", "mouse", "rabbit", "shrew", "squirrel"],
    "trees": ["maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"],
    "vehicles_1": ["bicycle", "bus", "motorcycle", "pickup_truck", "train"],
    "vehicles_2": ["lawn_mower", "rocket", "streetcar", "tank", "tractor"],
}


def test_cifar100_superclasses_match_the_official_listing():
    assert CIFAR100_FINE == sorted(CIFAR100_FINE)  # the official label order is alphabetical
    h = build_hierarchy("cifar100", CIFAR100_FINE)
    assert h.num_coarse == 20 and h.num_fine == 100
    assert {h.coarse_names[c]: g for c, g in enumerate(groups(h))} == OFFICIAL_SUPERCLASSES
    assert list(OFFICIAL_SUPERCLASSES) == h.coarse_names  # official coarse order is alphabetical too


def test_cifar100_validation_names_the_entry():
    names = list(CIFAR100_FINE)
    names[7] = "beatle"
    with pytest.raises(NclabError, match="class 7 is 'beatle', expected the official 'beetle'"):
        build_hierarchy("cifar100", names)
    with pytest.raises(NclabError, match="needs the 100 CIFAR-100 classes, got 10"):
        build_hierarchy("cifar100", C10)


def test_file_yaml_by_names(tmp_path):
    p = tmp_path / "h.yaml"
    p.write_text("vehicles: [airplane, automobile, ship, truck]\nanimals: [bird, cat, deer, dog, frog, horse]\n")
    h = build_hierarchy(f"file:{p}", C10)
    assert h.coarse_names == ["vehicles", "animals"]
    assert groups(h) == [["airplane", "automobile", "ship", "truck"], ["bird", "cat", "deer", "dog", "frog", "horse"]]


def test_file_json_by_indices_and_list_and_table(tmp_path):
    p = tmp_path / "h.json"
    p.write_text(json.dumps([[0, 1, 8, 9], [2, 3, 4, 5, 6, 7]]))
    h = build_hierarchy(f"file:{p}", C10)
    assert h.coarse_names == ["airplane+automobile+ship+truck", "bird+cat+deer+dog+frog+horse"]
    q = tmp_path / "t.json"
    q.write_text(json.dumps({"fine_to_coarse": [0, 0, 1, 1, 1, 1, 1, 1, 0, 0], "coarse_names": ["veh", "ani"]}))
    h2 = build_hierarchy(f"file:{q}", C10)
    assert np.array_equal(h2.fine_to_coarse, h.fine_to_coarse) and h2.coarse_names == ["veh", "ani"]


@pytest.mark.parametrize("content, msg", [
    ("a: [airplane, automobile, ship, truck]\nb: [bird, cat, deer, dog, frog, horse, hrose]\n",
     "coarse 'b': unknown fine class 'hrose'"),
    ("a: [airplane, automobile, ship, truck, cat]\nb: [bird, cat, deer, dog, frog, horse]\n",
     "coarse 'b': fine class 'cat' is already in another coarse class"),
    ("a: [airplane, automobile, ship]\nb: [bird, cat, deer, dog, frog, horse]\n", "fine class 'truck' is in no coarse"),
    ("a: [0, 1, 8, 9, 12]\nb: [2, 3, 4, 5, 6, 7]\n", "coarse 'a': fine index 12 is outside 0..9"),
    ("a: []\nb: [0,1,2,3,4,5,6,7,8,9]\n", "coarse 'a': needs a non-empty list"),
    ("a: [0, 1\n", "not valid YAML/JSON"),
    ("just text", "expected a mapping"),
    ("fine_to_coarse: [0, 0, 1]\n", "one coarse index per fine class"),
    ("fine_to_coarse: [0, 0, 2, 2, 2, 2, 2, 2, 0, 0]\n", "coarse class 1 .* has no fine class"),
])
def test_file_validation_errors_name_the_entry(tmp_path, content, msg):
    p = tmp_path / "h.yaml"
    p.write_text(content)
    with pytest.raises(NclabError, match=msg):
        build_hierarchy(f"file:{p}", C10)


def test_file_missing(tmp_path):
    with pytest.raises(NclabError, match="not found"):
        build_hierarchy(f"file:{tmp_path / 'nope.yaml'}", C10)


@pytest.mark.parametrize("spec, msg", [
    ("mod:0", "K=0"), ("mod:11", "K=11"), ("mod:x", "K must be an integer"), ("adjacent:", "K must be an integer"),
    ("random:a", "SEED must be an integer"), ("random:1:2:3", "use random:SEED"),
    ("split:0", "M must be between 1 and 1000"),
    ("bogus:3", "unknown hierarchy 'bogus:3'"), ("dataset", "no hierarchy of its own"),
])
def test_builder_spec_errors(spec, msg):
    with pytest.raises(NclabError, match=msg):
        build_hierarchy(spec, C10)


def test_hierarchy_class_validation_names_entry():
    with pytest.raises(NclabError, match="fine class 1 \\(b\\) maps to coarse index 5"):
        Hierarchy(np.array([0, 5]), ["a", "b"], ["x"])
    with pytest.raises(NclabError, match="coarse class 1 \\(y\\) has no fine class"):
        Hierarchy(np.array([0, 0]), ["a", "b"], ["x", "y"])


def test_split_hierarchy_and_pseudo_labels():
    h = build_hierarchy("split:3:5", ["a", "b"])
    assert h.num_fine == 6 and h.coarse_names == ["a", "b"] and h.fine_names[:3] == ["a.0", "a.1", "a.2"]
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=101)
    p = split_labels(y, h)
    assert np.array_equal(h.coarse_of(p), y)  # each pseudo class lies inside its true class
    for c in range(2):
        sizes = np.bincount(p[y == c] - 3 * c, minlength=3)
        assert sizes.sum() == (y == c).sum() and sizes.max() - sizes.min() <= 1  # balanced
    assert np.array_equal(split_labels(y, h), p)  # deterministic
    assert not np.array_equal(split_labels(y, build_hierarchy("split:3:6", ["a", "b"])), p)  # the seed matters
    assert np.array_equal(split_labels(y, h, seed=6), p)  # the spec's SEED wins over a run's seed
    plain = build_hierarchy("split:3", ["a", "b"])  # no SEED: the caller's seed, else 0
    assert np.array_equal(split_labels(y, plain, seed=5), p)
    assert np.array_equal(split_labels(y, plain), split_labels(y, build_hierarchy("split:3:0", ["a", "b"])))
    pt = split_labels(torch.from_numpy(y), h)
    assert isinstance(pt, torch.Tensor) and np.array_equal(pt.numpy(), p)
    with pytest.raises(NclabError, match="needs a split:M hierarchy"):
        split_labels(y, build_hierarchy("identity", ["a", "b"]))


def test_dataset_hierarchy_spec():
    d = load_dataset("synthetic:coarse=3,fine_per_coarse=2,n_train=2,n_test=2")
    assert build_hierarchy("dataset", d.class_names, d) is d.hierarchy
    assert build_hierarchy("", d.class_names, d) is d.hierarchy
    with pytest.raises(NclabError, match="does not match these class names"):
        build_hierarchy("dataset", d.class_names[::-1], d)


def _toy(n_per_class=600, k=10):
    """Train split whose x[i] = i, so kept samples can be traced back."""
    from nclab.data import Dataset, Split

    y = torch.arange(k).repeat(n_per_class)
    x = torch.arange(len(y), dtype=torch.float32)[:, None]
    return Dataset("toy", Split(x, y), Split(x[:k], y[:k]), [f"k{i}" for i in range(k)])


def test_subsample_counts_deterministic_subset():
    ds = _toy()
    counts = [100, 100, 200, 200, 300, 300, 400, 400, 500, 500]
    s = subsample(ds, counts=counts, seed=3)
    assert np.array_equal(np.bincount(s.train.y.numpy()), counts)
    idx = s.train.x[:, 0].long()
    assert torch.equal(ds.train.y[idx], s.train.y)  # every kept sample is an original one with its own label
    assert len(set(idx.tolist())) == len(idx) and torch.all(idx[1:] > idx[:-1])  # no repeats, original order
    assert torch.equal(subsample(ds, counts=counts, seed=3).train.x, s.train.x)
    assert not torch.equal(subsample(ds, counts=counts, seed=4).train.x, s.train.x)
    assert torch.equal(s.test.x, ds.test.x) and s.meta["subsample"]["counts"] == counts
    s2 = subsample(ds, counts="100,100,200,200,300,300,400,400,500,500", seed=3)
    assert torch.equal(s2.train.x, s.train.x)


def test_subsample_ratio_geometric_profile():
    ds = _toy()
    s = subsample(ds, ratio=10.0, seed=0)
    got = np.bincount(s.train.y.numpy())
    want = [round(600 * 10 ** (-c / 9)) for c in range(10)]  # n_c = n_max * r^(-c/(K-1))
    assert got.tolist() == want and got[0] == 600 and got[-1] == 60


@pytest.mark.parametrize("kw, msg", [
    ({"counts": [601] + [1] * 9}, "asks for 601 samples of class 0 \\(k0\\) but the train split has 600"),
    ({"counts": [1, 2]}, "one count per class \\(10\\), got 2"),
    ({"counts": "1,x"}, "comma-separated integers"),
    ({"ratio": 0.5}, "ratio must be >= 1"),
    ({}, "exactly one of"),
    ({"counts": 5, "ratio": 2.0}, "exactly one of"),
])
def test_subsample_errors(kw, msg):
    with pytest.raises(NclabError, match=msg):
        subsample(_toy(), **kw)


def test_hierarchies_carry_an_explicit_kind_that_survives_a_round_trip():
    from nclab.data import build_hierarchy
    from nclab.data.hierarchy import Hierarchy
    from nclab.utils.errors import NclabError

    names = [f"c{i}" for i in range(4)]
    grouped, split = build_hierarchy("mod:2", names), build_hierarchy("split:3", names)
    assert (grouped.kind, split.kind) == ("group", "split")
    assert Hierarchy.from_dict(split.to_dict()).kind == "split"
    legacy = {k: v for k, v in split.to_dict().items() if k != "kind"}  # written before the field existed
    assert Hierarchy.from_dict(legacy).kind == "split"
    relabelled = {**split.to_dict(), "spec": "custom"}  # the kind, not the spec's spelling, decides
    assert Hierarchy.from_dict(relabelled).kind == "split"
    with pytest.raises(NclabError, match="kind"):
        Hierarchy([0, 1], ["a", "b"], ["x", "y"], kind="splt")


def test_coarse_of_refuses_labels_outside_the_hierarchy():
    import torch

    from nclab.data import build_hierarchy

    h = build_hierarchy("mod:2", list("abcd"))
    assert list(h.coarse_of(np.array([0, 1, 2, 3]))) == [0, 1, 0, 1]
    assert h.coarse_of(torch.tensor([[3, 2]])).tolist() == [[1, 0]]
    for bad, msg in ((np.array([-1, 0]), "fine label -1 is outside 0..3"), (np.array([4]), "fine label 4"),
                     (np.array([0.0, 1.0]), "integer"), (torch.tensor([-1]), "fine label -1"),
                     (torch.tensor([1.0]), "integer")):
        with pytest.raises(NclabError, match=msg):
            h.coarse_of(bad)


def test_subsample_refuses_a_class_with_no_train_samples():
    from nclab.data import load_dataset, subsample

    ds = load_dataset("digits")
    # count 0 silently dropped the class from training while it stayed in num_classes, the test split and the
    # metrics (counts=0 gave an empty train split); the geometric profile already keeps >= 1 per class
    for counts in (0, "0," + ",".join(["5"] * 9), [5] * 9 + [0]):
        with pytest.raises(NclabError, match=r"subsample count for class \d is 0; every class needs >= 1"):
            subsample(ds, counts=counts)
    with pytest.raises(NclabError, match=r"class 0 is -1"):
        subsample(ds, counts="-1," + ",".join(["5"] * 9))
    for counts in (["a"] * 10, [float("nan")] * 10, 5.5, [float("inf")] * 10):  # ValueError/TypeError before
        with pytest.raises(NclabError, match="whole numbers"):
            subsample(ds, counts=counts)
    assert np.bincount(subsample(ds, counts=[1] * 9 + [2]).train.y.numpy()).tolist() == [1] * 9 + [2]


def test_subsample_picks_what_its_docstring_says(tmp_path):
    # class c keeps default_rng([seed, c]).permutation(its indices)[:n], in original order; with ratio=... the
    # profile starts from the smallest available class (unequal class sizes here, so max() would differ);
    # a training run subsamples with its own seed
    from nclab.data import subsample
    from nclab.data.subsample import geometric_counts
    from nclab.data.types import Dataset, Split
    y = np.repeat(np.arange(3), [10, 6, 8])
    x = torch.arange(y.size, dtype=torch.float32).view(-1, 1)
    ds = Dataset("toy", Split(x, torch.from_numpy(y)), Split(x[:3], torch.arange(3)), ["a", "b", "c"], source="toy")

    def want(counts, seed):
        keep = [np.flatnonzero(y == c)[np.random.default_rng([seed, c]).permutation((y == c).sum())[:n]]
                for c, n in enumerate(counts)]
        return np.sort(np.concatenate(keep))

    got = subsample(ds, ratio=2.0, seed=3)
    counts = geometric_counts(6, 3, 2.0)
    assert counts[0] == 6 and list(np.bincount(got.train.y.numpy(), minlength=3)) == list(counts)
    assert np.array_equal(got.train.x[:, 0].numpy().astype(int), want(counts, 3))
    tr = Trainer(base_cfg(seed=4, data={"subsample": [5, 2, 3], "normalize": False}), tmp_path / "r", dataset=ds)
    assert np.array_equal(tr.dataset.train.x[:, 0].numpy().astype(int), want([5, 2, 3], 4))
    # a mapping without a seed takes the run's seed, and the resolved config keeps what the user wrote
    tr = Trainer(base_cfg(seed=4, data={"subsample": {"counts": [5, 2, 3]}, "normalize": False}), tmp_path / "m",
                 dataset=ds)
    assert np.array_equal(tr.dataset.train.x[:, 0].numpy().astype(int), want([5, 2, 3], 4))
    assert tr.cfg.data.subsample == {"counts": [5, 2, 3]}


def test_random_hierarchy_is_a_seeded_balanced_grouping_numbered_by_smallest_fine_class():
    # written from the builder's comments: perm = default_rng(SEED).permutation(n), fine class perm[i] joins
    # group i mod K, and the groups are numbered by their smallest fine class
    from nclab.data import build_hierarchy
    n, k = 10, 3
    names = [f"f{i}" for i in range(n)]
    for seed in range(8):  # several seeds: for some the groups come out in order without renumbering
        h = build_hierarchy(f"random:{seed}:{k}", names)
        perm = np.random.default_rng(seed).permutation(n)
        groups = sorted((sorted(int(f) for f in perm[i::k]) for i in range(k)), key=min)  # numbered in order
        assert [h.fine_classes(c) for c in range(k)] == groups, seed
