"""Group metrics.jsonl keys into figures (see docs/architecture.md for the key names).

``nc.<split>.<labels>.<metric>`` — last-layer NC metrics, one figure per label set, one panel per metric;
``nc.<split>.<labels>.<tap>.<metric>`` — per-layer metrics, one panel per metric, one line per tap;
``nc.<split>.fine_within_coarse.<mean|coarse_idx>`` — one panel per split; ``recovery.*`` — one panel.
Whatever else is numeric goes into "other logged values", so nothing logged is silently dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from nclab.report.figures import Line, Panel, fine_color
from nclab.report.html import is_acc_key

SKIP = {"time_s", "epoch_time_s", "images_per_s", "wall_time_s", "recovery.time_s", "train_time_s",
        "train_time_total_s"}
LABEL_ORDER = {"coarse": 0, "fine": 1, "trained": 2}
SPLIT_STYLE = {"train": "-", "test": "--"}
SPLIT_COLOR = {"train": "#1f77b4", "test": "#d62728"}
SPLIT_ORDER = {"train": 0, "test": 1}
FWC = "fine_within_coarse"


# The paper quantities (Papyan et al. 2020 naming) and the nclab.collapse keys that measure them.
# (title, y label, metric keys drawn in that panel, log scale)
NC_PANELS = [
    ("NC1: within-class variability", "nc1 = tr(Σ_W Σ_B⁺)/K (log scale)", ["nc1"], True),
    ("NC1: class-distance normalised variance", "CDNV (log scale)", ["cdnv"], True),
    ("NC2: distance to a simplex ETF", "ETF error (relative Frobenius)", ["etf_error_means", "etf_error_weights"], False),
    ("NC2: equal norms", "std/mean of norms", ["equinorm_means", "equinorm_weights"], False),
    ("NC2: equal angles", "std of pairwise cosines", ["equiangular_means", "equiangular_weights"], False),
    ("NC3: self-duality", "‖W/‖W‖ − M̃/‖M̃‖‖² (M̃ centred means)", ["self_duality"], False),
    ("NC4: nearest-class-centre agreement", "fraction of disagreement", ["ncc_mismatch"], False),
]
# Counts and bookkeeping, not curves.
HIDDEN = {"n_samples", "n_classes", "time_s"}
# With K = 2 classes the centred means satisfy n_0 m_0 = -n_1 m_1: their norms ratio, their one angle and so their
# distance to the 2-class ETF are fixed by the class counts, and a single pair of weight rows has one angle (no
# spread). These curves are flat by construction, so the report leaves them out rather than show "collapse".
CONSTANT_AT_K2 = ("etf_error_means", "equinorm_means", "equiangular_means", "equiangular_weights", "maxangle_means",
                  "maxangle_weights")
# Per-layer figure: one panel per metric (line per tap) for these, in this order.
LAYER_METRICS = ["nc1", "cdnv", "etf_error_means", "equinorm_means", "ncc_mismatch", "self_duality"]


def _nc_panels(metrics: dict[str, list[tuple[str, str]]]) -> tuple[list[Panel], list[Panel]]:
    """Panels for one label view: ``metrics`` = {metric: [(split, key)]}. Known metrics go to the NC1–NC4
    panels (lines: metric × split), any others one panel each in the second list."""
    used: set[str] = set()
    main = []
    splits = {sp for v in metrics.values() for sp, _ in v}
    for title, ylabel, names, log in NC_PANELS:
        lines = []
        for mi, m in enumerate(n for n in names if n in metrics):
            used.add(m)
            for split, k in sorted(metrics[m], key=_split_key):
                lab = (f"{m.rsplit('_', 1)[-1]} " if len(names) > 1 else "") + (
                    split if len(splits) > 1 or len(names) == 1 else "")
                lines.append(Line(k, lab.strip() or split, fine_color(mi) if len(names) > 1 else SPLIT_COLOR.get(split),
                                  style=SPLIT_STYLE.get(split, "-")))
        if lines:
            main.append(Panel(title, ylabel, lines, logy=log, percent=False))
    extra = []
    for m in sorted(metrics, key=_metric_order):
        if m in used or m in HIDDEN:
            continue
        lines = [Line(k, split, SPLIT_COLOR.get(split), style=SPLIT_STYLE.get(split, "-"))
                 for split, k in sorted(metrics[m], key=_split_key)]
        extra.append(_panel(m, m, lines, m))
    return main, extra


@dataclass
class Group:
    name: str  # file-name stem
    title: str
    panels: list[Panel]
    secondary: bool = False  # drawn folded (details) in the report


def _split_key(item):
    return (SPLIT_ORDER.get(item[0], 9), item)


def _natural(s: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _metric_order(m: str):
    mm = re.match(r"nc(\d+)", m)
    return (0, int(mm.group(1)), m) if mm else (1, 0, m)


def _logy(metric: str) -> bool:
    return metric.startswith("nc1")


def _panel(title: str, ylabel: str, lines: list[Line], metric_like: str = "") -> Panel:
    pct = all(is_acc_key(ln.key) for ln in lines)
    return Panel(title, "accuracy" if pct else ylabel, lines, logy=_logy(metric_like), percent=pct)


def constant_by_construction(values: dict) -> set[str]:
    """Keys of ``values`` ({key: (n,) array}) whose view has K = 2 classes (its ``n_classes`` series) and whose
    metric is in :data:`CONSTANT_AT_K2`."""
    import numpy as np

    out = set()
    for k in values:
        view, _, metric = k.rpartition(".")
        if metric not in CONSTANT_AT_K2 or not k.startswith("nc."):
            continue
        nk = values.get(f"{view}.n_classes")
        if nk is None and view.count(".") >= 3:  # a per-layer key: nc.<split>.<labels>.<tap>.<metric>
            nk = values.get(".".join(view.split(".")[:3]) + ".n_classes")
        n = np.asarray(nk, dtype=float) if nk is not None else np.array([])
        if n.size and np.nanmax(n) == 2 and np.nanmin(n) == 2:
            out.add(k)
    return out


def group_keys(keys: list[str], *, compact: bool = False, drop: set[str] | frozenset = frozenset()) -> list[Group]:
    """Figures for these metric keys, without those in ``drop`` (e.g. :func:`constant_by_construction`).
    ``compact`` (comparisons) keeps only the mean of fine_within_coarse."""
    keys = [k for k in keys if k not in SKIP and k not in drop]
    used: set[str] = set()
    groups: list[Group] = []

    # training curves
    panels = []
    for title, pair in (("loss", ("train_loss", "test_loss")), ("accuracy", ("train_acc", "test_acc"))):
        lines = [Line(k, k.split("_")[0], SPLIT_COLOR[k.split("_")[0]], style=SPLIT_STYLE[k.split("_")[0]])
                 for k in pair if k in keys]
        if lines:
            panels.append(_panel(title, title, lines))
            used.update(ln.key for ln in lines)
    if "lr" in keys:
        # logy=None: a log axis when the rate spans > 20x (multistep /10 /10: the last phase is not a flat zero),
        # linear for one-cycle or cosine-to-zero schedules
        panels.append(Panel("learning rate", "lr", [Line("lr", "lr", "#555555")], logy=None))
        used.add("lr")
    if panels:
        groups.append(Group("training", "Training: loss, accuracy (on the trained labels), learning rate", panels))

    # NC metrics
    last: dict[str, dict[str, list[tuple[str, str]]]] = {}  # labels -> metric -> [(split, key)]
    layers: dict[str, dict[str, list[tuple[str, str, str]]]] = {}  # labels -> metric -> [(split, tap, key)]
    fwc: dict[str, list[tuple[str, str]]] = {}  # split -> [(rest, key)]
    for k in keys:
        parts = k.split(".")
        if parts[0] != "nc":
            continue
        if len(parts) < 4:  # e.g. nc.train.time_s: bookkeeping
            used.add(k)
            continue
        split, labels, rest = parts[1], parts[2], parts[3:]
        used.add(k)
        if labels == FWC:
            fwc.setdefault(split, []).append((".".join(rest), k))
        elif len(rest) == 1:
            last.setdefault(labels, {}).setdefault(rest[0], []).append((split, k))
        else:
            layers.setdefault(labels, {}).setdefault(rest[-1], []).append((split, ".".join(rest[:-1]), k))
    for labels in sorted(last, key=lambda s: (LABEL_ORDER.get(s, 9), s)):
        main, extra = _nc_panels(last[labels])
        if main:
            groups.append(Group(f"nc_{labels}", f"Neural collapse (NC1–NC4) of the last-layer features, {labels} labels",
                                main))
        if extra:
            groups.append(Group(f"nc_{labels}_more", f"More collapse statistics, {labels} labels", extra, True))
    if fwc:
        panels = []
        for split in sorted(fwc, key=lambda sp: (SPLIT_ORDER.get(sp, 9), sp)):
            items = sorted(fwc[split], key=lambda t: (t[0] != "mean", _natural(t[0])))
            lines = []
            for rest, k in items:
                if rest == "mean":
                    lines.append(Line(k, "mean", "#000000", width=2.6))
                elif not compact:
                    idx = rest.split(".")[0]
                    lines.append(Line(k, f"coarse {rest}", fine_color(int(idx)) if idx.isdigit() else None, width=1.1))
            if lines:
                panels.append(Panel(f"{split} split", "fine-label NC1 within a coarse class", lines, logy=None))
        groups.append(Group("fine_within_coarse", "Fine-label collapse within each coarse class (NC1 per superclass)",
                            panels))
    for labels in sorted(layers, key=lambda s: (LABEL_ORDER.get(s, 9), s)):
        panels = []
        metrics = [m for m in sorted(layers[labels], key=_metric_order) if m not in HIDDEN]
        headline = [m for m in metrics if m in LAYER_METRICS]
        for metric in sorted(headline, key=LAYER_METRICS.index) or metrics[:9]:
            items = sorted(layers[labels][metric], key=lambda t: (_natural(t[1]), SPLIT_ORDER.get(t[0], 9)))
            taps = sorted({t for _, t, _ in items}, key=_natural)
            lines = [Line(k, f"{tap} ({split})" if len({s for s, _, _ in items}) > 1 else tap,
                          fine_color(taps.index(tap)), style=SPLIT_STYLE.get(split, "-")) for split, tap, k in items]
            panels.append(_panel(f"{metric} per layer", metric + (" (log scale)" if _logy(metric) else ""),
                                 lines, metric))
        groups.append(Group(f"layers_{labels}", f"Per-layer metrics, {labels} labels (one line per layer input)",
                            panels))

    # per-layer series of other writers (the theory solver's ``layer<j>.<metric>``, keyed by step)
    plain: dict[str, list[tuple[str, str]]] = {}  # metric -> [(layer, key)]
    for k in keys:
        m = re.fullmatch(r"(layer\d+)\.(.+)", k)
        if m and k not in used:
            plain.setdefault(m.group(2), []).append((m.group(1), k))
            used.add(k)
    if plain:
        used.update(k for k in keys if k in plain)  # unprefixed copies of layer0's values
        panels = []
        for metric in sorted(plain, key=_metric_order):
            items = sorted(plain[metric], key=lambda t: _natural(t[0]))
            lines = [Line(k, layer, fine_color(i)) for i, (layer, k) in enumerate(items)]
            panels.append(_panel(f"{metric} per layer", metric + (" (log scale)" if _logy(metric) else ""), lines,
                                 metric))
        groups.append(Group("layers", "Per-layer metrics (one line per layer)", panels))

    # recovery
    rec = [k for k in keys if k.startswith("recovery.") and not k.endswith("time_s")]
    if rec:
        used.update(rec)
        lines = [Line(k, k.split(".", 1)[1], fine_color(i)) for i, k in enumerate(rec)]
        groups.append(Group("recovery", "Fine-label recovery from the features during training",
                            [_panel("fine-label recovery", "accuracy", lines)]))

    other = [k for k in keys if k not in used]
    if other:
        panels = [_panel(k, k, [Line(k, k, "#444444")]) for k in other[:18]]
        groups.append(Group("other", "Other logged values", panels, secondary=any(g.name == "training" for g in groups)))
    return groups
