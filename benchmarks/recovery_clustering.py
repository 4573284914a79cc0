"""Clustering speed for fine-label recovery: nclab's torch k-means vs scikit-learn KMeans(n_init=10).

Data: synthetic CIFAR-sized features, N=50,000 x D (256 and 512), 5 superclasses x 2 fine classes,
with overlap tuned so the recovery accuracy is below 1 (like real features). Both run the same protocol
(per-superclass clustering with k_c=2, Hungarian naming) in the same process, both imported and warmed up
before any timing, in alternating rounds (``--rounds``, default 3); printed: the median wall time of each side,
their ratio and the per-round times, the summed k-means objective, and train clustering accuracy. Also the
global K=10 variant.

    .venv/bin/python benchmarks/recovery_clustering.py [--dims 256 512] [--n 50000] [--rounds 3]

``--features RUN/features`` instead compares the normalisations (and clusterers) on a trained run's saved
features (how the default normalisation was chosen; docs/recovery.md).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def features(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    f2c = np.arange(10) % 5  # the mod:5 hierarchy
    cmu = rng.normal(size=(5, d)) * 3.0
    fmu = cmu[f2c] + rng.normal(size=(10, d)) * 0.12
    y = rng.integers(0, 10, n)
    x = fmu[y] + rng.normal(size=(n, d))
    return x.astype(np.float32), y, f2c


def protocol(x, y, f2c, cluster) -> tuple[float, float, float]:
    """Per-superclass clustering + Hungarian naming; returns (seconds, summed objective, accuracy)."""
    from nclab.finegrain.recovery import hungarian_names

    t0 = time.perf_counter()
    correct, obj = 0, 0.0
    for c in range(int(f2c.max()) + 1):
        idx = np.flatnonzero(f2c[y] == c)
        cls = np.flatnonzero(f2c == c)
        lab, inertia = cluster(x[idx], len(cls))
        obj += inertia
        names = hungarian_names(lab, y[idx], len(cls), cls)
        correct += int(np.sum(names[lab] == y[idx]))
    return time.perf_counter() - t0, obj, correct / len(y)


def ours(z, k):
    from nclab.finegrain.kmeans import kmeans

    r = kmeans(z, k, n_init=10, seed=0)
    return r.labels, r.inertia


def sk(z, k):
    from sklearn.cluster import KMeans  # imported (and warmed up) in main() before any timing

    m = KMeans(k, n_init=10, random_state=0).fit(z)
    return m.labels_, float(m.inertia_)


def compare_normalisations(folder: str, methods: list[str]) -> None:
    from nclab.finegrain.evaluate import evaluate_recovery

    def load(n):
        return np.load(f"{folder}/{n}.npy")

    tr, te = load("train_features"), load("test_features")
    ytr, yte = load("train_fine"), load("test_fine")
    ctr, pred = load("train_coarse"), load("test_coarse_pred")
    print(f"features {folder}: train {tr.shape}, test {te.shape}")
    for method in methods:
        for norm in ("none", "center", "l2", "center+l2", "whiten"):
            t0 = time.perf_counter()
            r = evaluate_recovery(tr, ctr, ytr, te, pred, yte, None, method=method, normalize=norm)
            print(f"  {method:8s} {norm:10s} test {r['test_acc']:.4f}  oracle {r['oracle_test_acc']:.4f}  "
                  f"train {r['train_acc']:.4f}  ({time.perf_counter() - t0:.1f}s)", flush=True)


def main() -> None:
    from provenance import header

    print(header())
    ap = argparse.ArgumentParser()
    ap.add_argument("--dims", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--n", type=int, default=50000)
    ap.add_argument("--skip-global", action="store_true")
    ap.add_argument("--features", default=None, help="a run's features/ folder: compare normalisations instead")
    ap.add_argument("--methods", nargs="+", default=["kmeans"])
    ap.add_argument("--rounds", type=int, default=3, help="alternating timing rounds per side (median)")
    a = ap.parse_args()
    if a.rounds < 1 or a.n < 100 or min(a.dims) < 1:
        ap.error("need --rounds >= 1, --n >= 100 and positive --dims")
    if a.features:
        compare_normalisations(a.features, a.methods)
        return
    import statistics

    print(f"torch threads {torch.get_num_threads()}; times are wall seconds on a shared CPU (rough)")
    xw, yw, fw = features(2000, 16, seed=1)
    for f in (ours, sk):  # imports, thread pools and first-call costs paid before any timing
        protocol(xw, yw, fw, f)
    for d in a.dims:
        x, y, f2c = features(a.n, d)
        one = np.zeros_like(f2c)  # global: one group holding all 10 fine classes
        runs = [("per-superclass k=2", f2c)] + ([] if a.skip_global else [("global K=10", one)])
        for name, h in runs:
            t_ours, t_sk = [], []
            for _ in range(a.rounds):  # alternating: both sides see the same moments of a shared machine
                t1, o1, a1 = protocol(x, y, h, ours)
                t2, o2, a2 = protocol(x, y, h, sk)
                t_ours.append(t1)
                t_sk.append(t2)
            m1, m2 = statistics.median(t_ours), statistics.median(t_sk)
            print(f"N={a.n} D={d} {name:18s} nclab {m1:6.2f}s acc {a1:.4f} obj {o1:.6g} | "
                  f"sklearn(n_init=10) {m2:6.2f}s acc {a2:.4f} obj {o2:.6g} | sklearn/nclab time x{m2 / m1:.2f} "
                  f"(medians of {a.rounds}; rounds nclab {' '.join(f'{t:.2f}' for t in t_ours)}, sklearn "
                  f"{' '.join(f'{t:.2f}' for t in t_sk)}), objective ratio {o1 / o2:.6f}", flush=True)


if __name__ == "__main__":
    main()
