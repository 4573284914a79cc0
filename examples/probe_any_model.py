"""Probe your own network at several layers with ``nclab.probe`` (seconds on a CPU).

A small MLP is trained for a few hundred steps on the coarse labels of a synthetic hierarchical mixture
(2 superclasses x 3 fine classes); ``nclab.probe`` then streams the training set through it and reports, per
layer, NC1 = tr(Σ_W Σ_B†)/K for the coarse and the fine labels and for the fine classes inside each superclass,
plus the fine-label recovery accuracy (k-means inside each superclass, routed by the net's own coarse
prediction). Run: ``python examples/probe_any_model.py``.
"""

from __future__ import annotations

import torch
from torch import nn

import nclab
from nclab.data import load_dataset

SOURCE = "synthetic:coarse=2,fine_per_coarse=3,dim=16,n_train=1200,n_test=300,seed=0"


def build_and_train(ds, hierarchy, steps: int = 300) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential()
    net.add_module("l1", nn.Linear(16, 64))
    net.add_module("a1", nn.ReLU())
    net.add_module("l2", nn.Linear(64, 32))
    net.add_module("a2", nn.ReLU())
    net.add_module("fc", nn.Linear(32, hierarchy.num_coarse))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, yc = ds.train.x, torch.as_tensor(hierarchy.coarse_of(ds.train.y))
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), yc).backward()
        opt.step()
    return net.eval()


def main() -> dict:
    ds = load_dataset(SOURCE)
    hierarchy = ds.hierarchy
    net = build_and_train(ds, hierarchy)
    res = nclab.probe(net, SOURCE, layers="a1,a2", hierarchy=hierarchy, classifier="fc", recover=True,
                      splits=("train", "test"), recovery_options={"n_init": 3},
                      precision="fp32")  # exact fp32 forward; the default "auto" runs bf16 where the CPU has it
    for layer in res.layers:
        m = res.metrics["train"][layer]
        print(f"{layer:<9s} D={res.dims[layer]:<3d} coarse nc1={m['coarse']['nc1']:.4f}  "
              f"fine nc1={m['fine']['nc1']:.4f}  "
              f"fine-within-coarse nc1={m['fine_within_coarse']['mean']:.4f}  "
              f"recovery={res.recovery[layer]['test_acc']:.3f}")
    return {"result": res, "net": net, "dataset": ds}


if __name__ == "__main__":
    main()
