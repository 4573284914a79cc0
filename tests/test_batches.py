"""BatchIterator and augmentation: order/augmentation are pure functions of (seed, epoch, step)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nclab.data.augment import Augment, random_translate
from nclab.data.batches import BatchIterator, mix_seed
from nclab.utils.errors import NclabError


def _images(n=37, c=3, h=8, w=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8), torch.arange(n) % 5


def _collect(it):
    xs, ys = zip(*list(it))
    return torch.cat(xs), torch.cat(ys)


def test_epoch_is_a_permutation_and_pure_in_seed_epoch():
    x, y = _images()
    a = BatchIterator(x, y, 8, shuffle=True, seed=3)
    b = BatchIterator(x, y, 8, shuffle=True, seed=3)
    assert len(a) == 5
    a.set_epoch(2)
    b.set_epoch(2)
    torch.manual_seed(123)  # the global RNG must not matter
    xa, ya = _collect(a)
    torch.manual_seed(999)
    xb, yb = _collect(b)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert sorted(ya.tolist()) == sorted(y.tolist())  # every sample once
    order = a.order(2)
    assert torch.equal(ya, y[order])
    assert not torch.equal(a.order(2), a.order(3))
    assert not torch.equal(a.order(2), BatchIterator(x, y, 8, shuffle=True, seed=4).order(2))


def test_drop_last_and_no_shuffle_identity():
    x, y = _images()
    it = BatchIterator(x, y, 8, shuffle=False, drop_last=True)
    assert len(it) == 4 and all(len(b[1]) == 8 for b in it)
    xs, ys = _collect(BatchIterator(x, y, 8))
    assert torch.equal(ys, y)


def test_normalisation_matches_manual():
    x, y = _images()
    mean, std = [0.1, 0.5, 0.9], [0.2, 0.3, 0.4]
    xs, _ = _collect(BatchIterator(x, y, 10, mean=mean, std=std))
    ref = ((x.double() / 255 - torch.tensor(mean).double().view(1, 3, 1, 1))
           / torch.tensor(std).double().view(1, 3, 1, 1))
    torch.testing.assert_close(xs.double(), ref, atol=1e-5, rtol=1e-5)
    assert xs.dtype == torch.float32


def test_vectors_normalised_per_feature():
    x = torch.randn(10, 4) * 3 + 1
    y = torch.zeros(10, dtype=torch.int64)
    mean, std = x.mean(0).tolist(), x.std(0).tolist()
    xs, _ = _collect(BatchIterator(x, y, 4, mean=mean, std=std))
    torch.testing.assert_close(xs.mean(0), torch.zeros(4), atol=1e-5, rtol=0)


def test_random_translate_matches_reflect_pad_reference():
    x, _ = _images(n=6, h=7, w=9)
    pad = 3
    dy = torch.tensor([0, 6, 3, 1, 5, 2])
    dx = torch.tensor([6, 0, 3, 4, 2, 5])
    out = random_translate(x, dy, dx, pad)
    xp = F.pad(x.float(), (pad,) * 4, mode="reflect").to(torch.uint8)
    for i in range(6):
        assert torch.equal(out[i], xp[i, :, dy[i]:dy[i] + 7, dx[i]:dx[i] + 9])
    # shift by exactly pad = identity
    assert torch.equal(random_translate(x, torch.full((6,), pad), torch.full((6,), pad), pad), x)


def test_flip_is_identity_or_mirror_and_seeded():
    x, _ = _images(n=64)
    aug = Augment(crop=0, flip=True)
    out = aug(x, torch.Generator().manual_seed(0))
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(3)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and 10 < int(mirrored.sum()) < 54
    assert torch.equal(out, aug(x, torch.Generator().manual_seed(0)))


def test_augmented_batches_depend_on_epoch_and_step_only():
    x, y = _images(n=32)
    kw = dict(shuffle=True, seed=1, augment=Augment(crop=2, flip=True))
    a, b = BatchIterator(x, y, 16, **kw), BatchIterator(x, y, 16, **kw)
    a.set_epoch(1)
    b.set_epoch(1)
    xa, _ = _collect(a)
    xb, _ = _collect(b)
    assert torch.equal(xa, xb)
    b.set_epoch(2)
    assert not torch.equal(xa, _collect(b)[0])


def test_channels_last_and_errors():
    x, y = _images()
    xb, _ = next(iter(BatchIterator(x, y, 8, channels_last=True)))
    assert xb.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(NclabError):
        BatchIterator(x, y[:3], 8)
    with pytest.raises(NclabError):
        BatchIterator(torch.randn(5, 3), torch.zeros(5, dtype=torch.int64), 2, augment=Augment(2, True))
    with pytest.raises(NclabError):
        Augment(crop=-1)


def test_mix_seed_is_stable():
    assert mix_seed(1, 2) == mix_seed(1, 2) != mix_seed(2, 1)
    assert 0 <= mix_seed(2**40, 7) < 2**63


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
