"""Messages that name the right thing (the file being written, an overflow, the last finite checkpoint, no
torch warning before an ``error:`` line) and clean-up after killed processes (cache temp folders, decoder
workers)."""

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest
import torch

from nclab.cli import main
from nclab.data import cache as cache_mod
from nclab.rundir import RunDir
from nclab.train import Callback, Trainer
from nclab.utils import io as io_mod
from nclab.utils.errors import NclabError

SOURCE = "synthetic:n_train=20,n_test=10"


def _cli(*args):
    env = dict(os.environ, NCLAB_QUIET="1")
    return subprocess.run([sys.executable, "-m", "nclab.cli", *args], env=env, capture_output=True, text=True)


# ---- I/O errors name the final path ----------------------------------------------------------------------
def test_disk_full_during_an_atomic_write_names_the_final_path(tmp_path, monkeypatch, capsys):
    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")  # what fsync/write raise: no file name

    target = tmp_path / "r" / "status.json"
    monkeypatch.setattr(io_mod.os, "fsync", full)
    with pytest.raises(OSError) as e:
        io_mod.atomic_write_json(target, {"a": 1})
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(target)
    assert not target.exists() and list(target.parent.iterdir()) == []  # the temp file is gone too


def _mount_tmpfs(path, size, ro=False):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(exist_ok=True)
    opts = f"size={size}" + (",ro" if ro else "")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")


def _umount(path):
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_full_disk_names_the_file_not_an_empty_path(tmp_path):
    mnt = tmp_path / "mnt"
    _mount_tmpfs(mnt, "48k")
    try:
        p = _cli("train", "--config", "tiny", "--set", f"data.source={SOURCE}", "--run-dir", str(mnt / "r"),
                 "--epochs", "50", "--quiet")
    finally:
        _umount(mnt)
    assert p.returncode == 2, p.stderr
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error")]
    assert len(errors) == 1 and p.stderr.rstrip().splitlines()[-1] == errors[0], p.stderr
    assert errors[0].startswith(f"error: {mnt / 'r'}/") and "No space left on device" in errors[0], errors[0]
    named = errors[0][len("error: "):].split(":")[0]
    assert not os.path.basename(named).startswith("."), named  # the final file, not the hidden temp file


def _small_run(tmp_path):
    rd = RunDir(tmp_path / "r")
    rd.path.mkdir()
    rd.write_config({"name": "r"})
    rd.write_status("complete", "", epoch=2)
    rd.metrics_path.write_text('{"epoch": 1, "train_loss": 1.0}\n{"epoch": 2, "train_loss": 0.5}\n')
    return rd


def test_read_only_report_folder_names_report_html(tmp_path):
    rd = _small_run(tmp_path)
    if os.geteuid() == 0:  # root writes through permission bits: make the folder a read-only mount instead
        src = tmp_path / "src"
        rd.path.rename(src)
        rd.path.mkdir()
        if subprocess.run(["mount", "--bind", "-o", "ro", str(src), str(rd.path)], capture_output=True).returncode:
            pytest.skip("cannot make a read-only bind mount here")
        subprocess.run(["mount", "-o", "remount,bind,ro", str(rd.path)], capture_output=True)
    else:
        rd.path.chmod(0o555)
    try:
        p = _cli("report", str(rd.path))
    finally:
        if os.geteuid() == 0:
            _umount(rd.path)
        else:
            rd.path.chmod(0o755)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {rd.path / 'report.html'}: "), p.stderr
    assert ".tmp" not in lines[0]


# ---- overflow is not NaN --------------------------------------------------------------------------------
def test_huge_finite_features_are_an_overflow_not_nan():
    from nclab.collapse.stats import ClassStats
    from nclab.finegrain.recovery import FineLabelRecovery

    y = torch.tensor([0, 1, 0, 1])
    huge = torch.full((4, 3), 1e308, dtype=torch.float64)  # finite; their class sums are not
    with pytest.raises(NclabError, match=r"features are finite but too large: summing them overflows "
                                         r"\(largest \|value\| 1e\+308\)"):
        ClassStats(2).update(huge, y)
    nan = huge.clone()
    nan[0, 0] = float("nan")
    with pytest.raises(NclabError, match="features contain NaN or inf"):
        ClassStats(2).update(nan, y)
    x = np.full((4, 3), 1e39)  # beyond float32, which the recovery computes in
    with pytest.raises(NclabError, match="converting them to float32 overflows"):
        FineLabelRecovery._check(x, {})
    from nclab.finegrain.kmeans import kmeans

    with pytest.raises(NclabError, match="overflows"):
        kmeans(x, 2)


# ---- a NaN stop keeps and names the last finite checkpoint -----------------------------------------------
class _OverflowMomentum(Callback):
    """The optimiser state overflows at the end of epoch ``at`` while the weights stay finite."""

    def __init__(self, at):
        self.at = at

    def on_epoch_end(self, trainer, epoch, logs):
        if epoch == self.at:
            for st in trainer.optimizer.state.values():
                st["momentum_buffer"].fill_(float("inf"))


