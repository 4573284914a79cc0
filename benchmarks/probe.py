"""Benchmark ``nclab probe`` (the streamed engine) against a plain hook-and-concatenate loop, in one run.

1. Images: ResNet-18 (torchvision's when it imports beside this torch, else nclab's own ``resnet18``, which has
   the same stage names) at 4 layers (layer1..layer4, spatial means) on the CIFAR-10 copy (synthetic uint8
   images where the copy is absent), coarse labels ``adjacent:5``. Each measurement runs in a fresh
   subprocess so its peak RSS is its own:
   * ``probe``: :func:`nclab.experiments.probe.probe` (one streamed pass, ClassStats per layer) at its default
     ``precision="auto"`` (bf16 autocast + channels_last where the device computes bf16 natively, else fp32;
     the precision it resolved to is printed);
   * ``probe-fp32``: the same at ``precision="fp32"``;
   * ``baseline``: the obvious loop, fp32 and contiguous — forward hooks append every batch's features,
     ``torch.cat`` per layer, then ``hierarchy_metrics_from_arrays`` on the concatenated (N, D) arrays.
   Prints images/s, peak RSS and layer4's coarse NC1 (the bf16 effect on the metric) at N = 10,000 and
   N = 50,000 (``--small``: 1,000 and 2,000), then probe / baseline and probe-fp32 / baseline speed.
2. Tokens: K = 50,257, D = 768, 2,000,000 synthetic token positions (Zipf-distributed labels, class means
   plus noise) streamed through ``SparseClassStats`` in 16,384-row batches, then ``large_k_metrics`` (NC1,
   tiled CDNV / equiangularity / hyperspherical energies). Prints the time of both steps and the peak RSS.

    python benchmarks/probe.py [--small] [--device cuda] [--part images|tokens|all]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CIFAR = ROOT.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz"
LAYERS = ["layer1", "layer2", "layer3", "layer4"]
MODES = ("probe", "probe-fp32", "baseline")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _model():
    torch.manual_seed(0)  # the same random init in every subprocess: probe and baseline measure one network
    try:
        import torchvision.models as tvm

        return tvm.resnet18(num_classes=10).eval(), "torchvision resnet18"
    except Exception:
        from nclab.models import build_model

        return build_model("resnet18", 10, (3, 32, 32)).eval(), "nclab resnet18 (torchvision not importable)"


def _data(n: int):
    from nclab.data import load_dataset

    if CIFAR.is_file():
        from nclab.experiments.probe import sample_indices

        ds = load_dataset(f"imagefolder:{CIFAR}")
        sel = sample_indices(len(ds.train.y), n)  # the copy is stored class by class: a seeded uniform subset
        x, y = (ds.train.x, ds.train.y) if sel is None else (ds.train.x[sel], ds.train.y[sel])
        return x, y, ds, "CIFAR-10 copy"
    g = torch.Generator().manual_seed(0)
    return (torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(n) % 10, None,
            "synthetic")


def _batches(x, y, bs, device):
    mean = torch.tensor([0.49, 0.48, 0.45]).view(1, 3, 1, 1)
    std = torch.tensor([0.25, 0.24, 0.26]).view(1, 3, 1, 1)
    for i in range(0, len(y), bs):
        xb = (x[i : i + bs].float().mul_(1 / 255) - mean) / std
        yield xb.to(device), y[i : i + bs].to(device)


def one_image_run(mode: str, n: int, device: str, bs: int) -> dict:
    from nclab.data import Hierarchy

    torch.set_grad_enabled(False)
    net, name = _model()
    net = net.to(device)
    x, y, ds, src = _data(n)
    hier = Hierarchy.from_mapping([i // 2 for i in range(10)], [str(i) for i in range(10)], spec="adjacent:5")
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    layers = [("" if hasattr(net, "layer1") else "backbone.") + k for k in LAYERS]  # nclab's stages: backbone.*
    precision = "fp32"
    if mode.startswith("probe"):
        from nclab.experiments.probe import probe

        res = probe(net, _Reiter(x, y, bs, device), layers=layers, hierarchy=hier, num_classes=10, device=device,
                    precision="fp32" if mode == "probe-fp32" else "auto")
        nc1 = res.metrics["data"][layers[-1]]["coarse"]["nc1"]
        precision = res.info["precision"]
    else:
        from nclab.collapse import hierarchy_metrics_from_arrays

        # the obvious loop: hooks append each batch's (spatially averaged) features, concatenate, then measure
        mods = dict(net.named_modules())
        store = {k: [] for k in layers}
        hooks = [mods[k].register_forward_hook(lambda m, a, o, k=k: store[k].append(o.mean((2, 3)).cpu()))
                 for k in layers]
        for xb, _ in _batches(x, y, bs, device):
            net(xb)
        for h in hooks:
            h.remove()
        out = {k: hierarchy_metrics_from_arrays(torch.cat(v).double(), y, hier) for k, v in store.items()}
        nc1 = out[layers[-1]]["coarse"]["nc1"]
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {"mode": mode, "n": n, "seconds": dt, "images_per_s": n / dt, "peak_rss_mb": _rss_mb(),
            "rss_before_mb": rss0, "model": name, "data": src, "layer4_coarse_nc1": nc1, "precision": precision,
            "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None}


class _Reiter:
    def __init__(self, *a):
        self.a = a

    def __iter__(self):
        return _batches(*self.a)


def images(ns, device, bs, compare_max=None):
    """``compare_max``: the fp32 probe and the baseline run only at N <= this (None: at every N)."""
    print(f"== images: 4 layers {LAYERS}, batch {bs}, device {device}")
    rows = []
    for n in ns:
        for mode in MODES:
            if mode != "probe" and compare_max is not None and n > compare_max:
                continue
            cmd = [sys.executable, __file__, "--one", mode, str(n), "--device", device, "--batch-size", str(bs)]
            r = json.loads(
                subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
            rows.append(r)
            print(f"  {mode:<10s} {r['precision']:<4s} N={n:>6d}  {r['images_per_s']:8.1f} images/s  "
                  f"peak RSS {r['peak_rss_mb']:7.0f} MB"
                  f"  (before the pass {r['rss_before_mb']:.0f} MB)  layer4 coarse nc1 {r['layer4_coarse_nc1']:.6g}"
                  f"  [{r['model']}, {r['data']}]")
    for n in ns:
        if compare_max is not None and n > compare_max:
            continue
        p, p32, b = (next(r for r in rows if r["n"] == n and r["mode"] == m) for m in MODES)
        print(f"  N={n}: probe ({p['precision']}) / baseline speed {p['images_per_s'] / b['images_per_s']:.2f}x, "
              f"probe-fp32 / baseline {p32['images_per_s'] / b['images_per_s']:.2f}x; layer4 coarse nc1 "
              f"{p['layer4_coarse_nc1']:.6g} ({p['precision']}) vs {p32['layer4_coarse_nc1']:.6g} (fp32, probe) vs "
              f"{b['layer4_coarse_nc1']:.6g} (baseline); peak RSS probe {p['peak_rss_mb']:.0f} MB vs baseline "
              f"{b['peak_rss_mb']:.0f} MB")


def tokens(n_tokens: int, k: int, d: int, device: str) -> None:
    from nclab.collapse.large_k import SparseClassStats, large_k_metrics

    print(f"== tokens: K={k}, D={d}, {n_tokens:,} synthetic positions, device {device}")
    g = torch.Generator(device="cpu").manual_seed(0)
    mu = torch.randn(k, d, generator=g, dtype=torch.float32) * 0.5
    p = 1.0 / torch.arange(1, k + 1, dtype=torch.float64)  # Zipf-like token frequencies
    st = SparseClassStats(k, d, device=device)
    t0 = time.perf_counter()
    bs = 16384
    for i in range(0, n_tokens, bs):
        b = min(bs, n_tokens - i)
        y = torch.multinomial(p, b, replacement=True, generator=g)
        h = mu[y] + torch.randn(b, d, generator=g)
        st.update(h.to(device), y.to(device))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t1 = time.perf_counter()
    m = large_k_metrics(st)
    t2 = time.perf_counter()
    print(f"  stream {t1 - t0:.1f} s ({n_tokens / (t1 - t0):,.0f} positions/s, incl. generating them), metrics "
          f"{t2 - t1:.1f} s; classes present {m['n_classes']:.0f}, absent {m['n_classes_absent']:.0f}; "
          f"nc1 {m['nc1']:.4g}, cdnv {m['cdnv']:.4g}, log energy {m['hyperspherical_log_energy_means']:.4g}; "
          f"peak RSS {_rss_mb():.0f} MB"
          + (f", CUDA peak {torch.cuda.max_memory_allocated() / 2**20:.0f} MB" if device.startswith("cuda") else ""))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--part", default="all", choices=("images", "tokens", "all"))
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="image counts N (default 10000 50000)")
    ap.add_argument("--compare-max", type=int, default=None,
                    help="run the fp32 probe and the baseline only at N <= this (the probe alone above it)")
    ap.add_argument("--one", nargs=2, metavar=("MODE", "N"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one_image_run(a.one[0], int(a.one[1]), a.device, a.batch_size)))
        return
    from provenance import header

    print(header(a.device))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if a.part in ("images", "all"):
        sizes = a.sizes or ((1000, 2000) if a.small else (10000, 50000))
        images(sizes, a.device, a.batch_size, a.compare_max)
    if a.part in ("tokens", "all"):
        tokens(200_000 if a.small else 2_000_000, 50257, 768, a.device)


if __name__ == "__main__":
    main()
