"""Forward hooks that capture named layers of any ``nn.Module`` as per-sample feature matrices.

    with LayerTaps(model, ["layer3", "layer4", "fc"]) as taps:
        feats = taps(x)                 # {name: (N, D) tensor}, one forward pass of model(x)
        taps.reductions                 # {name: "flatten" | "spatial_mean" | ...} how each was made 2-D

A layer's feature is its module's *output* (``name + ":input"`` takes the module's first positional input
instead, e.g. ``fc:input`` = the features the classifier sees). Outputs are made 2-D by ``reduce``:

* ``"auto"`` (default): 2-D outputs as they are (``"identity"``), 4-D maps (N, C, H, W) averaged over H, W
  (``"spatial_mean"``), every other shape flattened (``"flatten"``);
* ``"flatten"``: always (N, prod(rest)); ``"mean"``: 4-D and wider maps (N, C, ...) averaged over every axis
  after the channels -> (N, C); 3-D (N, T, D) token sequences averaged over the tokens -> (N, D)
  (``"token_mean"``);
* ``"tokens"``: (N, T, D) -> (N·T, D), every position a sample (language models).

A module returning a tuple or list whose first element is a tensor (Hugging Face blocks return
``(hidden_states, ...)``) contributes that element (the reduction is then prefixed ``"first:"``); any other
non-tensor output is an error naming the layer.
"""

from __future__ import annotations

import fnmatch
from typing import Iterable, Sequence

import torch
from torch import nn

from nclab.utils.errors import NclabError

REDUCTIONS = ("auto", "flatten", "mean", "tokens")
INPUT_SUFFIX = ":input"


def layer_names(model: nn.Module) -> list[str]:
    """Every named submodule of ``model`` in registration order (the root, named ``""``, left out)."""
    return [n for n, _ in model.named_modules() if n]


def block_names(model: nn.Module) -> list[str]:
    """``all-blocks``: the children of every ``nn.Sequential``/``nn.ModuleList`` whose children (at least two)
    are all of one class — the repeated blocks of a network (torchvision ``layer1.0`` … ``layer4.1``, timm
    ``blocks.0`` …, GPT-2 ``transformer.h.0`` …), in forward order."""
    out: list[str] = []
    for name, mod in model.named_modules():
        if not isinstance(mod, (nn.Sequential, nn.ModuleList)):
            continue
        kids = list(mod.named_children())
        if len(kids) >= 2 and len({type(m) for _, m in kids}) == 1:
            out += [f"{name}.{k}" if name else k for k, _ in kids]
    return out


