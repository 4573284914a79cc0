"""Trainer, schedules, augmentation and theory checked against hand-written references.

Written from mutation testing: each test kills realistic bugs the other tests let through
(BatchNorm lr scale or weight decay ignored, nesterov off, label smoothing or penalties dropped, schedules
off by a step, augmentation draws correlated or repeated, eval augmented, absolute Gram scales in the theory).
"""
import copy
import json
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nclab.train import Trainer
from nclab.train.schedules import lr_at
from test_train import base_cfg, digits_dataset, _tiny_images


def test_schedule_values_non_divisible_cases():
    ms = {"name": "multistep", "milestones": [1 / 3, 2 / 3], "gamma": 0.1}
    # 10 epochs x 10 steps: milestones at epochs floor(10/3)=3 and floor(20/3)=6 (epoch-based, not step 33/66)
    assert lr_at(ms, 1.0, 29, 10, 10) == 1.0 and lr_at(ms, 1.0, 30, 10, 10) == pytest.approx(0.1)
    assert lr_at(ms, 1.0, 60, 10, 10) == pytest.approx(0.01)
    # warm-up is a fraction of steps: 0.15 * 100 = 15 steps (not rounded to whole epochs)
    c = {"name": "constant", "warmup": 0.15, "start_factor": 0.0}
    assert lr_at(c, 1.0, 14, 10, 10) == pytest.approx(14 / 15) and lr_at(c, 1.0, 15, 10, 10) == 1.0
    # cosine after a warm-up, with a final factor: u = (t - W) / (T - W)
    cos = {"name": "cosine", "warmup": 0.2, "final_factor": 0.1}
    assert lr_at(cos, 1.0, 20, 10, 10) == pytest.approx(1.0)
    assert lr_at(cos, 1.0, 60, 10, 10) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_at(cos, 1.0, 100, 10, 10) == pytest.approx(0.1)


def test_training_matches_a_hand_written_loop(tmp_path):
    ds = digits_dataset(10, 2)  # 100 train samples, full batch: 1 step per epoch
    cfg = base_cfg(model={"name": "mlp", "width": 8, "depth": 1, "batchnorm": True, "head_depth": 2},
                   data={"normalize": False},
                   optim={"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01, "bias_lr_scale": 4.0,
                          "batch_size": 100, "epochs": 6},
                   schedule={"name": "onecycle", "warmup": 0.25, "start_factor": 0.2, "final_factor": 0.1},
                   loss={"label_smoothing": 0.1, "lambda_w": 0.02, "lambda_h": 0.03})
    tr = Trainer(cfg, tmp_path / "r", dataset=ds)
    ref = copy.deepcopy(tr.model)
    tr.fit()
    # T = 6, W = round(1.5) = 2: warm-up 0.2 -> 1 (steps 0, 1), then linear 1 -> 0.1 over steps 2..5
    lrs = [0.05 * f for f in (0.2, 0.6, 1.0, 0.775, 0.55, 0.325)]
    bn = {id(p) for m in ref.modules() if isinstance(m, torch.nn.BatchNorm1d) for p in m.parameters()}
    bufs, losses = {}, []
    x, y = ds.train.x, ds.train.y
    for lr in lrs:
        ref.train()
        h0 = ref.backbone(x)
        h = h0
        for layer in ref.head[:-1]:
            h = layer(h)
        z = ref.head[-1](h)
        loss = (F.cross_entropy(z, y, label_smoothing=0.1)
                + 0.01 * sum((l.weight ** 2).sum() for l in ref.head)
                + 0.015 * (h0 ** 2).sum(1).mean())
        losses.append(loss.item())
        ref.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in ref.parameters():
                s = 4.0 if id(p) in bn else 1.0
                d = p.grad + (0.01 / s) * p
                b = bufs[id(p)] = d.clone() if id(p) not in bufs else 0.9 * bufs[id(p)] + d
                p -= lr * s * (d + 0.9 * b)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(tr.model.state_dict()[k], v, rtol=1e-4, atol=1e-6, msg=k)
    rows = [json.loads(l) for l in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows] == pytest.approx(lrs)
    assert [r["train_loss"] for r in rows] == pytest.approx(losses, rel=1e-5)


