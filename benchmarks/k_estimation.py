"""How often each k criterion (``recovery.fine_per_coarse: auto``) finds the number of fine classes per superclass.

Synthetic: :func:`nclab.data.make_hierarchical_gaussian` (2 superclasses x 5 fine classes, the shape of CIFAR-10
under ``mod:2``; and 4 superclasses x 2) at several fine separations and seeds, plus a hierarchy with a different
count in each superclass (2, 3, 4, 5; orthonormal fine directions, no coarse offset). Real: ``--features DIR ...`` \
(a run's ``features/``: train_features,
train_coarse, train_fine), the hierarchy inferred from the train (fine, coarse) pairs. Each criterion runs exactly
as the recovery runs it (:func:`nclab.finegrain.kselect.estimate_k` on the group's un-normalised features, seeded
as in ``FineLabelRecovery.fit``, candidates up to ``--k-max``). Printed: right / superclasses per setting and
criterion, and the estimates.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/k_estimation.py [--features RUN/features ...] [--k-max 10]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def groups_synthetic(coarse: int, m: int, fine_sep: float, seed: int, n: int = 200, dim: int = 32):
    from nclab.data import make_hierarchical_gaussian

    x, y, h = make_hierarchical_gaussian(coarse, m, dim=dim, coarse_sep=12.0, fine_sep=fine_sep, noise=1.0,
                                         n_per_class=n, seed=seed)
    c = h.fine_to_coarse[y]
    return [(x[c == k], m) for k in range(coarse)]


def groups_mixed(seed: int, fine_sep: float = 4.0, n: int = 200, dim: int = 32):
    rng = np.random.default_rng(seed)
    out = []
    for k in (2, 3, 4, 5):
        v, _ = np.linalg.qr(rng.standard_normal((dim, k)))
        y = np.repeat(np.arange(k), n)
        out.append((((fine_sep * v.T)[y] + rng.standard_normal((len(y), dim))).astype(np.float32), k))
    return out


def groups_features(folder: str):
    from pathlib import Path

    f = Path(folder)
    x = np.load(f / "train_features.npy")
    c, y = np.load(f / "train_coarse.npy"), np.load(f / "train_fine.npy")
    return [(x[c == k], len(np.unique(y[c == k]))) for k in range(int(c.max()) + 1)]


def run(name: str, groups, k_max: int, criteria) -> None:
    from nclab.finegrain.kselect import estimate_k

    for crit in criteria:
        t0 = time.perf_counter()
        est = [estimate_k(x, k_max, crit, seed=0 + 1009 * (i + 1))[0] for i, (x, _) in enumerate(groups)]
        ok = sum(e == k for e, (_, k) in zip(est, groups))
        print(f"{name:<44} {crit:<10} {ok:>2}/{len(groups):<2}  estimates {est} (true {[k for _, k in groups]})"
              f"  {time.perf_counter() - t0:.1f}s", flush=True)


def main() -> None:
    from provenance import header

    print(header())
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--features", nargs="*", default=[], help="run features/ folders")
    ap.add_argument("--k-max", type=int, default=10)
    ap.add_argument("--criteria", nargs="+", default=["silhouette", "bic", "gap"])
    ap.add_argument("--no-synthetic", action="store_true")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    if not args.no_synthetic:
        for coarse, m in ((2, 5), (4, 2)):
            for sep in (1.5, 2.0, 3.0, 4.0):
                g = [grp for s in (0, 1, 2) for grp in groups_synthetic(coarse, m, sep, s)]
                run(f"synthetic {coarse}x{m}, fine_sep {sep:g}, 3 seeds", g, args.k_max, args.criteria)
        for sep in (2.5, 4.0):
            run(f"synthetic k = 2,3,4,5, fine_sep {sep:g}, 3 seeds",
                [grp for s in (0, 1, 2) for grp in groups_mixed(s, sep)], args.k_max, args.criteria)
    for f in args.features:
        run(f, groups_features(f), args.k_max, args.criteria)


if __name__ == "__main__":
    main()
