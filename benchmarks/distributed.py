"""Data-parallel training throughput: images/s of ``nclab train`` under torchrun with 1, 2, ... ranks.

Each rank count runs the same config and global batch (``torchrun --standalone --nproc_per_node=N -m nclab
train``); the throughput is the trainer's own ``images_per_s`` (global training images / training seconds of
the epoch, measured on rank 0), the median over the epochs after the first (warm-up). Prints one row per rank
count and the speed-up over one rank.

    python benchmarks/distributed.py                       # CPU, gloo: 1 vs 2 ranks, one thread each
    python benchmarks/distributed.py --device cuda --nprocs 1,2,4,8 --config paper_resnet18 --epochs 3

On CPU the default workload is an MLP (256 -> 1024 -> 1024 -> 20) on a synthetic mixture of 10,000 vectors,
batch 256, one torch thread per rank: on a 2-core machine two ranks have at most twice the cores of one and pay
for a gradient all-reduce per step, so expect little gain; the point is the mechanism. On a multi-GPU machine
``--device cuda`` (nccl) with a shipped or own config gives the scaling there.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

CPU_CONFIG = {
    "name": "bench-dist", "seed": 0,
    "data": {"source": "synthetic:coarse=4,fine_per_coarse=5,dim=256,n_train=500,n_test=50,seed=0"},
    "model": {"name": "mlp", "width": 1024, "depth": 2},
    "optim": {"lr": 0.02, "batch_size": 256, "epochs": 4},
    "schedule": {"name": "cosine"},
    "train": {"device": "cpu", "bf16": False, "channels_last": False, "threads": 1, "eval_every": 100,
              "checkpoint_every": 100},
}


def run(nproc: int, config: str, overrides: list[str], workdir: Path, timeout_s: float) -> dict:
    """One torchrun training run; returns its per-epoch throughput."""
    torchrun = Path(sys.executable).with_name("torchrun")
    run_dir = workdir / f"ranks{nproc}"
    cmd = [str(torchrun), "--standalone", f"--nproc_per_node={nproc}", "-m", "nclab", "train", "--config", config,
           "--run-dir", str(run_dir), "--force", "--quiet"]
    for o in overrides:
        cmd += ["--set", o]
    env = dict(os.environ, GLOO_SOCKET_IFNAME=os.environ.get("GLOO_SOCKET_IFNAME", "lo"))
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    if p.returncode != 0:
        raise SystemExit(f"torchrun with {nproc} rank(s) failed (exit {p.returncode}):\n{p.stderr[-2000:]}")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    ips = [r["images_per_s"] for r in rows[1:]] or [rows[0]["images_per_s"]]
    return {"ranks": nproc, "images_per_s": statistics.median(ips), "epochs_timed": len(ips),
            "train_time_s": sum(r["train_time_s"] for r in rows[1:]) or rows[0]["train_time_s"]}


def main() -> int:
    from provenance import header

    print(header())
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nprocs", default="1,2", help="comma list of rank counts (default 1,2)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--config", default=None, help="config name or YAML (default: the CPU MLP workload above)")
    ap.add_argument("--epochs", type=int, default=None, help="override optim.epochs (>= 2: the first is warm-up)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per run before giving up")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = ap.parse_args()
    nprocs = [int(n) for n in args.nprocs.split(",") if n.strip()]
    overrides = [f"train.device={args.device}", *args.overrides]
    if args.epochs is not None:
        overrides.append(f"optim.epochs={args.epochs}")
    with tempfile.TemporaryDirectory(prefix="nclab-bench-dist-") as tmp:
        work = Path(tmp)
        config = args.config
        if config is None:
            config = str(work / "cpu.yaml")
            Path(config).write_text(yaml.safe_dump(CPU_CONFIG))
        rows = [run(n, config, overrides, work, args.timeout) for n in nprocs]
    base = rows[0]["images_per_s"]
    for r in rows:
        r["speedup"] = r["images_per_s"] / base
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"device={args.device} config={args.config or 'cpu-mlp (built in)'} cores={os.cpu_count()}")
    print(f"{'ranks':>5} {'images/s':>12} {'speed-up':>9} {'epochs timed':>13}")
    for r in rows:
        print(f"{r['ranks']:>5} {r['images_per_s']:>12.0f} {r['speedup']:>9.2f} {r['epochs_timed']:>13}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