def test_nan_stop_never_checkpoints_a_poisoned_optimizer_state(tmp_path):
    run = tmp_path / "r"
    cfg = {"data": {"source": SOURCE}, "optim": {"epochs": 5, "momentum": 0.9},
           "train": {"device": "cpu", "checkpoint_every": 1, "threads": 1}}
    tr = Trainer(cfg, run, callbacks=[_OverflowMomentum(2)])
    with pytest.raises(NclabError, match=r"the optimiser state became non-finite at the end of epoch 2; "
                                         r"last good checkpoint: .*last\.pt \(epoch 1\)") as e:
        tr.fit()
    named = str(e.value).split("last good checkpoint: ")[1].split(" (epoch")[0]
    state = torch.load(named, weights_only=True)
    assert state["epoch"] == 1
    tensors = list(state["model"].values()) + [v for s in state["optimizer"]["state"].values() for v in s.values()
                                               if isinstance(v, torch.Tensor)]
    assert tensors and all(bool(torch.isfinite(t).all()) for t in tensors)
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "stopped_nan" and status["epoch"] == 1


# ---- torch warnings do not precede the error line ------------------------------------------------------
def test_a_legacy_pickle_checkpoint_gives_one_error_line_without_torch_warnings(tmp_path):
    run = tmp_path / "r"
    p = _cli("train", "--config", "tiny", "--set", f"data.source={SOURCE}", "--run-dir", str(run), "--epochs", "1",
             "--quiet")
    assert p.returncode == 0, p.stderr
    with open(run / "checkpoints" / "last.pt", "wb") as f:  # the old format, protocol 4: torch warns, then fails
        torch.save({"a": {1, 2}}, f, _use_new_zipfile_serialization=False, pickle_protocol=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning escaping torch_load would raise here instead
        with pytest.raises(Exception) as e:
            io_mod.torch_load(run / "checkpoints" / "last.pt")
        assert not isinstance(e.value, Warning)
    p = _cli("train", "--run-dir", str(run), "--resume", "--epochs", "2", "--quiet")
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: checkpoint ") and "Warning" not in p.stderr, p.stderr


# ---- clean-up after killed processes ---------------------------------------------------------------------
KILLED_BUILD = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from nclab.data import cache
    arrays = {k: np.zeros((64, 1024), np.float32) for k in cache.ARRAYS}
    real = os.fsync
    def die(fd):  # killed mid-write: after the first array is on disk, before the entry is renamed into place
        os.kill(os.getpid(), signal.SIGKILL)
    os.fsync = die
    cache.cached(sys.argv[1], "toy", "c" * 64, lambda: (arrays, {"class_names": []}))
""")


def test_a_killed_cache_builds_temp_folder_is_removed_by_the_next_build(tmp_path):
    script = tmp_path / "build.py"
    script.write_text(KILLED_BUILD)
    p = subprocess.run([sys.executable, str(script), str(tmp_path / "cache")], capture_output=True)
    assert p.returncode == -signal.SIGKILL
    parent = tmp_path / "cache" / "datasets"
    (left,) = parent.glob(".tmp-*")  # the killed build's leftover, minutes (not a day) old
    assert (left / "train_x.npy").exists()
    # another entry's temp folder, held by a live writer, must survive
    other = parent / ".tmp-other-entry-v2-abc"
    other.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, os, sys, time
        fd = os.open({str(other / ".building")!r}, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        print("held", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        arrays = {k: np.arange(6, dtype=np.float32).reshape(2, 3) for k in cache_mod.ARRAYS}
        got, _ = cache_mod.cached(tmp_path / "cache", "toy", "c" * 64, lambda: (arrays, {"class_names": []}))
        assert not left.exists()
        assert other.exists()
        entry = cache_mod.entry_dir(tmp_path / "cache", "toy", "c" * 64)
        assert sorted(p.name for p in entry.iterdir()) == sorted([f"{k}.npy" for k in cache_mod.ARRAYS] + ["meta.json"])
        again, _ = cache_mod.cached(tmp_path / "cache", "toy", "c" * 64, lambda: pytest.fail("rebuilt"))
        assert np.array_equal(again["train_x"], arrays["train_x"])
    finally:
        holder.kill()
        holder.wait()


DECODER = textwrap.dedent("""
    import io, sys, time
    import numpy as np
    from PIL import Image
    from nclab.data import decode
    decode.POOL_MIN_IMAGES = 1
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(buf, format="PNG")
    d = decode.Decoder(workers=2)
    d.__enter__()
    for _ in range(8 * decode.CHUNK + 1):  # seconds of work queued: the workers are busy when the parent dies
        d.add(buf.getvalue())
    time.sleep(0.3)
    print(" ".join(str(p.pid) for p in d._pool._pool), flush=True)
    time.sleep(60)
""")


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(sys.platform != "linux", reason="forked decoder workers are Linux only")
def test_decoder_workers_exit_with_a_killed_parent(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", DECODER], stdout=subprocess.PIPE, text=True)
    pids = [int(p) for p in parent.stdout.readline().split()]
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    t0 = time.time()
    while any(_alive(p) for p in pids) and time.time() - t0 < 5:
        time.sleep(0.02)
    assert not any(_alive(p) for p in pids)
    assert time.time() - t0 < 0.5  # the kernel's parent-death signal, not a poll of the parent
