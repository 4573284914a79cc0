"""Cold vs cached load time of the shared CIFAR-10 JPEG copy, and batch throughput.

Part 1 (load):
cold   = decode every JPEG into an empty temp cache (what a fresh machine pays once)
cached = load again from that cache (what every later run pays)
Prints both times and their ratio (cold / cached), all measured in this run.

Part 2 (batches, no model): images/s of one augmented, normalised training epoch (random crop with
padding 4 + horizontal flip, batch 256) from nclab's in-memory ``BatchIterator`` vs a torch ``DataLoader``
with per-sample PIL transforms (the textbook pipeline of ``benchmarks/train_throughput.py``), on the same
decoded train split, ratio printed.

    python benchmarks/data_loading.py [--source imagefolder:PATH] [--repeats 3]

Reusable: ``load_times(spec)`` returns ``(cold_s, cached_s, dataset)`` so another benchmark (e.g. batch-iterator
throughput) can start from the decoded dataset without decoding it again.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = f"imagefolder:{ROOT.parent / 'shared' / 'datasets' / 'cifar10-jpeg.tar.gz'}"


def load_times(spec: str = DEFAULT_SOURCE, repeats: int = 3, cache_dir: str | None = None):
    """(cold seconds, median cached seconds, dataset). Uses a fresh temp cache unless ``cache_dir`` is given."""
    from nclab.data import load_dataset

    with tempfile.TemporaryDirectory(prefix="nclab-bench-cache-") as tmp:
        cache = cache_dir or tmp
        t0 = time.perf_counter()
        ds = load_dataset(spec, cache_dir=cache)
        cold = time.perf_counter() - t0
        warm = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            ds = load_dataset(spec, cache_dir=cache)
            warm.append(time.perf_counter() - t0)
    return cold, statistics.median(warm), ds


def main(argv: list[str] | None = None) -> int:
    from provenance import header

    print(header())
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", default=DEFAULT_SOURCE)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batches", type=int, default=20000,
                   help="train images for the batch-throughput part (0 skips it)")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.batches < 0:
        p.error("--repeats must be >= 1 and --batches >= 0")
    src = args.source.split(":", 1)[1] if ":" in args.source else ""
    if args.source.startswith("imagefolder:") and not Path(src).exists():
        print(f"error: {src} not found (see ../shared/datasets/README.md)", file=sys.stderr)
        return 2
    from nclab.data.decode import num_workers

    cold, cached, ds = load_times(args.source, args.repeats)
    n = len(ds.train) + len(ds.test)
    print(f"source: {args.source}  ({len(ds.train)} train + {len(ds.test)} test, {tuple(ds.input_shape)} uint8)")
    print(f"cold load   (decode {n} images, {num_workers()} worker(s), write cache): {cold:8.2f} s  "
          f"({n / cold:,.0f} images/s)")
    print(f"cached load (median of {args.repeats}):                                  {cached:8.2f} s  "
          f"({n / cached:,.0f} images/s)")
    print(f"ratio cold / cached: {cold / cached:.1f}x")
    if args.batches and tuple(ds.input_shape) != (3, 32, 32):
        print(f"batch part skipped: the DataLoader baseline is written for 3x32x32 images, not {tuple(ds.input_shape)}")
    elif args.batches:
        it_s, dl_s = batch_throughput(ds, args.batches)
        print(f"batches of 256, crop+flip+normalise, first {args.batches} train images:")
        print(f"  nclab BatchIterator:            {it_s:10,.0f} images/s")
        print(f"  DataLoader, per-sample PIL ops: {dl_s:10,.0f} images/s")
        print(f"ratio BatchIterator / DataLoader: {it_s / dl_s:.1f}x")
    return 0


def batch_throughput(ds, n: int, batch: int = 256) -> tuple[float, float]:
    """(BatchIterator images/s, DataLoader images/s) over one epoch of the first ``n`` train images."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from train_throughput import PILDataset  # the same textbook pipeline as the training benchmark

    from nclab.data.augment import Augment
    from nclab.data.batches import BatchIterator

    x, y = ds.train.x[:n], ds.train.y[:n]
    mean, std = ds.channel_stats()
    it = BatchIterator(x, y, batch, shuffle=True, seed=0, augment=Augment(crop=4, flip=True), mean=mean, std=std)
    t0 = time.perf_counter()
    seen = sum(len(yb) for _, yb in it)
    it_s = seen / (time.perf_counter() - t0)
    loader = torch.utils.data.DataLoader(PILDataset(x.numpy(), y.numpy()), batch_size=batch, shuffle=True)
    t0 = time.perf_counter()
    seen = sum(len(yb) for _, yb in loader)
    dl_s = seen / (time.perf_counter() - t0)
    return it_s, dl_s


if __name__ == "__main__":
    sys.exit(main())
