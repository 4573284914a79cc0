"""One writer per run directory, with real processes: a second ``nclab train`` on a folder in use fails at once
naming the holder, a SIGKILLed holder leaves no stale lock, and readers (``report``) work during a run."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from nclab.runlock import LOCK_NAME, holder, holds_lock, run_lock
from nclab.utils.errors import NclabError

SOURCE = "synthetic:n_train=20,n_test=10"


def _nclab(*args, **kw):
    env = dict(os.environ, NCLAB_QUIET="1")
    return subprocess.Popen([sys.executable, "-m", "nclab.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def _train(run_dir, *extra):
    return _nclab("train", "--config", "tiny", "--set", f"data.source={SOURCE}", "--run-dir", str(run_dir),
                  "--quiet", *extra)


def _epochs(run_dir):
    p = run_dir / "metrics.jsonl"
    return [json.loads(ln)["epoch"] for ln in p.read_text().splitlines() if ln.strip()] if p.exists() else []


def _wait_for_epochs(run_dir, n, proc, timeout=120):
    t0 = time.time()
    while len(_epochs(run_dir)) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout, "the first run never got going"
        time.sleep(0.1)


def test_second_writer_fails_naming_the_holder_and_sigkill_frees_the_lock(tmp_path):
    run = tmp_path / "r"
    first = _train(run, "--epochs", "100000")
    try:
        _wait_for_epochs(run, 2, first)
        for extra in ((), ("--resume",), ("--force",)):
            t0 = time.time()
            second = _train(run, "--epochs", "3", *extra)
            out, err = second.communicate(timeout=120)
            assert second.returncode == 2, (extra, out, err)
            lines = [ln for ln in err.splitlines() if ln.strip()]
            assert len(lines) == 1 and lines[0].startswith("error: "), err
            assert f"pid {first.pid} " in lines[0] and socket.gethostname() in lines[0], err
            assert time.time() - t0 < 60  # no waiting for the holder
        # a reader needs no lock: the report of the running run is written while it trains
        rep = _nclab("report", str(run))
        out, err = rep.communicate(timeout=120)
        assert rep.returncode == 0, err
        assert (run / "report.html").is_file()
        assert first.poll() is None  # the first run was never disturbed ...
        ep = _epochs(run)
        assert ep == list(range(1, len(ep) + 1))  # ... and its metrics were never interleaved
        first.send_signal(signal.SIGKILL)
        assert first.wait() == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert (run / LOCK_NAME).exists()  # the killed holder could not remove its file: it must not matter
    done = max(_epochs(run))
    t0 = time.time()
    resumed = _train(run, "--resume", "--epochs", str(done + 1))
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert "in use" not in err
    assert time.time() - t0 < 60
    assert json.loads((run / "status.json").read_text())["status"] == "complete"
    assert _epochs(run) == list(range(1, done + 2))
    assert not (run / LOCK_NAME).exists()  # a clean exit removes the lock file


def test_lock_is_reentrant_in_one_process_and_exclusive_across_processes(tmp_path):
    run = tmp_path / "r"
    probe = ("import sys\nfrom nclab.runlock import run_lock\n"
             "try:\n    with run_lock(sys.argv[1]):\n        print('got')\n"
             "except Exception as e:\n    print(type(e).__name__, e)\n")
    with run_lock(run) as lock:
        with run_lock(run):  # a command's lock, then Trainer.fit's: the same holder
            assert holds_lock(run)
        assert holds_lock(run)  # the inner release keeps the outer hold
        assert holder(run)["pid"] == os.getpid()
        out = subprocess.run([sys.executable, "-c", probe, str(run)], capture_output=True, text=True).stdout
        assert out.startswith("NclabError") and f"pid {os.getpid()}" in out
        assert lock.exists()
    assert not holds_lock(run)
    assert not run.exists()  # the folder existed only for the lock
    out = subprocess.run([sys.executable, "-c", probe, str(run)], capture_output=True, text=True).stdout
    assert out.strip() == "got"


def test_forked_child_does_not_hold_the_lock(tmp_path):
    """A worker forked while the lock is held (a decoder process) must not keep the run locked once the
    holder exits."""
    run = tmp_path / "r"
    run.mkdir()
    r, w = os.pipe()
    with run_lock(run):
        pid = os.fork()
        if pid == 0:  # the child outlives the parent's hold
            os.close(w)
            os.read(r, 1)
            os._exit(0)
    try:
        with run_lock(run):  # the parent released: nobody holds it although the child still runs
            assert holds_lock(run)
    finally:
        os.write(w, b"x")
        os.waitpid(pid, 0)


def test_trainer_fit_takes_the_lock(tmp_path):
    from nclab.train import Trainer

    run = tmp_path / "r"
    run.mkdir()
    probe = ("import sys, time\nfrom nclab.runlock import run_lock\nwith run_lock(sys.argv[1]):\n"
             "    print('held', flush=True)\n    time.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", probe, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        cfg = {"data": {"source": SOURCE}, "optim": {"epochs": 1}, "train": {"device": "cpu"}}
        with pytest.raises(NclabError, match=f"pid {p.pid} on host"):
            Trainer(cfg, run).fit()
        assert not (run / "metrics.jsonl").exists()  # nothing written by the refused writer
    finally:
        p.kill()
        p.wait()
