"""Hierarchy builders: ``build_hierarchy(spec, class_names)`` and the pseudo-label maker ``split_labels``.

Specs (K = number of coarse classes, n = number of fine classes):

- ``identity``           coarse = fine.
- ``mod:K``              coarse = fine mod K (CIFAR-10, K=5: airplane+dog, automobile+frog, ...).
- ``adjacent:K``         coarse = floor(fine * K / n) (= fine // m when K divides n; airplane+automobile, ...).
- ``random:SEED[:K]``    a balanced random grouping (sizes differ by at most 1); K defaults to n // 2.
- ``cifar100``           the official 20 CIFAR-100 superclasses (class names must be the official 100).
- ``file:PATH``          YAML/JSON: ``{coarse_name: [fine names or indices]}``, a list of such lists, or
                         ``{fine_to_coarse: [...], coarse_names: [...]}``.
- ``split:M[:SEED]``     finer-than-intrinsic labels: each true class c is split into M pseudo classes
                         c*M .. c*M+M-1 (hierarchy.fine = pseudo classes, hierarchy.coarse = the true classes);
                         make the pseudo labels with :func:`split_labels` (shuffled by SEED; without it, by the
                         training run's seed).
- ``dataset`` (or empty) the dataset's own hierarchy (CIFAR-100 superclasses, synthetic groups).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from nclab.data.hierarchy import Hierarchy
from nclab.utils.errors import NclabError
from nclab.utils.seed import check_seed

KINDS = ("identity", "mod:K", "adjacent:K", "random:SEED[:K]", "cifar100", "file:PATH", "split:M[:SEED]", "dataset")


def _int(text: str, what: str, spec: str) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        raise NclabError(f"hierarchy '{spec}': {what} must be an integer, got '{text}'") from None


def _check_k(k: int, n: int, spec: str) -> None:
    if not 1 <= k <= n:
        raise NclabError(f"hierarchy '{spec}': K={k} coarse classes needs 1 <= K <= {n} (the number of fine classes)")


def build_hierarchy(spec: str, class_names: Sequence[str], dataset=None) -> Hierarchy:
    """A validated :class:`Hierarchy` over ``class_names`` from ``spec`` (see the module docstring)."""
    names = [str(c) for c in class_names]
    n = len(names)
    if n == 0:
        raise NclabError("cannot build a hierarchy over zero classes")
    spec = (spec or "").strip() or "dataset"  # no spec: the dataset's own hierarchy
    kind, _, rest = spec.partition(":")
    kind = kind.lower()
    if kind == "identity":
        return Hierarchy(np.arange(n), names, names, spec=spec)
    if kind == "mod":
        k = _int(rest, "K", spec)
        _check_k(k, n, spec)
        return Hierarchy.from_mapping(np.arange(n) % k, names, spec=spec)
    if kind == "adjacent":
        k = _int(rest, "K", spec)
        _check_k(k, n, spec)
        return Hierarchy.from_mapping(np.arange(n) * k // n, names, spec=spec)
    if kind == "random":
        parts = rest.split(":") if rest else []
        if not 1 <= len(parts) <= 2:
            raise NclabError(f"hierarchy '{spec}': use random:SEED or random:SEED:K")
        seed = _seed(parts[0], spec)
        k = _int(parts[1], "K", spec) if len(parts) == 2 else max(1, n // 2)
        _check_k(k, n, spec)
        perm = np.random.default_rng(seed).permutation(n)
        f2c = np.empty(n, dtype=np.int64)
        f2c[perm] = np.arange(n) % k  # balanced: group sizes differ by at most one
        # renumber coarse classes by their smallest fine class, so names read in order
        order = np.argsort([np.flatnonzero(f2c == c).min() for c in range(k)])
        f2c = np.argsort(order)[f2c]
        h = Hierarchy.from_mapping(f2c, names, spec=spec)
        h.meta["seed"] = seed
        return h
    if kind == "cifar100":
        return _cifar100(names, spec)
    if kind == "file":
        if not rest:
            raise NclabError("hierarchy 'file:' needs a path: file:PATH (YAML or JSON)")
        return _from_file(Path(rest).expanduser(), names, spec)
    if kind == "split":
        parts = rest.split(":") if rest else []
        if not 1 <= len(parts) <= 2:
            raise NclabError(f"hierarchy '{spec}': use split:M or split:M:SEED")
        m = _int(parts[0], "M", spec)
        seed = _seed(parts[1], spec) if len(parts) == 2 else None  # None: the caller's (a run's seed)
        if not 1 <= m <= 1000:
            raise NclabError(f"hierarchy '{spec}': M must be between 1 and 1000 pseudo classes per class, got {m}")
        fine = [f"{c}.{j}" for c in names for j in range(m)]
        return Hierarchy(np.arange(n * m) // m, fine, names, spec=spec, meta={"split": m, "seed": seed}, kind="split")
    if kind == "dataset":
        h = getattr(dataset, "hierarchy", None)
        if h is None:
            raise NclabError("hierarchy 'dataset': this dataset has no hierarchy of its own; use e.g. mod:K")
        if list(h.fine_names) != names:
            raise NclabError("hierarchy 'dataset': the dataset's hierarchy does not match these class names")
        return h
    raise NclabError(f"unknown hierarchy '{spec}'; use one of: {', '.join(KINDS)}")


def _cifar100(names: list[str], spec: str) -> Hierarchy:
    from nclab.data.cifar_meta import CIFAR100_COARSE, CIFAR100_FINE, CIFAR100_FINE_TO_COARSE

    if len(names) != len(CIFAR100_FINE):
        raise NclabError(f"hierarchy 'cifar100' needs the 100 CIFAR-100 classes, got {len(names)} classes")
    for i, (got, want) in enumerate(zip(names, CIFAR100_FINE)):
        if got != want:
            raise NclabError(f"hierarchy 'cifar100': class {i} is '{got}', expected the official '{want}'")
    return Hierarchy(np.asarray(CIFAR100_FINE_TO_COARSE), names, list(CIFAR100_COARSE), spec=spec or "cifar100")


def _fine_index(entry, names: list[str], where: str) -> int:
    if isinstance(entry, bool):
        raise NclabError(f"{where}: entry {entry!r} is neither a class name nor an index")
    if isinstance(entry, int):
        if not 0 <= entry < len(names):
            raise NclabError(f"{where}: fine index {entry} is outside 0..{len(names) - 1}")
        return entry
    if isinstance(entry, str):
        if entry in names:
            return names.index(entry)
        if entry.strip().lstrip("-").isdigit():
            return _fine_index(int(entry), names, where)
        raise NclabError(f"{where}: unknown fine class '{entry}' (classes: {', '.join(names[:12])}"
                         f"{', ...' if len(names) > 12 else ''})")
    raise NclabError(f"{where}: entry {entry!r} is neither a class name nor an index")


def _from_file(path: Path, names: list[str], spec: str) -> Hierarchy:
    if not path.is_file():
        raise NclabError(f"hierarchy file {path} not found; give file:PATH to a YAML or JSON mapping")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise NclabError(f"hierarchy file {path} is not UTF-8 text; give file:PATH to a YAML or JSON mapping") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            from nclab.utils.yamlio import safe_load_unique

            data = safe_load_unique(text)  # a class listed twice must not silently take the second group
    except Exception as e:  # noqa: BLE001 - any parse error is the user's file
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise NclabError(f"hierarchy file {path} is not valid YAML/JSON: {msg}") from None
    n = len(names)
    coarse_names: list[str] | None = None
    if isinstance(data, dict) and "fine_to_coarse" in data:
        f2c = data["fine_to_coarse"]
        if not isinstance(f2c, list) or len(f2c) != n:
            raise NclabError(f"hierarchy file {path}: fine_to_coarse must list one coarse index per fine class ({n})")
        for i, c in enumerate(f2c):
            if not isinstance(c, int) or isinstance(c, bool) or c < 0:
                raise NclabError(f"hierarchy file {path}: fine_to_coarse[{i}] = {c!r} is not a coarse index >= 0")
        coarse_names = data.get("coarse_names")
        if coarse_names is not None and not isinstance(coarse_names, list):
            raise NclabError(f"hierarchy file {path}: coarse_names must be a list of names, got {coarse_names!r}")
        groups = None
        mapping = np.asarray(f2c, dtype=np.int64)
    else:
        if isinstance(data, dict):
            coarse_names = [str(k) for k in data]
            groups = list(data.values())
        elif isinstance(data, list):
            groups = data
        else:
            raise NclabError(f"hierarchy file {path}: expected a mapping coarse -> [fine classes] or a list of lists")
        mapping = np.full(n, -1, dtype=np.int64)
        for c, group in enumerate(groups):
            label = coarse_names[c] if coarse_names else f"group {c}"
            where = f"hierarchy file {path}, coarse '{label}'"
            if not isinstance(group, list) or not group:
                raise NclabError(f"{where}: needs a non-empty list of fine classes")
            for entry in group:
                f = _fine_index(entry, names, where)
                if mapping[f] >= 0:
                    raise NclabError(f"{where}: fine class '{names[f]}' is already in another coarse class")
                mapping[f] = c
        missing = [names[f] for f in np.flatnonzero(mapping < 0)]
        if missing:
            raise NclabError(f"hierarchy file {path}: fine class '{missing[0]}' is in no coarse class"
                             f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''}")
    if coarse_names is not None:
        k = int(mapping.max()) + 1
        if len(coarse_names) < k:
            raise NclabError(f"hierarchy file {path}: {len(coarse_names)} coarse names for {k} coarse classes")
        return Hierarchy(mapping, names, [str(c) for c in coarse_names], spec=spec)
    return Hierarchy.from_mapping(mapping, names, spec=spec)


def _seed(text: str, spec: str) -> int:
    return check_seed(_int(text, "SEED", spec), f"hierarchy '{spec}': SEED")


def split_labels(y, hierarchy: Hierarchy, seed: int | None = None):
    """Pseudo labels for a ``split:M`` hierarchy: the samples of true class c (in the order they appear in ``y``)
    are shuffled by ``seed`` and dealt round-robin to pseudo classes c*M .. c*M+M-1 (balanced: sizes differ by
    at most one). ``y`` holds true labels (numpy or torch; same type back). The spec's SEED (``split:M:SEED``)
    wins; without one, ``seed`` (a training run passes its own seed), else 0."""
    m = hierarchy.meta.get("split")
    if not m:
        raise NclabError(f"split_labels needs a split:M hierarchy, got '{hierarchy.spec}'")
    if hierarchy.meta.get("seed") is not None:
        seed = hierarchy.meta["seed"]
    seed = int(seed or 0)
    is_torch = False
    try:
        import torch

        is_torch = isinstance(y, torch.Tensor)
    except ImportError:  # pragma: no cover
        pass
    yn = y.detach().cpu().numpy() if is_torch else np.asarray(y)
    yn = yn.astype(np.int64)
    if yn.size and (yn.min() < 0 or yn.max() >= hierarchy.num_coarse):
        raise NclabError(f"split_labels: labels must be in 0..{hierarchy.num_coarse - 1}, got {yn.min()}..{yn.max()}")
    out = np.empty_like(yn)
    sizes = np.bincount(yn, minlength=hierarchy.num_coarse)
    if yn.size and sizes[sizes > 0].min() < m:  # some pseudo classes would get no sample at all
        c = int(np.flatnonzero((sizes > 0) & (sizes < m))[0])
        raise NclabError(f"hierarchy '{hierarchy.spec}': class {hierarchy.coarse_names[c]} has {int(sizes[c])} "
                         f"samples, fewer than its {m} pseudo classes; use a smaller M")
    for c in range(hierarchy.num_coarse):
        idx = np.flatnonzero(yn == c)
        rng = np.random.default_rng([seed, c])
        out[idx[rng.permutation(idx.size)]] = c * m + np.arange(idx.size) % m
    if is_torch:
        return torch.from_numpy(out).to(y.device)
    return out


def hierarchy_from_arg(spec: str, n_fine: int) -> Hierarchy:
    """The hierarchy a ``--hierarchy`` argument names over fine classes ``0..n_fine-1``: a
    ``Hierarchy.to_dict()`` JSON file (a path ending in ``.json``) or any :func:`build_hierarchy` spec
    (``mod:5``, ``adjacent:5``, ``file:PATH`` …)."""
    bare_json = spec.endswith(".json") and ":" not in spec  # a Hierarchy.to_dict() file (file:PATH is a spec)
    if bare_json and not Path(spec).is_file():
        raise NclabError(f"--hierarchy {spec} not found; pass a Hierarchy JSON file or a spec like mod:5")
    if bare_json:
        try:
            return Hierarchy.from_dict(json.loads(Path(spec).read_text()))
        except (KeyError, TypeError, AttributeError, ValueError) as e:  # JSONDecodeError is a ValueError
            raise NclabError(f"--hierarchy {spec} is not a hierarchy JSON ({type(e).__name__}: {e}); write "
                             "Hierarchy.to_dict() to it")
    return build_hierarchy(spec, [str(i) for i in range(n_fine)])
