"""Training throughput: nclab's pipeline vs a conventional PyTorch loop, same run, same models.

nclab: the whole uint8 set on the device (BatchIterator), batch-wise crop+flip on uint8, bf16 autocast,
channels_last (per the model defaults chosen by measurement), nesterov SGD.
Conventional: ``torch.utils.data.DataLoader`` over a map-style dataset of PIL images with per-sample
transforms (random crop with 4-pixel padding + horizontal flip on PIL, to tensor, normalise), fp32, NCHW.
Both train the same architecture on the same CIFAR-shaped random data (32x32x3, 10 classes) for
``--rounds`` interleaved rounds of ``--chunk`` steps each (after ``--warmup`` untimed steps); prints the
median images/s of each pipeline and their ratio.

Then a roofline line per model: the arithmetic of one training image (forward + backward, counted by
``torch.utils.flop_counter``; the same for both pipelines), the GFLOP/s each pipeline reached, and the fastest
dense bf16 / fp32 kernels measured on this device in the same run (the best of a 1024² matmul and a 256→256 3x3
convolution). ``ceiling`` = bf16 peak / the conventional loop's GFLOP/s: the largest ratio any pipeline could
show at this arithmetic, even running every FLOP at the bf16 peak.

    python benchmarks/train_throughput.py                 # CPU, resnet18 + fastnet
    python benchmarks/train_throughput.py --device cuda   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import random
import time

import numpy as np
import torch
from PIL import Image

from nclab.data.augment import Augment
from nclab.data.batches import BatchIterator
from nclab.models import build_model

MEAN, STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]
# nclab defaults per model, chosen by measurement on the 2-core CPU (docs/training.md)
NCLAB_SETTINGS = {"resnet18": {"bf16": True, "channels_last": True}, "fastnet": {"bf16": True, "channels_last": True}}


class PILDataset(torch.utils.data.Dataset):
    """The textbook pipeline: PIL image -> RandomCrop(32, padding=4) -> RandomHorizontalFlip -> tensor -> normalise.

    Zero padding like torchvision's RandomCrop default (nclab pads by reflection; the same cost)."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.images = [Image.fromarray(im.transpose(1, 2, 0)) for im in x]
        self.y = y
        self.mean = torch.tensor(MEAN).view(3, 1, 1)
        self.std = torch.tensor(STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        im = self.images[i]
        padded = Image.new(im.mode, (40, 40))
        padded.paste(im, (4, 4))
        dx, dy = random.randint(0, 8), random.randint(0, 8)
        im = padded.crop((dx, dy, dx + 32, dy + 32))
        if random.random() < 0.5:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        t = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255)
        return (t - self.mean) / self.std, int(self.y[i])


