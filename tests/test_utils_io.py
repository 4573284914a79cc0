"""Atomic writes, weights-only loading and JSON helpers (nclab.utils.io)."""

import json
import os
import pickle

import numpy as np
import pytest
import torch

from nclab.utils.errors import NclabError

from nclab.utils.io import (
    atomic_save_npy,
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    json_clean,
    read_jsonl,
    torch_load,
)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "results.json"
    atomic_write_json(path, {"acc": 0.9})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"acc": 0.95, "oops": object()})  # fails half-way through serialising
    assert json.loads(path.read_text()) == {"acc": 0.9}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]  # the temp file was removed


def test_atomic_files_get_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        p = atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert p.read_text() == "x" and (p.stat().st_mode & 0o777) == 0o644  # not mkstemp's 0600


def test_torch_round_trip_and_weights_only_refuses_arbitrary_objects(tmp_path):
    state = {"w": torch.arange(6.0).reshape(2, 3), "epoch": 3, "rng": torch.get_rng_state()}
    got = torch_load(atomic_torch_save(tmp_path / "ckpt.pt", state))
    assert torch.equal(got["w"], state["w"]) and got["epoch"] == 3 and torch.equal(got["rng"], state["rng"])
    bad = tmp_path / "evil.pt"
    torch.save({"payload": _Arbitrary()}, bad)  # a pickled object of a user class
    with pytest.raises(pickle.UnpicklingError):
        torch_load(bad)


class _Arbitrary:
    pass


def test_npy_round_trip(tmp_path):
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    p = atomic_save_npy(tmp_path / "f.npy", x)
    assert p.name == "f.npy" and np.array_equal(np.load(p, allow_pickle=False), x)


def test_read_jsonl_ignores_a_torn_last_line_and_json_clean_maps_non_finite_to_null(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"epoch": 1}\n\n{"epoch": 2}\n{"epoch": 3, "lo')
    assert read_jsonl(p) == [{"epoch": 1}, {"epoch": 2}]
    assert read_jsonl(tmp_path / "missing.jsonl") == []
    clean = json_clean({"a": np.float32(0.5), "b": [float("nan"), np.inf], "c": np.arange(2), "d": (1, 2.0)})
    assert clean == {"a": 0.5, "b": [None, None], "c": [0, 1], "d": [1, 2.0]}
    assert json.loads(json.dumps(clean, allow_nan=False)) == clean  # strict JSON: no NaN/Infinity tokens


def test_a_damaged_middle_line_of_metrics_jsonl_is_an_error_not_a_shorter_history(tmp_path):
    # reading stopped at the first bad line: a report then showed epoch 1's accuracy as the final one
    p = tmp_path / "metrics.jsonl"
    p.write_text('{"epoch": 1}\n{"epoch": 2, "tes\n{"epoch": 3}\n')
    with pytest.raises(NclabError, match=r"line 2 is not valid JSON .* later lines follow"):
        read_jsonl(p)
    p.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3, "tes')  # a torn last line is a crash mid-write
    assert read_jsonl(p) == [{"epoch": 1}, {"epoch": 2}]
