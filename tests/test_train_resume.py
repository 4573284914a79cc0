"""Crash safety: a training subprocess killed with SIGKILL and resumed ends bit-identical to an uninterrupted run.

Exercises the full image path: fastnet, bf16 autocast, channels_last, random crop + flip, nesterov SGD with
a one-cycle schedule, the stem bias frozen after epoch 3, checkpoints every 2 epochs (so the resumed run
recomputes epochs after the checkpoint).
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from nclab.train.trainer import TIMING_KEYS
from nclab.utils.io import torch_load

SCRIPT = textwrap.dedent("""
    import sys, torch
    from nclab.data.types import Dataset, Split
    from nclab.train import Trainer
    g = torch.Generator().manual_seed(0)
    def split(n):
        y = torch.arange(n) % 4
        x = torch.randint(0, 200, (n, 3, 16, 16), generator=g).to(torch.uint8)
        x[:, y % 3, :8] += 50  # a learnable class signal
        return Split(x, y)
    ds = Dataset("toy", split(512), split(64), ["a", "b", "c", "d"], source="toy")
    cfg = {"name": "k", "seed": 5, "model": {"name": "fastnet", "widths": [8, 16, 16]},
           "data": {"augment": {"crop": 2, "flip": True}},
           "optim": {"lr": 0.2, "momentum": 0.9, "nesterov": True, "batch_size": 32, "epochs": 7, "bias_lr_scale": 4.0,
                     "stem_bias_epochs": 3, "lookahead_every": 3},
           "schedule": {"name": "onecycle", "warmup": 0.2},
           "loss": {"label_smoothing": 0.1},
           "train": {"device": "cpu", "bf16": True, "channels_last": True, "threads": 1, "checkpoint_every": 2}}
    Trainer(cfg, sys.argv[1], dataset=ds).fit(resume=sys.argv[2] == "1")
""")


def _run(script, run_dir, resume, **kw):
    env = dict(os.environ, NCLAB_QUIET="1")
    return subprocess.Popen([sys.executable, str(script), str(run_dir), "1" if resume else "0"], env=env, **kw)


def _metrics(run_dir):
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def _status(run_dir):
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


@pytest.mark.slow
def test_sigkill_and_resume_is_bit_identical(tmp_path):
    script = tmp_path / "train_script.py"
    script.write_text(SCRIPT)
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    ref_proc = _run(script, ref, False)
    proc = _run(script, killed, False)
    deadline = time.time() + 120
    while _status(killed).get("epoch", 0) < 2:  # status is written after the epoch-2 checkpoint
        assert proc.poll() is None, "training exited before it could be killed"
        assert time.time() < deadline, "no epoch-2 checkpoint within 120 s"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)  # somewhere in epoch 3 (or later on a fast machine)
    assert proc.wait() == -signal.SIGKILL
    assert _status(killed)["status"] == "running"  # a SIGKILL leaves no chance to write anything
    assert torch_load(killed / "checkpoints" / "last.pt")["epoch"] in (2, 4, 6)
    assert _run(script, killed, True).wait(timeout=180) == 0
    assert ref_proc.wait(timeout=180) == 0

    a = torch_load(ref / "checkpoints" / "last.pt")
    b = torch_load(killed / "checkpoints" / "last.pt")
    assert a["epoch"] == b["epoch"] == 7
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    ma, mb = _metrics(ref), _metrics(killed)
    assert [r["epoch"] for r in mb] == list(range(1, 8))
    assert ma == mb  # every non-timing value, bit for bit (JSON floats round-trip exactly)
    assert _status(killed)["status"] == "complete" and _status(killed)["resumed"] is True
    assert ma[-1]["train_loss"] < ma[0]["train_loss"]  # it did learn something