class _Runner:
    """A model + optimiser + batch stream; ``run(k)`` trains k steps and returns images/s."""

    def __init__(self, model, batches, device, bf16: bool):
        self.model, self.batches, self.device, self.bf16 = model.train(), batches, device, bf16
        self.opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9,
                                   nesterov=True)

    def run(self, k: int) -> float:
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize()
        t0, seen = time.perf_counter(), 0
        for _ in range(k):
            x, y = next(self.batches)
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                z = self.model(x)
            loss = torch.nn.functional.cross_entropy(z.float(), y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            seen += len(y)
        if cuda:
            torch.cuda.synchronize()
        return seen / (time.perf_counter() - t0)


def flops_per_image(name: str) -> float:
    """FLOPs of one training step per image (forward + backward) of ``name`` on 32x32x3 inputs."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(name, 10, (3, 32, 32)).train()
    x = torch.randn(8, 3, 32, 32)
    counter = FlopCounterMode(display=False)
    with counter:
        torch.nn.functional.cross_entropy(model(x), torch.zeros(8, dtype=torch.int64)).backward()
    return counter.get_total_flops() / 8


def dense_peak(device: torch.device, bf16: bool) -> float:
    """GFLOP/s of the fastest of two large dense kernels (a matmul, a channels_last 3x3 convolution), best of 5."""
    dt = torch.bfloat16 if bf16 else torch.float32
    n = 4096 if device.type == "cuda" else 1024
    a, b = torch.randn(n, n, device=device, dtype=dt), torch.randn(n, n, device=device, dtype=dt)
    bs = 256 if device.type == "cuda" else 64
    x = torch.randn(bs, 256, 16, 16, device=device).to(memory_format=torch.channels_last)
    conv = torch.nn.Conv2d(256, 256, 3, padding=1, bias=False).to(device, memory_format=torch.channels_last)
    cases = [(lambda: a @ b, 2 * n**3), (lambda: conv(x), 2 * bs * 16 * 16 * 256 * 256 * 9)]
    best = 0.0
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for fn, flops in cases:
            fn()
            for _ in range(5):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                fn()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                best = max(best, flops / (time.perf_counter() - t0) / 1e9)
    return best


def _cycle(make):
    while True:
        yield from make()


def bench(name: str, device: torch.device, batch: int, rounds: int, chunk: int, warmup: int, workers: int, n: int) -> dict:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    y = rng.integers(0, 10, n)
    out = {"model": name, "device": str(device), "batch_size": batch}

    torch.manual_seed(0)
    s = NCLAB_SETTINGS[name]
    model = build_model(name, 10, (3, 32, 32)).to(device)
    if s["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    it = BatchIterator(torch.from_numpy(x), torch.from_numpy(y), batch, shuffle=True, drop_last=True, seed=0,
                       augment=Augment(4, True), mean=MEAN, std=STD, device=device, channels_last=s["channels_last"])

    def epochs():
        for e in range(10**9):
            it.set_epoch(e)
            yield from it

    if hasattr(model, "data_init"):
        model.data_init(it.prepare(it.x[:2000]))
    ours = _Runner(model, epochs(), device, s["bf16"])

    torch.manual_seed(0)
    model = build_model(name, 10, (3, 32, 32)).to(device)
    ds = PILDataset(x, y)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
                                         pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    if hasattr(model, "data_init"):
        model.data_init(torch.stack([ds[i][0] for i in range(2000)]).to(device))
    base = _Runner(model, _cycle(lambda: iter(loader)), device, False)
    ours.run(warmup)
    base.run(warmup)
    # interleaved chunks: both pipelines see the same background load (the CPU is shared); medians
    a, b = [], []
    for _ in range(rounds):
        a.append(ours.run(chunk))
        b.append(base.run(chunk))
    out["nclab_images_per_s"] = float(np.median(a))
    out["baseline_images_per_s"] = float(np.median(b))
    out["steps"] = rounds * chunk
    out["ratio"] = out["nclab_images_per_s"] / out["baseline_images_per_s"]
    return out


def main() -> None:
    from provenance import header

    print(header())
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--models", default="fastnet,resnet18")
    p.add_argument("--batch-size", type=int, default=None, help="default 256 (cpu fastnet), 64 (cpu resnet18), 512 (cuda)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved timing rounds (default 4 cpu, 5 cuda)")
    p.add_argument("--chunk", type=int, default=None, help="steps per round (default 3 cpu, 20 cuda)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers for the baseline (default 0 cpu, 8 cuda)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    device = torch.device(a.device)
    cuda = device.type == "cuda"
    rows = []
    for name in a.models.split(","):
        bs = a.batch_size or (512 if cuda else (256 if name == "fastnet" else 64))
        rounds, chunk = a.rounds or (5 if cuda else 4), a.chunk or (20 if cuda else 3)
        workers = a.workers if a.workers is not None else (8 if cuda else 0)
        # CUDA: a CIFAR-sized set, so the baseline's DataLoader (8 workers) is not restarted every few steps
        # (with 2,048 images it restarts every 4 steps, which slows the baseline)
        n = 50_000 if cuda else max(bs * 4, 2048)
        r = bench(name, device, bs, rounds, chunk, a.warmup, workers, n)
        gf = flops_per_image(name) / 1e9
        peak16, peak32 = dense_peak(device, True), dense_peak(device, False)
        r.update(gflop_per_image=gf, nclab_gflops=r["nclab_images_per_s"] * gf,
                 baseline_gflops=r["baseline_images_per_s"] * gf, bf16_peak_gflops=peak16, fp32_peak_gflops=peak32,
                 ceiling_ratio=peak16 / (r["baseline_images_per_s"] * gf))
        rows.append(r)
        if not a.json:
            print(f"{name:9s} {a.device} batch {bs}: nclab {r['nclab_images_per_s']:8.0f} img/s   "
                  f"conventional {r['baseline_images_per_s']:8.0f} img/s   ratio {r['ratio']:.2f}x", flush=True)
            print(f"          roofline: {gf:.3f} GFLOP per training image; nclab {r['nclab_gflops']:.0f} GFLOP/s "
                  f"({100 * r['nclab_gflops'] / peak16:.0f} % of the bf16 peak {peak16:.0f}), conventional "
                  f"{r['baseline_gflops']:.0f} GFLOP/s ({100 * r['baseline_gflops'] / peak32:.0f} % of the fp32 peak "
                  f"{peak32:.0f}); ceiling {r['ceiling_ratio']:.2f}x", flush=True)
    if cuda and not a.json:
        print(f"GPU: {torch.cuda.get_device_name(0)}")
    if a.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