def resolve_layers(model: nn.Module, layers: str | Sequence[str]) -> list[str]:
    """Layer names from a comma list / sequence of names, glob patterns (``blocks.*``), ``all-blocks``
    and ``NAME:input``. Order kept, duplicates dropped; an unknown name or a pattern matching nothing is an
    error that lists close names."""
    items = [s.strip() for s in (layers.split(",") if isinstance(layers, str) else layers) if str(s).strip()]
    if not items:
        raise NclabError("no layers given; pass --layers NAME[,NAME...] (see --list-layers MODEL for the names)")
    names = layer_names(model)
    known = set(names)
    out: list[str] = []
    for item in items:
        if item == "all-blocks":
            found = block_names(model)
            if not found:
                raise NclabError("all-blocks found no repeated blocks in this model; name the layers instead "
                                 "(see --list-layers)")
        elif any(ch in item for ch in "*?["):
            # a pattern matches whole dotted names at one depth: blocks.* is blocks.0, blocks.1 (not blocks.0.attn)
            depth = item.count(".")
            found = [n for n in names if n.count(".") == depth and fnmatch.fnmatchcase(n, item)]
            if not found:
                raise NclabError(f"layer pattern {item!r} matches no module; see --list-layers for the names")
        else:
            base = item[: -len(INPUT_SUFFIX)] if item.endswith(INPUT_SUFFIX) else item
            if base not in known:
                import difflib

                close = difflib.get_close_matches(base, names, n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise NclabError(f"unknown layer {base!r}{hint}; see --list-layers for the module names")
            found = [item]
        out += [f for f in found if f not in out]
    return out


def reduce_output(t: torch.Tensor, reduce: str = "auto", upcast: bool = False) -> tuple[torch.Tensor, str]:
    """``t`` (N, ...) as a 2-D feature matrix and the name of the reduction used (see module docstring).
    ``upcast``: a bfloat16/float16 ``t`` gives float32 features (a mean accumulated and returned in float32)."""
    low = upcast and t.dtype in (torch.bfloat16, torch.float16)
    f, how = _reduce(t, reduce, torch.float32 if low else None)
    return (f.float() if low else f), how


def _reduce(t: torch.Tensor, reduce: str, acc) -> tuple[torch.Tensor, str]:
    if reduce not in REDUCTIONS:
        raise NclabError(f"unknown reduction {reduce!r}; use one of {', '.join(REDUCTIONS)}")
    if t.dim() == 0:
        raise NclabError("a layer output is a scalar; pick a layer whose output has a batch axis")
    if t.dim() == 1:
        return t.unsqueeze(1), "identity"
    if reduce == "tokens":
        if t.dim() != 3:
            raise NclabError(f"token-level features need (batch, tokens, dim) outputs, got shape {tuple(t.shape)}")
        return t.reshape(-1, t.shape[2]), "tokens"
    if t.dim() == 2:
        return t, "identity"
    if reduce == "flatten" or (reduce == "auto" and t.dim() != 4):
        return t.flatten(1), "flatten"
    if t.dim() == 3:  # (N, T, D) token sequences: the mean over tokens
        return t.mean(1, dtype=acc), "token_mean"
    return t.flatten(2).mean(2, dtype=acc), ("spatial_mean" if t.dim() == 4 else "mean")


class LayerTaps:
    """Capture named layers of ``model`` during its forward pass (a context manager; hooks removed on exit).

    ``LayerTaps(model, layers, reduce="auto", detach=True)``; ``taps(x)`` runs ``model(x)`` and returns
    ``{name: (N, D) tensor}`` in the order of ``layers``; for a forward that needs other arguments run it
    yourself inside ``taps.capture()`` and read ``taps.features``. ``taps.reductions`` names the reduction
    per layer, ``taps.shapes`` the raw output shapes. ``stop_early=True`` ends the forward pass as soon as every
    layer is captured (its output is then ``None``). ``upcast=True``: bfloat16/float16 outputs (an autocast
    forward pass) give float32 features, their means accumulated in float32.
    """

    def __init__(self, model: nn.Module, layers: str | Sequence[str], *, reduce: str = "auto",
                 detach: bool = True, stop_early: bool = False, upcast: bool = False):
        if reduce not in REDUCTIONS:
            raise NclabError(f"unknown reduction {reduce!r}; use one of {', '.join(REDUCTIONS)}")
        self.model = model
        self.layers = resolve_layers(model, layers)
        self.reduce = reduce
        self.detach = detach
        self.stop_early = stop_early
        self.upcast = upcast
        self.features: dict[str, torch.Tensor] = {}
        self.reductions: dict[str, str] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self._handles: list = []
        self._active = False

    # hooks ---------------------------------------------------------------------------------------
    def _store(self, name: str, value) -> None:
        if not self._active:
            return
        prefix = ""
        if not isinstance(value, torch.Tensor) and isinstance(value, (tuple, list)) and value \
                and isinstance(value[0], torch.Tensor):
            value, prefix = value[0], "first:"
        if not isinstance(value, torch.Tensor):
            raise NclabError(f"layer {name!r} returns {type(value).__name__}, not a tensor; pick a layer whose "
                             "output is a tensor (see --list-layers)")
        self.shapes[name] = tuple(value.shape)
        t = value.detach() if self.detach else value
        t, how = reduce_output(t, self.reduce, self.upcast)
        self.features[name] = t
        self.reductions[name] = prefix + how
        if self.stop_early and len(self.features) == len(self.layers):
            raise _Done()

    def __enter__(self) -> "LayerTaps":
        mods = dict(self.model.named_modules())
        for name in self.layers:
            if name.endswith(INPUT_SUFFIX):
                mod = mods[name[: -len(INPUT_SUFFIX)]]
                h = mod.register_forward_pre_hook(
                    lambda m, args, n=name: self._store(n, args[0] if args else None))
            else:
                h = mods[name].register_forward_hook(lambda m, args, out, n=name: self._store(n, out))
            self._handles.append(h)
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Remove the hooks (also done on leaving the ``with`` block)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    # running -------------------------------------------------------------------------------------
    def capture(self) -> "_Capture":
        """Context for a forward pass run by the caller: clears ``features``, checks every layer fired."""
        return _Capture(self)

    def __call__(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        """Run ``model(*args, **kwargs)`` and return ``{name: (N, D)}`` for the requested layers."""
        if not self._handles:
            raise RuntimeError("LayerTaps must be entered (with LayerTaps(...) as taps) before it is called")
        with self.capture():
            self.model(*args, **kwargs)
        return dict(self.features)


class _Done(Exception):
    """Raised inside a hook to end a forward pass once every requested layer is captured."""


class _Capture:
    def __init__(self, taps: LayerTaps):
        self.taps = taps

    def __enter__(self) -> LayerTaps:
        self.taps.features = {}
        self.taps._active = True
        return self.taps

    def __exit__(self, typ, exc, tb) -> bool:
        self.taps._active = False
        if typ is _Done:
            exc = None
        if exc is not None:
            return False
        missing = [n for n in self.taps.layers if n not in self.taps.features]
        if missing:
            raise NclabError(f"layer(s) {missing} never ran in the forward pass (unused modules); "
                             "pick layers the model's forward calls (see --list-layers)")
        self.taps.features = {n: self.taps.features[n] for n in self.taps.layers}
        return typ is _Done


def list_layers(model: nn.Module, example: torch.Tensor | dict, *, reduce: str = "auto") -> list[dict]:
    """One dummy forward pass of ``example`` (a batch tensor, or a dict of keyword inputs) with a hook on every
    named module: ``[{"name", "type", "shape" (raw output shape or None), "dim" (features per sample after
    ``reduce`` or None), "reduction" or "note"}]`` in registration order; modules the forward never calls or
    that return no tensor say so in ``note``."""
    rows: dict[str, dict] = {}
    handles = []

    def hook(name, mod):
        def f(m, args, out):
            if name in rows:
                return  # a module called twice (shared): keep the first call
            row = {"name": name, "type": type(mod).__name__, "shape": None, "dim": None}
            value = out[0] if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor) else out
            if isinstance(value, torch.Tensor) and value.dim() >= 1:
                r, how = reduce_output(value.detach(), reduce)
                row.update(shape=list(value.shape), dim=int(r.shape[1]),
                           reduction=("first:" if value is not out else "") + how)
            else:
                row["note"] = f"returns {type(out).__name__}, not a tensor"
            rows[name] = row
        return f

    names = layer_names(model)
    mods = dict(model.named_modules())
    try:
        for n in names:
            handles.append(mods[n].register_forward_hook(hook(n, mods[n])))
        with torch.no_grad():
            model(**example) if isinstance(example, dict) else model(example)
    finally:
        for h in handles:
            h.remove()
    return [rows.get(n, {"name": n, "type": type(mods[n]).__name__, "shape": None, "dim": None,
                         "note": "not called by forward"}) for n in names]


def iter_linear(model: nn.Module) -> Iterable[tuple[str, nn.Linear]]:
    """Named ``nn.Linear`` modules (candidates for ``--classifier``)."""
    return ((n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear))


__all__ = ["LayerTaps", "resolve_layers", "block_names", "layer_names", "reduce_output", "list_layers",
           "REDUCTIONS", "INPUT_SUFFIX"]