def test_eval_is_unaugmented_and_runs_at_the_last_epoch(tmp_path):
    cfg = base_cfg(model={"name": "fastnet", "widths": [8, 8, 8]}, data={"augment": {"crop": 2, "flip": True}},
                   optim={"epochs": 3, "batch_size": 8}, train={"eval_every": 2})
    cfg["model"].pop("width"), cfg["model"].pop("depth")
    ds = _tiny_images()
    tr = Trainer(cfg, tmp_path / "r", dataset=ds)
    tr.fit()
    rows = [json.loads(l) for l in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert ["test_acc" in r for r in rows] == [False, True, True]
    mean, std = ds.channel_stats()
    x = (ds.test.x.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    m = tr.model.eval()
    with torch.no_grad():
        z = m(x.float())
    assert tr.evaluate("test")["loss"] == pytest.approx(F.cross_entropy(z, ds.test.y).item(), rel=1e-5)


def test_limit_per_class_keeps_first_n(tmp_path):
    ds = digits_dataset(10, 5)
    tr = Trainer(base_cfg(data={"limit_per_class": 3}), tmp_path / "r", dataset=ds)
    for split, full in (("train", ds.train), ("test", ds.test)):
        got = getattr(tr.dataset, split)
        want = np.sort(np.concatenate([np.flatnonzero(full.y.numpy() == c)[:3] for c in range(10)]))
        assert torch.equal(got.x, full.x[want]) and torch.equal(got.y, full.y[want])


def test_rng_state_round_trip():
    from nclab.train.checkpoint import rng_state, set_rng_state
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    st = rng_state()
    a = (torch.rand(3), np.random.rand(3), random.random())
    torch.rand(5), np.random.rand(5), random.random()  # move every generator on
    set_rng_state(st)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_coarse_targets_follow_the_hierarchy_not_mod(tmp_path):
    ds = digits_dataset(5, 2)
    tr = Trainer(base_cfg(data={"hierarchy": "adjacent:5", "labels": "coarse"}), tmp_path / "r", dataset=ds)
    assert torch.equal(tr.train_targets("train"), ds.train.y // 2)


def test_augment_draws_cover_every_shift_independently_and_flip_half():
    from nclab.data.augment import Augment
    n, pad = 4000, 2
    g = torch.Generator().manual_seed(0)
    base = torch.randint(0, 256, (1, 1, 9, 9), generator=g, dtype=torch.uint8)
    x = base.expand(n, 1, 9, 9).contiguous()
    out = Augment(crop=pad, flip=True)(x, torch.Generator().manual_seed(1))
    xp = F.pad(base.float(), (pad,) * 4, mode="reflect").to(torch.uint8)[0]
    cands = {(dy, dx, f): (xp[:, dy:dy + 9, dx:dx + 9].flip(-1) if f else xp[:, dy:dy + 9, dx:dx + 9])
             for dy in range(5) for dx in range(5) for f in (0, 1)}
    seen = []
    for i in range(n):
        seen.append(next(k for k, v in cands.items() if torch.equal(out[i], v)))
    seen = np.array(seen)
    assert set(seen[:, 0]) == set(range(5)) and set(seen[:, 1]) == set(range(5))  # all shifts -pad..pad
    assert (seen[:, 0] != seen[:, 1]).mean() > 0.7  # dy, dx drawn independently (equal w.p. 1/5)
    assert abs(seen[:, 2].mean() - 0.5) < 0.05


def test_augmentation_differs_between_steps_and_epochs():
    from nclab.data.augment import Augment
    from nclab.data.batches import BatchIterator
    x = torch.randint(0, 256, (1, 3, 8, 8), dtype=torch.uint8).expand(32, 3, 8, 8).contiguous()
    it = BatchIterator(x, torch.zeros(32, dtype=torch.int64), 8, shuffle=False, augment=Augment(2, True), seed=0)
    e0 = [b for b, _ in it]
    it.set_epoch(1)
    e1 = [b for b, _ in it]
    assert not torch.equal(e0[0], e0[1])  # same images, another step: other draws
    assert not torch.equal(e0[0], e1[0])  # same step, another epoch: other draws


def test_drop_last_keeps_a_batch_smaller_than_batch_size():
    from nclab.data.batches import BatchIterator
    it = BatchIterator(torch.randn(5, 2), torch.zeros(5, dtype=torch.int64), 8, shuffle=True, drop_last=True)
    assert len(it) == 1 and len(next(iter(it))[1]) == 5


def test_theory_absolute_grams_and_per_class_values():
    from nclab.theory import predict_ufm, solve_ufm, measured_geometry, compare_to_prediction
    from nclab.theory.solver import class_means
    imb = [60, 30, 10, 10]
    pred = predict_ufm(imb, 2, 3e-3, 3e-3, bias=True)
    sol = solve_ufm(imb, 2, 3e-3, 3e-3, bias=True, optimizer="lbfgs", iters=600, width=6, init_std=1.0,
                    eval_steps=[600], prediction=pred)
    assert compare_to_prediction(measured_geometry(sol), pred)["max_rel_diff"] <= 1e-4
    assert sol.history[-1]["wh_pred_error"] <= 1e-4
    M, lw, lh = 3, [2e-3, 8e-3, 4e-3], 3e-3
    pred = predict_ufm(imb, M, lw, lh)
    sol = solve_ufm(imb, M, lw, lh, optimizer="lbfgs", iters=600, width=6, init_std=1.0, eval_steps=[])
    Fj = sol.H
    for j in range(M):
        if j:
            Fj = sol.Ws[j - 1] @ Fj
        m = class_means(Fj.T, sol.y, 4)
        Q = sol.Ws[-1]
        for W in reversed(sol.Ws[j:-1]):
            Q = Q @ W
        np.testing.assert_allclose((m @ m.T).numpy(), pred.layer_means_gram(j), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose((Q @ Q.T).numpy(), pred.layer_classifier_gram(j), rtol=1e-4, atol=1e-6)
    pred = predict_ufm([25] * 4, 2, 1e-3, 1e-3, bias=True)
    sol = solve_ufm([25] * 4, 2, 1e-3, 1e-3, bias=True, optimizer="lbfgs", iters=600, width=6, init_std=1.0,
                    eval_steps=[])
    assert compare_to_prediction(measured_geometry(sol), pred)["max_rel_diff"] <= 1e-4


def test_split_pseudo_labels_follow_the_spec_seed_else_the_run_seed(tmp_path):
    # the trainer used to shuffle by the run seed even for split:M:SEED, so split:2:7 and split:2:9 trained
    # on the same pseudo labels while `nclab data info` counted others
    from nclab.data import build_hierarchy, split_labels
    ds = digits_dataset(10, 4)
    y = ds.train.y.numpy()

    def targets(spec, seed):
        tr = Trainer(base_cfg(seed=seed, data={"hierarchy": spec, "labels": "fine"}), tmp_path / f"{spec}-{seed}",
                     dataset=ds)
        return tr.train_targets("train").numpy()

    names = [str(c) for c in range(10)]
    for spec, seed, want_seed in (("split:2:7", 0, 7), ("split:2:9", 0, 9), ("split:2", 3, 3)):
        want = split_labels(y, build_hierarchy(f"split:2:{want_seed}", names))
        assert np.array_equal(targets(spec, seed), want), spec
    assert not np.array_equal(targets("split:2:7", 0), targets("split:2:9", 0))


def test_adam_matches_the_update_written_out(tmp_path):
    # betas and weight decay reach Adam: three full-batch steps against Kingma & Ba's update by hand
    ds = digits_dataset(10, 2)
    cfg = base_cfg(model={"name": "mlp", "width": 8, "depth": 1}, data={"normalize": False},
                   optim={"name": "adam", "lr": 0.01, "betas": [0.5, 0.6], "weight_decay": 0.02, "batch_size": 100,
                          "epochs": 3},
                   schedule={"name": "constant"})
    tr = Trainer(cfg, tmp_path / "r", dataset=ds)
    ref = copy.deepcopy(tr.model)
    tr.fit()
    m1 = {id(p): torch.zeros_like(p) for p in ref.parameters()}
    m2 = {id(p): torch.zeros_like(p) for p in ref.parameters()}
    for t in range(1, 4):
        ref.train()
        loss = F.cross_entropy(ref(ds.train.x), ds.train.y)
        ref.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in ref.parameters():
                g = p.grad + 0.02 * p  # Adam's L2 weight decay enters the gradient
                m1[id(p)] = 0.5 * m1[id(p)] + 0.5 * g
                m2[id(p)] = 0.6 * m2[id(p)] + 0.4 * g * g
                mh, vh = m1[id(p)] / (1 - 0.5 ** t), m2[id(p)] / (1 - 0.6 ** t)
                p -= 0.01 * mh / (vh.sqrt() + 1e-8)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(tr.model.state_dict()[k], v, rtol=1e-4, atol=1e-6, msg=k)


def test_subsample_picks_what_its_docstring_says(tmp_path):
    # class c keeps default_rng([seed, c]).permutation(its indices)[:n], in original order; with ratio=... the
    # profile starts from the smallest available class (unequal class sizes here, so max() would differ);
    # a training run subsamples with its own seed
    from nclab.data import subsample
    from nclab.data.subsample import geometric_counts
    from nclab.data.types import Dataset, Split
    y = np.repeat(np.arange(3), [10, 6, 8])
    x = torch.arange(y.size, dtype=torch.float32).view(-1, 1)
    ds = Dataset("toy", Split(x, torch.from_numpy(y)), Split(x[:3], torch.arange(3)), ["a", "b", "c"], source="toy")

    def want(counts, seed):
        keep = [np.flatnonzero(y == c)[np.random.default_rng([seed, c]).permutation((y == c).sum())[:n]]
                for c, n in enumerate(counts)]
        return np.sort(np.concatenate(keep))

    got = subsample(ds, ratio=2.0, seed=3)
    counts = geometric_counts(6, 3, 2.0)
    assert counts[0] == 6 and list(np.bincount(got.train.y.numpy(), minlength=3)) == list(counts)
    assert np.array_equal(got.train.x[:, 0].numpy().astype(int), want(counts, 3))
    tr = Trainer(base_cfg(seed=4, data={"subsample": [5, 2, 3], "normalize": False}), tmp_path / "r", dataset=ds)
    assert np.array_equal(tr.dataset.train.x[:, 0].numpy().astype(int), want([5, 2, 3], 4))
    # a mapping without a seed takes the run's seed, and the resolved config keeps what the user wrote
    tr = Trainer(base_cfg(seed=4, data={"subsample": {"counts": [5, 2, 3]}, "normalize": False}), tmp_path / "m",
                 dataset=ds)
    assert np.array_equal(tr.dataset.train.x[:, 0].numpy().astype(int), want([5, 2, 3], 4))
    assert tr.cfg.data.subsample == {"counts": [5, 2, 3]}


def test_synthetic_test_split_is_fresh_data():
    from nclab.data import load_dataset
    ds = load_dataset("synthetic:n_train=60,n_test=60")
    train = {tuple(r) for r in ds.train.x.numpy().round(6)}
    assert not any(tuple(r) in train for r in ds.test.x.numpy().round(6))


def test_folder_checksum_sees_a_same_size_rewrite(tmp_path):
    import os
    from nclab.data.cache import listing_checksum
    (tmp_path / "a.bin").write_bytes(b"1234")
    before = listing_checksum(tmp_path, ["a.bin"])
    (tmp_path / "a.bin").write_bytes(b"5678")  # same size: only the mtime tells
    st = (tmp_path / "a.bin").stat()
    os.utime(tmp_path / "a.bin", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert listing_checksum(tmp_path, ["a.bin"]) != before


def test_random_hierarchy_is_a_seeded_balanced_grouping_numbered_by_smallest_fine_class():
    # written from the builder's comments: perm = default_rng(SEED).permutation(n), fine class perm[i] joins
    # group i mod K, and the groups are numbered by their smallest fine class
    from nclab.data import build_hierarchy
    n, k = 10, 3
    names = [f"f{i}" for i in range(n)]
    for seed in range(8):  # several seeds: for some the groups come out in order without renumbering
        h = build_hierarchy(f"random:{seed}:{k}", names)
        perm = np.random.default_rng(seed).permutation(n)
        groups = sorted((sorted(int(f) for f in perm[i::k]) for i in range(k)), key=min)  # numbered in order
        assert [h.fine_classes(c) for c in range(k)] == groups, seed
