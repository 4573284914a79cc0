"""Overhead of ``NCLightningCallback``: the wall time of a Lightning training epoch with and without the callback
measuring on a 10,000-sample loader (two layers, the classifier's weight metrics), as a ratio.

Synthetic 10-class Gaussian data (10,000 training samples, 64 features), an MLP 64-512-512-10, batch 128,
CPU, one torch thread (this runs on shared cores). Each configuration trains ``--epochs`` epochs in the same
process, seeded alike; an epoch is timed from one ``on_train_epoch_start`` to the next (the last to
``on_train_end``), so everything at the epoch's end counts, whatever the callback order (the callback measures
at the training-epoch end, ``on="train"``); the first epoch is left out as warm-up and the median of the rest
is reported.

    python benchmarks/integrations.py [--epochs 4] [--n 10000] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import torch
from torch.utils.data import DataLoader, TensorDataset


def main() -> None:
    from provenance import header

    print(header())
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--n", type=int, default=10000, help="samples in the training set and in the measured loader")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import lightning.pytorch as pl

    from nclab.integrations import NCLightningCallback

    class Net(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(64, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512),
                                           torch.nn.ReLU(), torch.nn.Linear(512, 10))

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, i):
            return torch.nn.functional.cross_entropy(self(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)

    class Timer(pl.Callback):
        def __init__(self):
            self.times: list[float] = []

        def on_train_epoch_start(self, trainer, pl_module):
            now = time.perf_counter()
            if hasattr(self, "t0"):
                self.times.append(now - self.t0)
            self.t0 = now

        def on_train_end(self, trainer, pl_module):
            self.times.append(time.perf_counter() - self.t0)

    g = torch.Generator().manual_seed(0)
    y = torch.arange(args.n) % 10
    x = torch.randn(10, 64, generator=g)[y] * 1.5 + torch.randn(args.n, 64, generator=g)
    ds = TensorDataset(x, y)

    def run(with_nc: bool) -> list[float]:
        pl.seed_everything(0, verbose=False)
        timer = Timer()
        cbs = []
        if with_nc:
            cbs.append(NCLightningCallback(DataLoader(ds, batch_size=1000), ["net.1", "net.4:input"],
                                           classifier="net.4", num_classes=10, on="train"))
        cbs.append(timer)
        tr = pl.Trainer(max_epochs=args.epochs, accelerator="cpu", devices=1, logger=False, callbacks=cbs,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tr.fit(Net(), DataLoader(ds, batch_size=128, shuffle=True))
        return timer.times

    base, with_nc = run(False), run(True)
    b, w = statistics.median(base[1:] or base), statistics.median(with_nc[1:] or with_nc)
    print(json.dumps({"n": args.n, "threads": args.threads, "epochs": args.epochs,
                      "epoch_s_without": round(b, 4), "epoch_s_with": round(w, 4), "ratio": round(w / b, 3),
                      "all_without": [round(t, 4) for t in base], "all_with": [round(t, 4) for t in with_nc]}))
    print(f"Lightning epoch on {args.n} samples: {b:.3f} s without, {w:.3f} s with NCLightningCallback "
          f"(measuring {args.n} samples): ratio {w / b:.2f}")


if __name__ == "__main__":
    main()
