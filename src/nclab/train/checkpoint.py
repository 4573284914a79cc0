"""Checkpoint payloads: everything needed to continue a run bit-for-bit (CPU).

Saved with ``atomic_torch_save`` and loaded with ``weights_only=True``, so only tensors and plain
Python containers go in: RNG states are converted to tensors/lists.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def rng_state() -> dict:
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_version, "internal": list(py_internal), "gauss": py_gauss},
    }


def set_rng_state(state: dict) -> None:
    # RNG states must be CPU ByteTensors, whatever map_location the checkpoint was loaded with
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))


# What a resumable checkpoint must hold (save_checkpoint writes all of these), with the types load_checkpoint
# relies on; a weights-only read needs just "model".
RESUME_FIELDS: dict[str, tuple[type, ...]] = {
    "model": (dict,), "optimizer": (dict,), "rng": (dict,), "epoch": (int,), "global_step": (int,),
    "metrics": (list,), "elapsed_s": (int, float),
}


def _fix(path) -> str:
    return f"delete {path} and restart the run (or restore it from a copy)"


def check_checkpoint(state: object, path, *, resume: bool) -> dict:
    """``state`` as loaded from ``path``, checked: a mapping with a ``model`` state dict of tensors and, with
    ``resume``, every field of :data:`RESUME_FIELDS` with its type. Raises one NclabError line naming the file,
    the problem and the fix; returns ``state``."""
    from nclab.utils.errors import NclabError

    if not isinstance(state, dict):
        raise NclabError(f"checkpoint {path} holds a {type(state).__name__}, not an nclab checkpoint (a mapping "
                         f"with 'model', 'optimizer', ...); {_fix(path)}")
    fields = RESUME_FIELDS if resume else {"model": (dict,)}
    missing = [k for k in fields if k not in state]
    if missing:
        raise NclabError(f"checkpoint {path} lacks {', '.join(repr(k) for k in missing)}; {_fix(path)}")
    for k, types in fields.items():
        v = state[k]
        if not isinstance(v, types) or isinstance(v, bool):
            raise NclabError(f"checkpoint {path} has {k!r} of type {type(v).__name__}, expected "
                             f"{' or '.join(t.__name__ for t in types)}; {_fix(path)}")
    bad = [k for k, v in state["model"].items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise NclabError(f"checkpoint {path}: its 'model' entry {bad[0]!r} is not a tensor; {_fix(path)}")
    if resume:
        opt = state["optimizer"]
        if not isinstance(opt.get("param_groups"), list) or not isinstance(opt.get("state"), dict):
            raise NclabError(f"checkpoint {path} has an 'optimizer' entry without param_groups/state; {_fix(path)}")
        rng = state["rng"]
        if not isinstance(rng.get("torch"), torch.Tensor) or not isinstance(rng.get("numpy"), dict) \
                or not isinstance(rng.get("python"), dict):
            raise NclabError(f"checkpoint {path} has an 'rng' entry of the wrong shape; {_fix(path)}")
        if "num_classes" in state and (not isinstance(state["num_classes"], int)
                                       or isinstance(state["num_classes"], bool)):
            raise NclabError(f"checkpoint {path} has 'num_classes' of type {type(state['num_classes']).__name__}; "
                             f"{_fix(path)}")
    return state


def read_checkpoint(path, *, map_location, resume: bool) -> dict:
    """Load ``path`` with :func:`nclab.utils.io.torch_load` (``weights_only=True``, torch's warnings silenced, so
    an unreadable file gets one error line) and :func:`check_checkpoint` it."""
    from nclab.utils.errors import NclabError
    from nclab.utils.io import torch_load

    try:
        state = torch_load(path, map_location=map_location)
    except Exception as e:
        raise NclabError(f"checkpoint {path} cannot be read ({type(e).__name__}); it may be truncated or not a "
                         f"checkpoint; {_fix(path)}") from None
    return check_checkpoint(state, path, resume=resume)
