"""File sources (CIFAR python archives, IDX, image folders), the cache, and bad inputs.

Every fixture file is built here in the official format (no internet, no large data)."""

import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nclab.data import build_hierarchy, load_dataset
from nclab.data import cache as cache_mod
from nclab.data import cifar_meta
from nclab.utils.errors import NclabError
from nclab.data.subsample import subsample


def md5(p):
    return hashlib.md5(Path(p).read_bytes()).hexdigest()


def add_bytes(tf, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


# ---------------------------------------------------------------- CIFAR (official python pickle format)

class Py2Pickler(pickle._Pickler):
    """Writes pickles the way the official release was made (Python 2 cPickle, protocol 2, numpy 1.x):
    bytes and str as py2 byte strings, numpy functions under ``numpy.core``."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        b = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(b) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(b)]) + b)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(b)) + b)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str

    def save_global(self, obj, name=None):
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)


def py2_pickle(obj) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def cifar_files(name, n_train=(3, 2, 2, 2, 1), n_test=4, seed=0, dumps=py2_pickle):
    """{member name: pickle bytes} like the official release, plus the expected arrays."""
    rng = np.random.default_rng(seed)
    info = cifar_meta.CIFAR_FILES[name]
    k = 10 if name == "cifar10" else 100
    files, xs, ys = {}, {"train": [], "test": []}, {"train": [], "test": []}
    sizes = {"train": list(n_train) if name == "cifar10" else [sum(n_train)], "test": [n_test]}
    for split in ("train", "test"):
        for fname, n in zip(info[split], sizes[split]):
            data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
            fine = rng.permutation(np.arange(n) % k).tolist()  # n >= k covers every class
            d = {b"batch_label": b"batch", b"data": data, b"filenames": [b"f.png"] * n}
            if name == "cifar10":
                d[b"labels"] = fine
            else:
                d[b"fine_labels"] = fine
                d[b"coarse_labels"] = [cifar_meta.CIFAR100_FINE_TO_COARSE[f] for f in fine]
            files[fname] = dumps(d)
            xs[split].append(data)
            ys[split].append(fine)
    if name == "cifar10":
        meta = {b"label_names": [n.encode() for n in cifar_meta.CIFAR10_CLASSES], b"num_cases_per_batch": 10}
    else:
        meta = {b"fine_label_names": [n.encode() for n in cifar_meta.CIFAR100_FINE],
                b"coarse_label_names": [n.encode() for n in cifar_meta.CIFAR100_COARSE]}
    files[info["meta"]] = dumps(meta)
    expect = {s: (np.concatenate(xs[s]), np.concatenate(ys[s]).astype(np.int64)) for s in xs}
    return files, expect


def write_cifar_archive(path, name, files, folder=None):
    folder = folder or cifar_meta.CIFAR_FILES[name]["folder"]
    with tarfile.open(path, "w:gz") as tf:
        for fname, data in files.items():
            add_bytes(tf, f"{folder}/{fname}", data)
    return path


@pytest.fixture
def cifar10_archive(tmp_path, monkeypatch):
    files, expect = cifar_files("cifar10")
    p = write_cifar_archive(tmp_path / "cifar-10-python.tar.gz", "cifar10", files)
    monkeypatch.setitem(cifar_meta.CIFAR_FILES["cifar10"], "md5", md5(p))
    return p, files, expect


def test_cifar10_archive_pixels_labels_names(cifar10_archive, tmp_path):
    p, _, expect = cifar10_archive
    d = load_dataset(f"cifar10:{p}")
    assert d.class_names == cifar_meta.CIFAR10_CLASSES and d.hierarchy is None
    for split, s in (("train", d.train), ("test", d.test)):
        x, y = expect[split]
        assert s.x.dtype == torch.uint8 and s.x.shape == (len(y), 3, 32, 32)
        assert torch.equal(s.y, torch.from_numpy(y))
        # official row layout: 1024 red, then 1024 green, then 1024 blue, each row-major 32x32
        i, c, r, col = len(y) - 1, 1, 5, 7
        assert int(s.x[i, c, r, col]) == int(x[i, c * 1024 + r * 32 + col])
        assert int(s.x[0, 2, 31, 0]) == int(x[0, 2 * 1024 + 31 * 32])
    assert len(d.train) == 10 and len(d.test) == 4
    assert d.checksum == hashlib.sha256(p.read_bytes()).hexdigest()


def test_cifar10_extracted_folder_and_per_file_md5(tmp_path, monkeypatch):
    files, expect = cifar_files("cifar10", seed=1)
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for fname, data in files.items():
        (root / fname).write_bytes(data)
    for fname in files:
        monkeypatch.setitem(cifar_meta.CIFAR_FILES["cifar10"]["file_md5"], fname, md5(root / fname))
    for arg in (root, tmp_path):  # the folder itself or its parent
        d = load_dataset(f"cifar10:{arg}", cache_dir=tmp_path / f"c{arg == root}")
        assert torch.equal(d.test.y, torch.from_numpy(expect["test"][1]))
    monkeypatch.setitem(cifar_meta.CIFAR_FILES["cifar10"]["file_md5"], "test_batch", "0" * 32)
    with pytest.raises(NclabError, match="test_batch has MD5 .* not the official 0000"):
        load_dataset(f"cifar10:{root}", cache_dir=tmp_path / "fresh")


def test_cifar100_fine_and_official_coarse(tmp_path, monkeypatch):
    files, expect = cifar_files("cifar100", n_train=(60,), n_test=5)
    p = write_cifar_archive(tmp_path / "cifar-100-python.tar.gz", "cifar100", files)
    with pytest.raises(NclabError, match="not the official eb9058c3a382ffc7106e4002c42a8d85"):
        load_dataset(f"cifar100:{p}")
    monkeypatch.setitem(cifar_meta.CIFAR_FILES["cifar100"], "md5", md5(p))
    # 60 images cannot hold all 100 fine classes: the reader refuses data it cannot derive coarse labels from
    with pytest.raises(NclabError, match="no image of fine class 60 \\(plain\\)"):
        load_dataset(f"cifar100:{p}")
    # (pickles as a current Python/numpy writes them; the CIFAR-10 tests use the official py2 format)
    files, expect = cifar_files("cifar100", n_train=(130,), n_test=5, seed=2,
                                dumps=lambda o: pickle.dumps(o, protocol=2))
    p = write_cifar_archive(tmp_path / "cifar-100-python.tar.gz", "cifar100", files)
    monkeypatch.setitem(cifar_meta.CIFAR_FILES["cifar100"], "md5", md5(p))
    d = load_dataset(f"cifar100:{p}")
    assert d.class_names == cifar_meta.CIFAR100_FINE and torch.equal(d.train.y, torch.from_numpy(expect["train"][1]))
    # coarse labels derived from the archive's paired labels equal the embedded official table
    assert d.hierarchy.num_coarse == 20 and d.hierarchy.coarse_names == cifar_meta.CIFAR100_COARSE
    assert np.array_equal(d.hierarchy.fine_to_coarse, build_hierarchy("cifar100", d.class_names).fine_to_coarse)


def test_cifar_wrong_md5(tmp_path):
    files, _ = cifar_files("cifar10")
    p = write_cifar_archive(tmp_path / "cifar-10-python.tar.gz", "cifar10", files)
    with pytest.raises(NclabError, match=f"{p} has MD5 {md5(p)}, not the official c58f30108f718f92721af3b95e74349a"):
        load_dataset(f"cifar10:{p}")


def test_cifar_truncated_archive(tmp_path, monkeypatch):
    files, _ = cifar_files("cifar10")
    p = write_cifar_archive(tmp_path / "cifar-10-python.tar.gz", "cifar10", files)
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    monkeypatch.setitem(cifar_meta.CIFAR_FILES["cifar10"], "md5", md5(p))
    with pytest.raises(NclabError, match=f"archive {p} is corrupt or truncated"):
        load_dataset(f"cifar10:{p}")


def test_cifar_archive_unsafe_members_refused(tmp_path, monkeypatch):
    files, _ = cifar_files("cifar10")
    for bad in ("../evil", "/abs/evil", "cifar-10-batches-py/../../evil"):
        p = tmp_path / "cifar-10-python.tar.gz"
        with tarfile.open(p, "w:gz") as tf:
            add_bytes(tf, bad, b"x")
            for fname, data in files.items():
                add_bytes(tf, f"cifar-10-batches-py/{fname}", data)
        monkeypatch.setitem(cifar_meta.CIFAR_FILES["cifar10"], "md5", md5(p))
        with pytest.raises(NclabError, match=f"unsafe member path '{bad}'"):
            load_dataset(f"cifar10:{p}")
    assert not (tmp_path.parent / "evil").exists() and not Path("/abs/evil").exists()


def test_cifar_pickle_with_foreign_class_refused(tmp_path, monkeypatch):
    files, _ = cifar_files("cifar10")
    files["test_batch"] = pickle.dumps({b"data": Path("/etc")}, protocol=2)  # needs pathlib to unpickle
    p = write_cifar_archive(tmp_path / "cifar-10-python.tar.gz", "cifar10", files)
    monkeypatch.setitem(cifar_meta.CIFAR_FILES["cifar10"], "md5", md5(p))
    with pytest.raises(NclabError, match="test_batch is not a readable CIFAR pickle .*refusing to load pathlib"):
        load_dataset(f"cifar10:{p}")


def test_cifar_missing_offline_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar_meta, "BASE_URL", "http://127.0.0.1:9/")  # nothing listens: fails at once
    dest = tmp_path / "downloads" / "cifar-10-python.tar.gz"
    with pytest.raises(NclabError, match=f"cannot download .*put the official cifar-10-python.tar.gz at {dest}"):
        load_dataset("cifar10", cache_dir=tmp_path)
    with pytest.raises(NclabError, match=f"downloads are off; put the official cifar-10-python.tar.gz at {dest}"):
        load_dataset("cifar10", cache_dir=tmp_path, download=False)
    assert not any((tmp_path / "downloads").glob("*"))  # no partial download left behind


def test_cifar_download_verifies_and_stores(tmp_path, monkeypatch):
    files, expect = cifar_files("cifar10")
    src = tmp_path / "mirror"
    src.mkdir()
    p = write_cifar_archive(src / "cifar-10-python.tar.gz", "cifar10", files)
    monkeypatch.setattr(cifar_meta, "BASE_URL", src.as_uri() + "/")
    with pytest.raises(NclabError, match="downloaded cifar-10-python.tar.gz has MD5"):
        load_dataset("cifar10", cache_dir=tmp_path / "c")
    assert not (tmp_path / "c" / "downloads" / "cifar-10-python.tar.gz").exists()
    monkeypatch.setitem(cifar_meta.CIFAR_FILES["cifar10"], "md5", md5(p))
    d = load_dataset("cifar10", cache_dir=tmp_path / "c")
    assert (tmp_path / "c" / "downloads" / "cifar-10-python.tar.gz").read_bytes() == p.read_bytes()
    assert torch.equal(d.train.y, torch.from_numpy(expect["train"][1]))


# ---------------------------------------------------------------- IDX (MNIST / Fashion-MNIST)

def idx_bytes(a):
    a = np.asarray(a, dtype=np.uint8)
    return bytes([0, 0, 8, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()


def write_idx(folder, gz, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (7, 28, 28)),
              "train-labels-idx1-ubyte": rng.integers(0, 10, 7),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (3, 28, 28)),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, 3)}
    for name, a in arrays.items():
        data = idx_bytes(a)
        (folder / (name + (".gz" if gz else ""))).write_bytes(gzip.compress(data) if gz else data)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_idx_raw_and_gz(tmp_path, gz, name):
    arrays = write_idx(tmp_path / "m", gz)
    d = load_dataset(f"{name}:{tmp_path / 'm'}")
    assert d.train.x.shape == (7, 1, 28, 28) and d.train.x.dtype == torch.uint8
    assert np.array_equal(d.train.x[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert np.array_equal(d.test.y.numpy(), arrays["t10k-labels-idx1-ubyte"]) and d.test.y.dtype == torch.int64
    assert (d.class_names[0] == "T-shirt/top") == (name == "fashion-mnist")


@pytest.mark.parametrize("damage, msg", [
    (lambda b: b[:-5], "holds 779 data bytes but its header declares"),
    (lambda b: b"\x00\x00\x0d\x01" + b[4:], "not an unsigned-byte IDX file"),
    (lambda b: b[:6], "truncated"),
])
def test_idx_bad_files(tmp_path, damage, msg):
    write_idx(tmp_path / "m", gz=False)
    # replace the test images with one damaged 28x28 image file
    (tmp_path / "m" / "t10k-images-idx3-ubyte").write_bytes(damage(idx_bytes(np.zeros((1, 28, 28)))))
    with pytest.raises(NclabError, match=msg):
        load_dataset(f"mnist:{tmp_path / 'm'}")


def test_idx_missing_file_and_bad_gzip(tmp_path):
    write_idx(tmp_path / "m", gz=True)
    (tmp_path / "m" / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(NclabError, match="cannot read .*t10k-images-idx3-ubyte.gz"):
        load_dataset(f"mnist:{tmp_path / 'm'}")
    (tmp_path / "m" / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(NclabError, match="has no t10k-images-idx3-ubyte"):
        load_dataset(f"mnist:{tmp_path / 'm'}")


def test_fashion_mnist_debian_package():
    folder = Path("/usr/share/datasets/fashion-mnist")
    if not folder.is_dir():
        pytest.skip("Debian package dataset-fashion-mnist not installed")
    d = load_dataset("fashion-mnist")
    assert len(d.train) == 60000 and len(d.test) == 10000 and d.input_shape == (1, 28, 28)
    assert d.train.y.bincount().tolist() == [6000] * 10 and d.test.y.bincount().tolist() == [1000] * 10


# ---------------------------------------------------------------- image folders

def make_folder(root, classes=("b", "a", "c"), n=(3, 2), size=(6, 5), mode="RGB", ext="png"):
    """Image i of class index k in split s has every pixel = 10*k + i (+100 for test)."""
    for s, count in zip(("train", "test"), n):
        for k, c in enumerate(sorted(classes)):
            (root / s / c).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                v = 10 * k + i + (100 if s == "test" else 0)
                Image.new(mode, size, (v,) * len(mode) if mode != "L" else v).save(root / s / c / f"{i:03d}.{ext}")
    return root


def check_folder_dataset(d, classes=("a", "b", "c"), n=(3, 2)):
    assert d.class_names == list(classes)
    for s, split, count in (("train", d.train, n[0]), ("test", d.test, n[1])):
        assert split.y.tolist() == [k for k in range(len(classes)) for _ in range(count)]
        want = [10 * k + i + (100 if s == "test" else 0) for k in range(len(classes)) for i in range(count)]
        assert split.x[:, :, 0, 0].tolist() == [[v] * split.x.shape[1] for v in want]
        assert bool((split.x == split.x[:, :, :1, :1]).all())


def test_imagefolder_folder_sorted_classes(tmp_path):
    root = make_folder(tmp_path / "data")
    d = load_dataset(f"imagefolder:{root}")
    assert d.train.x.shape == (9, 3, 5, 6) and d.is_image
    check_folder_dataset(d)
    # a folder holding a single root folder works too
    d2 = load_dataset(f"imagefolder:{tmp_path}")
    assert torch.equal(d2.train.x, d.train.x)


def test_imagefolder_relative_path_same_data_and_cache_key(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "data")
    d = load_dataset(f"imagefolder:{root}")
    monkeypatch.chdir(tmp_path)  # "data" relative to the working directory (was joined twice: data/data/...)
    rel = load_dataset("imagefolder:data")
    check_folder_dataset(rel)
    assert rel.checksum == d.checksum and torch.equal(rel.train.x, d.train.x)


def test_imagefolder_grey_jpeg(tmp_path):
    root = make_folder(tmp_path / "g", mode="L", ext="jpg")
    d = load_dataset(f"imagefolder:{root}")
    assert d.train.x.shape[1] == 1
    assert d.train.x[:, 0, 0, 0].tolist() == pytest.approx([0, 1, 2, 10, 11, 12, 20, 21, 22], abs=1)


@pytest.mark.parametrize("suffix, mode", [(".tar", "w"), (".tar.gz", "w:gz")])
def test_imagefolder_archives(tmp_path, suffix, mode):
    root = make_folder(tmp_path / "data")
    (root / "README.md").write_text("ignored")
    arch = tmp_path / f"imgs{suffix}"
    with tarfile.open(arch, mode) as tf:
        tf.add(root, arcname="imgs")
    d = load_dataset(f"imagefolder:{arch}")
    check_folder_dataset(d)
    assert d.checksum == hashlib.sha256(arch.read_bytes()).hexdigest()


def test_imagefolder_cache_hit_and_miss(tmp_path, monkeypatch):
    import nclab.data.imagefolder as imf

    decodes = []
    real = imf.stack_images
    monkeypatch.setattr(imf, "stack_images", lambda *a, **k: decodes.append(1) or real(*a, **k))
    root = make_folder(tmp_path / "data")
    cache = tmp_path / "cache"
    a = load_dataset(f"imagefolder:{root}", cache_dir=cache)
    assert len(decodes) == 2  # train + test decoded
    b = load_dataset(f"imagefolder:{root}", cache_dir=cache)
    assert len(decodes) == 2 and torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    entries = list((cache / "datasets").iterdir())
    assert len(entries) == 1 and entries[0].name.startswith("imagefolder-" + a.checksum[:32])
    # a changed source is a new key: add one image -> miss, and the new image is there
    Image.new("RGB", (6, 5), (7, 7, 7)).save(root / "train" / "a" / "zzz.png")
    c = load_dataset(f"imagefolder:{root}", cache_dir=cache)
    assert len(decodes) == 4 and len(c.train) == 10 and c.checksum != a.checksum
    # the default cache dir is $NCLAB_CACHE (the conftest points it at a temp dir)
    before = cache_mod.STATS["misses"]
    load_dataset(f"imagefolder:{root}")
    load_dataset(f"imagefolder:{root}")
    assert cache_mod.STATS["misses"] == before + 1


def test_cache_write_failure_leaves_nothing(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "data")
    cache = tmp_path / "cache"
    real = np.save
    calls = []

    def failing_save(path, arr, **kw):  # crash after the first array is written
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(path, arr, **kw)

    monkeypatch.setattr(cache_mod.np, "save", failing_save)
    d = load_dataset(f"imagefolder:{root}", cache_dir=cache)  # still returns the data
    check_folder_dataset(d)
    assert list((cache / "datasets").iterdir()) == []  # neither a half entry nor a temp folder
    monkeypatch.setattr(cache_mod.np, "save", real)
    load_dataset(f"imagefolder:{root}", cache_dir=cache)
    assert len(calls) == 2 and len(list((cache / "datasets").iterdir())) == 1


def test_corrupt_cache_entry_is_rebuilt_and_stale_temps_are_swept(tmp_path, capsys):
    root = make_folder(tmp_path / "data")
    cache = tmp_path / "cache"
    a = load_dataset(f"imagefolder:{root}", cache_dir=cache)
    (entry,) = (cache / "datasets").iterdir()
    (entry / "train_x.npy").write_bytes(b"\x93NUMPY truncated")  # e.g. a disk filled up under another tool
    stale = cache / "datasets" / ".tmp-killed-writer"  # left by a process killed mid-write, long ago
    fresh = cache / "datasets" / ".tmp-live-writer"  # another process writing right now
    for t in (stale, fresh):
        t.mkdir()
    os.utime(stale, (time.time() - 3 * 24 * 3600,) * 2)
    misses = cache_mod.STATS["misses"]
    b = load_dataset(f"imagefolder:{root}", cache_dir=cache)
    assert cache_mod.STATS["misses"] == misses + 1 and "unreadable" in capsys.readouterr().err
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    assert not stale.exists() and fresh.exists()
    c = load_dataset(f"imagefolder:{root}", cache_dir=cache)  # the rebuilt entry is a normal hit
    assert cache_mod.STATS["misses"] == misses + 1 and torch.equal(a.train.x, c.train.x)


def test_unwritable_cache_dir_still_loads_the_data(tmp_path, capsys):
    root = make_folder(tmp_path / "data")
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    d = load_dataset(f"imagefolder:{root}", cache_dir=blocker)
    check_folder_dataset(d)
    assert "continuing without it" in capsys.readouterr().err and blocker.read_text().startswith("a file")


def test_imagefolder_image_size_brings_mixed_sizes_to_one_square(tmp_path, monkeypatch):
    """Mixed sizes fail without image_size (naming a file) and load with it: shorter side to S, centre crop. A
    landscape image whose left third is black, middle white and right third black keeps a white centre and
    black borders after the crop only where the crop reaches them; solid images keep their value."""
    root = make_folder(tmp_path / "data", size=(6, 5))
    Image.new("RGB", (40, 10), (5, 5, 5)).save(root / "train" / "a" / "wide.png")  # 4:1 landscape
    Image.new("L", (9, 30), 77).save(root / "test" / "b" / "tall.png")  # grey portrait
    stripes = np.zeros((16, 48, 3), np.uint8)
    stripes[:, 16:32] = 255  # black | white | black, each 16 px wide
    Image.fromarray(stripes).save(root / "train" / "c" / "stripes.png")
    with pytest.raises(NclabError, match="is .* but .*resize all images to one size"):
        load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "cache")
    d = load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "cache", image_size=8)
    assert d.train.x.shape == (11, 3, 8, 8) and d.test.x.shape == (7, 3, 8, 8)
    # solid images (the original 6x5 ones, the wide one, the grey one) stay solid with their value
    names = sorted(p.name for p in (root / "train" / "a").iterdir())
    wide = d.train.x[names.index("wide.png")]  # class a is first; files sorted by name within it
    assert bool((wide == 5).all())
    tall = d.test.x[d.test.y.tolist().index(1)
                    + sorted(p.name for p in (root / "test" / "b").iterdir()).index("tall.png")]
    assert bool((tall == 77).all())
    # stripes 16x48 -> 8x24 -> centre 8x8 = the middle third: the white band
    c_names = sorted(p.name for p in (root / "train" / "c").iterdir())
    st = d.train.x[d.train.y.tolist().index(2) + c_names.index("stripes.png")]
    # (a squash to 8x8 or a left crop would show black; bicubic softens only the two boundary columns)
    assert bool((st[:, :, 1:7] == 255).all()) and int(st.min()) > 200
    # each size is its own cache entry; the same size again is a hit
    misses = cache_mod.STATS["misses"]
    load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "cache", image_size=8)
    assert cache_mod.STATS["misses"] == misses
    assert load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "cache",
                        image_size=12).train.x.shape[2:] == (12, 12)
    assert cache_mod.STATS["misses"] == misses + 1
    with pytest.raises(NclabError, match="imagefolder sources only"):
        load_dataset("digits", image_size=8)
    # the config key reaches the loader: a run on the mixed-size folder trains on 8x8 inputs
    from nclab.train import Trainer, load_config

    monkeypatch.setenv("NCLAB_CACHE", str(tmp_path / "cache"))
    cfg = load_config("tiny", [f"data.source=imagefolder:{root}", "data.image_size=8", "optim.epochs=1"])
    tr = Trainer(cfg, tmp_path / "run")
    assert tr.dataset.input_shape == (3, 8, 8) and torch.equal(tr.dataset.train.x, d.train.x)
    with pytest.raises(NclabError, match="positive integer"):
        load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "cache", image_size=0)


def test_imagefolder_empty_class_folder(tmp_path):
    root = make_folder(tmp_path / "data")
    (root / "test" / "d").mkdir()
    (root / "train" / "d").mkdir()
    (root / "train" / "d" / "notes.txt").write_text("not an image")
    with pytest.raises(NclabError, match="class folder test/d .* holds no .png/.jpg images"):
        load_dataset(f"imagefolder:{root}")
    arch = tmp_path / "x.tar"
    with tarfile.open(arch, "w") as tf:
        tf.add(root, arcname="x")
    with pytest.raises(NclabError, match=f"class folder x/test/d in {arch} holds no"):
        load_dataset(f"imagefolder:{arch}")


def test_imagefolder_unreadable_image_named(tmp_path):
    root = make_folder(tmp_path / "data")
    cache = tmp_path / "cache"
    bad = root / "train" / "b" / "001.png"
    bad.write_bytes(b"\x89PNG\r\n garbage")
    with pytest.raises(NclabError, match=f"cannot decode image {bad}"):
        load_dataset(f"imagefolder:{root}", cache_dir=cache)
    arch = tmp_path / "x.tar.gz"
    with tarfile.open(arch, "w:gz") as tf:
        tf.add(root, arcname="x")
    with pytest.raises(NclabError, match=f"cannot decode image {arch}:x/train/b/001.png"):
        load_dataset(f"imagefolder:{arch}", cache_dir=cache)
    assert not (cache / "datasets").exists() or not list((cache / "datasets").iterdir())


def test_imagefolder_inconsistent_inputs(tmp_path):
    root = make_folder(tmp_path / "data")
    Image.new("RGB", (7, 5)).save(root / "train" / "c" / "big.png")
    with pytest.raises(NclabError, match="big.png is 7x5 but .* is 6x5"):
        load_dataset(f"imagefolder:{root}")
    root2 = make_folder(tmp_path / "d2")
    (root2 / "train" / "zz").mkdir()
    Image.new("RGB", (6, 5)).save(root2 / "train" / "zz" / "1.png")
    with pytest.raises(NclabError, match="class 'zz' has no test/ folder"):
        load_dataset(f"imagefolder:{root2}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NclabError, match="no train/<class>/"):
        load_dataset(f"imagefolder:{tmp_path / 'empty'}")
    with pytest.raises(NclabError, match="not found"):
        load_dataset(f"imagefolder:{tmp_path / 'nope'}")
    (tmp_path / "f.zip").write_bytes(b"PK")
    with pytest.raises(NclabError, match="not a .tar/.tar.gz archive"):
        load_dataset(f"imagefolder:{tmp_path / 'f.zip'}")


@pytest.mark.parametrize("bad", ["../x/train/a/1.png", "/abs/train/a/1.png", "imgs/train/../../x.png"])
def test_imagefolder_archive_unsafe_members(tmp_path, bad):
    root = make_folder(tmp_path / "data")
    arch = tmp_path / "x.tar"
    with tarfile.open(arch, "w") as tf:
        tf.add(root, arcname="imgs")
        add_bytes(tf, bad, (root / "train" / "a" / "000.png").read_bytes())
    with pytest.raises(NclabError, match=f"archive {arch} has an unsafe member path '{bad}'"):
        load_dataset(f"imagefolder:{arch}")
    assert not (tmp_path / "x").exists() and not Path("/abs").exists()


def test_imagefolder_truncated_archive(tmp_path):
    root = make_folder(tmp_path / "data")
    arch = tmp_path / "x.tar.gz"
    with tarfile.open(arch, "w:gz") as tf:
        tf.add(root, arcname="imgs")
    arch.write_bytes(arch.read_bytes()[:-40])
    with pytest.raises(NclabError, match=f"archive {arch} is corrupt or truncated"):
        load_dataset(f"imagefolder:{arch}")
    arch.write_bytes(b"\x1f\x8b" + b"\x00" * 50)
    with pytest.raises(NclabError, match="corrupt or truncated"):
        load_dataset(f"imagefolder:{arch}")


@pytest.mark.parametrize("suffix, mode", [(".tar", "w"), (".tar.gz", "w:gz")])
def test_imagefolder_archive_cut_anywhere_is_an_error_not_fewer_images(tmp_path, suffix, mode):
    # tarfile ends quietly at a cut header and its gzip reader skips the trailer check: a cut archive used to
    # load with images missing (and be cached that way)
    root = make_folder(tmp_path / "data")
    arch = tmp_path / f"x{suffix}"
    with tarfile.open(arch, mode) as tf:
        tf.add(root, arcname="imgs")
    full = load_dataset(f"imagefolder:{arch}", cache_dir=tmp_path / "c")
    data = arch.read_bytes()
    # the end of the last member's data: after it a .tar holds only end-of-archive zero blocks
    with tarfile.open(arch) as tf:
        last = max(m.offset_data + m.size for m in tf.getmembers())
    cut_file = tmp_path / f"cut{suffix}"
    stop = len(data) if suffix == ".tar.gz" else last + 512
    for cut in range(50, stop, max(1, stop // 40)):
        cut_file.write_bytes(data[:cut])
        try:
            got = load_dataset(f"imagefolder:{cut_file}", cache_dir=tmp_path / f"c{cut}")
        except NclabError as e:
            assert "truncated" in str(e) or "corrupt" in str(e) or "no train" in str(e) or "holds no" in str(e), e
            continue
        raise AssertionError(f"cut at {cut} of {len(data)} bytes loaded {len(got.train)}/{len(got.test)} images "
                             f"(full: {len(full.train)}/{len(full.test)})")


def test_imagefolder_archive_links_to_images_are_refused(tmp_path):
    root = make_folder(tmp_path / "data")
    os.link(root / "train" / "a" / "000.png", root / "train" / "a" / "copy.png")  # tar stores it as a link member
    arch = tmp_path / "x.tar"
    with tarfile.open(arch, "w") as tf:
        tf.add(root, arcname="imgs")
    with tarfile.open(arch) as tf:
        assert any(m.islnk() for m in tf.getmembers())
    with pytest.raises(NclabError, match=r"stores 1 images as links \(e\.g\. imgs/train/a/copy\.png\)"):
        load_dataset(f"imagefolder:{arch}")


def test_archive_member_order_does_not_matter(tmp_path):
    root = make_folder(tmp_path / "data")
    files = sorted(p for p in root.rglob("*.png"))
    rng = np.random.default_rng(0)
    arch = tmp_path / "shuffled.tar"
    with tarfile.open(arch, "w") as tf:
        for i in rng.permutation(len(files)):
            tf.add(files[i], arcname=f"r/{files[i].relative_to(root)}")
    check_folder_dataset(load_dataset(f"imagefolder:{arch}"))


def test_pool_decoding_equals_inline(tmp_path, monkeypatch):
    import nclab.data.decode as dec

    root = make_folder(tmp_path / "data", classes=tuple("abcdefgh"), n=(6, 1))
    inline = load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "c1")
    if dec.num_workers() < 2:
        pytest.skip("no process pool on this platform/CPU count")
    monkeypatch.setattr(dec, "CHUNK", 4)
    monkeypatch.setattr(dec, "POOL_MIN_IMAGES", 8)
    pools = []
    real_flush = dec.Decoder._flush

    def spy(self, final):
        real_flush(self, final)
        pools.append(self._pool is not None)

    monkeypatch.setattr(dec.Decoder, "_flush", spy)
    pooled = load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "c2")
    assert any(pools) and not all(pools)  # the first chunks inline, the rest in the pool
    assert torch.equal(inline.train.x, pooled.train.x) and torch.equal(inline.test.y, pooled.test.y)
    check_folder_dataset(pooled, classes=tuple("abcdefgh"), n=(6, 1))


@pytest.mark.parametrize("damage", ["empty_npy", "meta_not_a_mapping", "meta_without_names", "lengths_differ"])
def test_other_damaged_cache_entries_are_rebuilt(tmp_path, capsys, damage):
    root = make_folder(tmp_path / "data")
    cache = tmp_path / "cache"
    a = load_dataset(f"imagefolder:{root}", cache_dir=cache)
    (entry,) = (cache / "datasets").iterdir()
    if damage == "empty_npy":
        (entry / "test_x.npy").write_bytes(b"")
    elif damage == "meta_not_a_mapping":
        (entry / "meta.json").write_text("[1]")
    elif damage == "meta_without_names":
        (entry / "meta.json").write_text('{"class_names": 5}')
    else:
        np.save(entry / "train_y.npy", np.zeros(2, np.int64))
    b = load_dataset(f"imagefolder:{root}", cache_dir=cache)
    assert "unreadable" in capsys.readouterr().err
    assert torch.equal(a.train.x, b.train.x) and b.class_names == a.class_names and torch.equal(a.train.y, b.train.y)


def test_sixteen_bit_grey_png_is_scaled_not_clipped(tmp_path):
    for s in ("train", "test"):
        for c in ("a", "b"):
            (tmp_path / "d" / s / c).mkdir(parents=True)
            v = np.full((4, 5), 3000 if c == "a" else 65535, dtype=np.uint16)
            Image.fromarray(v).save(tmp_path / "d" / s / c / "0.png")  # 16-bit greyscale PNG
    d = load_dataset(f"imagefolder:{tmp_path / 'd'}")
    assert d.train.x.shape == (2, 1, 4, 5)
    assert d.train.x[:, 0, 0, 0].tolist() == [round(3000 / 257), 255]  # convert("L") gave 255 for both


def test_data_specs_with_negative_seeds_or_impossible_values_are_one_line_errors(tmp_path):
    from nclab.data.builders import split_labels

    for spec, kw, match in [
        ("digits", {"hierarchy": "random:-1"}, "SEED must be >= 0"),
        ("digits", {"hierarchy": "split:2:-1"}, "SEED must be >= 0"),
        ("digits", {"hierarchy": "split:5000"}, "between 1 and 1000"),
        ("synthetic:seed=-1", {}, "seed must be >= 0"),
        ("synthetic:n_test=0", {}, "n_test must be >= 1"),
        ("synthetic:noise=inf", {}, "noise must be a finite number"),
    ]:
        with pytest.raises(NclabError, match=match):
            ds = load_dataset(spec)
            build_hierarchy(kw["hierarchy"], ds.class_names)
    h = build_hierarchy("split:200", [str(i) for i in range(10)])
    with pytest.raises(NclabError, match="has 5 samples, fewer than its 200 pseudo classes"):
        split_labels(np.repeat(np.arange(10), 5), h)
    with pytest.raises(NclabError, match="seed must be >= 0"):
        subsample(load_dataset("digits"), ratio=10, seed=-1)
    with pytest.raises(NclabError, match="whole numbers"):
        subsample(load_dataset("digits"), counts=[1.9] * 10)
    (tmp_path / "h.json").write_text('{"fine_to_coarse": [0, 0, 1, 1, 2, 2, 3, 3, 4, 4], "coarse_names": 5}')
    with pytest.raises(NclabError, match="coarse_names must be a list"):
        build_hierarchy(f"file:{tmp_path / 'h.json'}", [str(i) for i in range(10)])
    (tmp_path / "h.yaml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(NclabError, match="not UTF-8"):
        build_hierarchy(f"file:{tmp_path / 'h.yaml'}", [str(i) for i in range(10)])


def test_idx_splits_must_share_an_image_size(tmp_path):
    write_idx(tmp_path / "m", False)
    (tmp_path / "m" / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((3, 20, 20), np.int64)))
    with pytest.raises(NclabError, match=r"train images are \(28, 28\) but test images \(20, 20\)"):
        load_dataset(f"mnist:{tmp_path / 'm'}")


def test_symlinked_class_folder_is_read(tmp_path):
    root = make_folder(tmp_path / "data")
    (tmp_path / "elsewhere").mkdir()
    (root / "train" / "c").rename(tmp_path / "elsewhere" / "c")
    (root / "train" / "c").symlink_to(tmp_path / "elsewhere" / "c", target_is_directory=True)
    check_folder_dataset(load_dataset(f"imagefolder:{root}"))


@pytest.mark.parametrize("damage", ["zero_data", "flip_label_byte"])
def test_cache_entry_damaged_after_writing_is_rebuilt(tmp_path, capsys, damage):
    # the .npy header stays intact, so np.load reads the damaged arrays without complaint: only the
    # checksums recorded at write time can tell (a zero-filled block is what a power cut can leave)
    root = make_folder(tmp_path / "data")
    cache = tmp_path / "cache"
    a = load_dataset(f"imagefolder:{root}", cache_dir=cache)
    (entry,) = (cache / "datasets").iterdir()
    name = "train_x.npy" if damage == "zero_data" else "test_y.npy"
    raw = bytearray((entry / name).read_bytes())
    header = len(raw) - np.load(entry / name).nbytes
    if damage == "zero_data":
        raw[header:] = bytes(len(raw) - header)
    else:
        raw[header] ^= 1  # the first label 0 <-> 1: still a valid class index
    (entry / name).write_bytes(bytes(raw))
    misses = cache_mod.STATS["misses"]
    b = load_dataset(f"imagefolder:{root}", cache_dir=cache)
    assert cache_mod.STATS["misses"] == misses + 1
    assert "does not match its checksum" in capsys.readouterr().err
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    assert b.class_names == a.class_names


def test_cache_entry_of_the_old_format_is_replaced(tmp_path):
    root = make_folder(tmp_path / "data")
    cache = tmp_path / "cache"
    load_dataset(f"imagefolder:{root}", cache_dir=cache)
    (entry,) = (cache / "datasets").iterdir()
    assert entry.name.endswith(f"-v{cache_mod.FORMAT}")
    old = entry.with_name(entry.name[: -len(str(cache_mod.FORMAT))] + "1")
    entry.rename(old)  # as an nclab of format 1 left it (its meta.json lacks checksums either way)
    misses = cache_mod.STATS["misses"]
    load_dataset(f"imagefolder:{root}", cache_dir=cache)
    assert cache_mod.STATS["misses"] == misses + 1
    assert [p.name for p in (cache / "datasets").iterdir()] == [entry.name]


def test_nclab_data_names_the_data_folder(tmp_path, monkeypatch):
    from nclab.data.load import data_root, expand_data_path

    make_folder(tmp_path / "datasets" / "toy")
    monkeypatch.setenv("NCLAB_DATA", str(tmp_path / "datasets"))
    direct = load_dataset(f"imagefolder:{tmp_path / 'datasets' / 'toy'}", cache_dir=tmp_path / "c")
    for spec in ("imagefolder:$NCLAB_DATA/toy", "imagefolder:${NCLAB_DATA}/toy"):
        ds = load_dataset(spec, cache_dir=tmp_path / "c")
        assert torch.equal(ds.train.x, direct.train.x) and ds.class_names == direct.class_names
    assert expand_data_path("$NCLAB_DATA") == str(tmp_path / "datasets")
    assert expand_data_path("rel/$NCLAB_DATA") == "rel/$NCLAB_DATA"  # only a leading variable is expanded
    monkeypatch.delenv("NCLAB_DATA")
    assert data_root() == Path("data") and expand_data_path("$NCLAB_DATA/x") == str(Path("data") / "x")


def test_folder_checksum_sees_a_same_size_rewrite(tmp_path):
    import os
    from nclab.data.cache import listing_checksum
    (tmp_path / "a.bin").write_bytes(b"1234")
    before = listing_checksum(tmp_path, ["a.bin"])
    (tmp_path / "a.bin").write_bytes(b"5678")  # same size: only the mtime tells
    st = (tmp_path / "a.bin").stat()
    os.utime(tmp_path / "a.bin", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert listing_checksum(tmp_path, ["a.bin"]) != before
