"""The sections of a run report. Each takes the loaded run and returns HTML ("" when it has no data)."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from nclab.report.curves import FWC, constant_by_construction, group_keys
from nclab.report.figures import FigureSink, heatmap_figure, plot_panels, superclass_figure
from nclab.report.html import RawHTML, esc, fmt_value, is_acc_key, kv_table, link, num_cell, table
from nclab.report.load import RunData, last_good_checkpoint, load_run, lookup, scalar
from nclab.rundir import RunDir, recovery_hierarchy
from nclab.utils.errors import NclabError
from nclab.report.rows import RESULT_ROWS, SPLIT_ROWS

STATUS_TEXT = {
    "complete": "complete",
    "running": "running (or died without recording a status)",
    "stopped_nan": "stopped on NaN",
    "interrupted": "interrupted",
    "paused": "paused at its time limit",
    "failed": "failed",
    "unknown": "unknown (no status.json)",
    "damaged": "damaged",
}

# ---- helpers ------------------------------------------------------------------------------------------


def dataset_info(run: RunData) -> dict[str, Any]:
    """What the header shows of the data: run.json's record (:class:`nclab.rundir.RunInfo`); a folder without
    run.json (older docs/results runs) shows its resolved config.yaml's specs instead."""
    info = run.info
    data = run.config.get("data") if isinstance(run.config.get("data"), dict) else {}
    return {
        "source": info.source or data.get("source"),
        "checksum": info.checksum,
        "name": info.dataset,
        "hierarchy": info.hierarchy_spec or data.get("hierarchy"),
        "labels": info.labels or data.get("labels"),
    }


def hierarchy_of(run: RunData) -> tuple[dict[int, int], list[str], list[str]]:
    """fine -> coarse mapping, fine names, coarse names of the labels the *recovery* used
    (:func:`nclab.rundir.recovery_hierarchy`: run.json's hierarchy, whose ``kind`` says what a split run recovers;
    without one, the grouping results.json's recovery recorded). Fine names are padded to the recovery confusion
    matrix where there is no hierarchy."""
    h = recovery_hierarchy(run.info, run.res)
    if h is not None:
        return {f: int(c) for f, c in enumerate(h.fine_to_coarse)}, list(h.fine_names), list(h.coarse_names)
    fine_names = [str(n) for n in lookup(run.results, "recovery.fine_names") or []]
    conf = lookup(run.results, "recovery.confusion")
    n = len(conf) if isinstance(conf, list) else 0
    return {}, fine_names + [str(i) for i in range(len(fine_names), n)], []


def wall_time(run: RunData) -> float | None:
    w = run.status.get("wall_time_s")
    if isinstance(w, (int, float)):
        return float(w)
    return run.series.last("time_s") if run.series is not None else None


def _fmt_duration(s: float | None) -> str:
    if s is None:
        return "—"
    s = float(s)
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def _rel(target: Path, base: Path) -> str:
    try:
        return Path(os.path.relpath(target, base)).as_posix()
    except ValueError:  # different drives on Windows
        return target.as_posix()


def report_link(run_path: Path, from_dir: Path) -> str | None:
    """Relative link to a run's report (its folder if it has no report; None if the folder is missing)."""
    target = run_path / "report.html"
    if not run_path.is_dir():
        return None
    return _rel(target if target.exists() else run_path, from_dir)


# ---- header -------------------------------------------------------------------------------------------


def experiment_unfinished(run: RunData) -> bool:
    """A paper experiment run (``nclab reproduce cifar10-*``: results.json carries ``paper``) whose final results
    write, the one that adds ``wall_time_s``, has not happened."""
    return "paper" in run.results and "wall_time_s" not in run.results


def status_banner(run: RunData) -> str:
    st, msg = run.status_name, str(run.status.get("message") or "")
    epoch = run.status.get("epoch")
    ckpt = last_good_checkpoint(run.checkpoints)
    ep = f" (epoch {epoch})" if isinstance(epoch, int) and epoch > 0 else ""
    ck = (f"the last good checkpoint is checkpoints/{ckpt}{ep}" if ckpt else "no checkpoint was saved")
    if st == "damaged":
        rec = run.recorded_status
        head = "This run directory is damaged: its files cannot be trusted."
        body = (f"status.json records \"{STATUS_TEXT.get(rec, rec)}\", but {len(run.damage)} problem(s) were found "
                "in its data files (listed under \"Problems reading this run\"); figures and tables leave the "
                "damaged rows out. Restore the files from a copy or rerun the run.")
    elif st == "stopped_nan":
        head = "Training stopped on NaN: this run did not finish."
        body = f"The loss became non-finite; {ck}. Results after the last good checkpoint are not valid."
    elif st == "interrupted":
        head = "Training was interrupted: this run did not finish."
        body = (f"{ck[0].upper() + ck[1:]}. Results after the last good checkpoint are not valid; "
                "resume the run to finish it.")
    elif st == "failed":
        head = "The run failed: it did not finish."
        body = f"{ck[0].upper() + ck[1:]}. Results after the last good checkpoint are not valid."
    elif st == "paused":
        return ('<div class="banner warn"><strong>The run is paused: it has not finished.</strong>It stopped cleanly '
                f"at its time limit; {esc(ck)}. Continue it with --resume. Figures show what was logged so far.</div>")
    elif st == "running":
        return ('<div class="banner warn"><strong>The run has not finished.</strong>Its status is "running": it is in '
                "progress, or it died without recording why. Figures show what was logged so far.</div>")
    elif st == "complete" and experiment_unfinished(run):
        # status.json describes the training run; an experiment's later stages (recovery, baselines, the
        # fine-label baseline run) add wall_time_s to results.json with their last write only
        try:
            sub = RunDir(run.path / "baseline").read_status().get("status")
        except NclabError:  # a damaged sub-run status: the banner stands without it
            sub = None
        extra = f' Its fine-label baseline run is "{esc(sub)}".' if sub and sub != "complete" else ""
        return ('<div class="banner warn"><strong>The experiment has not finished.</strong>Training is complete, '
                "but the later stages (recovery, baselines) have not all been written: it is in progress, paused, "
                f"was killed or failed (see the command's error).{extra} Continue it with --resume; tables show what "
                "was measured so far.</div>")
    else:
        return ""
    detail = f"<br>Message: {esc(msg)}" if msg else ""
    return f'<div class="banner"><strong>{esc(head)}</strong>{esc(body)}{detail}</div>'


def header(run: RunData, toc: list[tuple[str, str]]) -> str:
    st = run.status_name
    label = STATUS_TEXT.get(st, st)
    if st == "damaged":
        label = f"damaged (status.json: {STATUS_TEXT.get(run.recorded_status, run.recorded_status)})"
    if st == "complete" and experiment_unfinished(run):
        label = "training complete, experiment unfinished"
    if run.status.get("resumed"):
        label += " (resumed from a checkpoint)"
    ds = dataset_info(run)
    ri = run.info
    cmd = shlex.join(ri.argv) if ri.argv else None
    device = ri.device or lookup(run.config, "train.device")  # a folder without run.json: the config's
    if ri.cuda_device and device in (None, "cuda", "auto"):
        device = f"{device or 'cuda'} ({ri.cuda_device})"
    env = ", ".join(f"{n} {v}" for n, v in (("nclab", ri.nclab_version), ("torch", ri.torch_version),
                                             ("Python", ri.python_version)) if v)
    pairs = [
        ("command", cmd),
        ("dataset", " · ".join(str(v) for v in (ds["name"], ds["source"]) if v) or None),
        ("dataset checksum", ds["checksum"]),
        ("hierarchy", ds["hierarchy"]),
        ("trained on labels", ds["labels"]),
        ("environment", env or None),
        ("device", device),
        ("git commit", ri.git_commit),
        ("started", ri.started),
        ("training wall time", _fmt_duration(wall_time(run)) if wall_time(run) is not None else None),
        ("experiment wall time (training, evaluation, recovery, baselines)",
         _fmt_duration(run.results["wall_time_s"]) if isinstance(run.results.get("wall_time_s"), (int, float))
         else None),
        ("status", label),
    ]
    pairs = [(k, v) for k, v in pairs if v not in (None, "")]
    out = [f"<h1>{esc(run.title)}</h1>",
           f'<p class="sub">run <code>{esc(run.name)}</code> · <span class="pill {esc(st)}">{esc(label)}</span></p>',
           status_banner(run)]
    if toc:
        out.append('<nav class="toc">' + "".join(link(f"#{a}", t) for a, t in toc) + "</nav>")
    out.append(kv_table(pairs))
    if run.config:
        out.append("<details><summary>Resolved config (config.yaml)</summary><pre>"
                   + esc(yaml.safe_dump(run.config, sort_keys=False)) + "</pre></details>")
    return "\n".join(out)


# ---- results ------------------------------------------------------------------------------------------


def results_rows(run: RunData) -> list[tuple[str, float | None, float | None]]:
    """(label, ours, paper) rows of the results table; also what `nclab demo` prints."""
    res, paper = run.results, run.res.paper or {}
    rows: list[tuple[str, float | None, float | None]] = []
    used_paper: set[str] = set()
    used_keys: set[str] = set()
    split = isinstance(res.get("recovery"), dict) and res["recovery"].get("kind") == "split"
    for key, label, pkey in SPLIT_ROWS if split else RESULT_ROWS:
        ours = scalar(lookup(res, key))
        if ours is None and key == "coarse_test_acc" and lookup(run.config, "data.labels") == "coarse" and run.series:
            ours = run.series.last("test_acc")
            label += " [last epoch]" if ours is not None else ""
        if ours is None and key.startswith("recovery.") and run.series is not None:
            ours = run.series.last(key)
            label += " [last epoch]" if ours is not None else ""
        p = scalar(paper.get(pkey)) if pkey in paper else scalar(paper.get(key))
        if ours is None and p is None:
            continue
        used_paper.update({pkey, key})
        used_keys.add(key.split(".")[-1] if key.startswith("baselines.") else key)
        rows.append((label, ours, p))
    for name, v in (res.get("baselines") or {}).items() if isinstance(res.get("baselines"), dict) else []:
        if name not in used_keys and scalar(v) is not None:
            rows.append((f"Baseline: {name}", scalar(v), scalar(paper.get(name))))
            used_paper.add(name)
    for k, v in paper.items():
        if k not in used_paper and scalar(v) is not None:
            rows.append((f"{k} (reported in the paper)", None, scalar(v)))
    return rows


def results_text(run: RunData) -> str:
    """The results table as aligned plain text."""
    if not isinstance(run, RunData):  # a path ended in "'str' object has no attribute 'results'"
        raise NclabError(f"results_text takes what load_run returns, got {type(run).__name__} {run!r}; "
                         "use results_text(load_run(path))")
    rows = results_rows(run)
    if not rows:
        return "(no results recorded)"
    has_paper = any(p is not None for _, _, p in rows)

    def f(label, v):
        return fmt_value(v, percent=True) if v is not None and _pct(label) else fmt_value(v)

    w = max(len(r[0]) for r in rows)
    lines = [f"{'result':<{w}}  {'ours':>10}" + (f"  {'paper':>10}" if has_paper else "")]
    for label, ours, p in rows:
        lines.append(f"{label:<{w}}  {f(label, ours):>10}" + (f"  {f(label, p):>10}" if has_paper else ""))
    return "\n".join(lines)


def _pct(label: str) -> bool:
    return not any(s in label for s in ("ARI", "NMI", "Ratio", "NC1"))


def results_section(run: RunData) -> str:
    rows = results_rows(run)
    out = []
    if rows:
        has_paper = any(p is not None for _, _, p in rows)
        cells = []
        for label, ours, p in rows:
            pct = _pct(label)
            r = [label, num_cell(ours, pct)]
            if has_paper:
                r.append(num_cell(p, pct))
            cells.append(r)
        cols = ["result", "ours"] + (["paper"] if has_paper else [])
        out.append(table(cols, cells, cls="results",
                         row_classes=["headline" if "predicted coarse routing" in r[0] else "" for r in rows]))
        if has_paper:
            out.append('<p class="note">Paper values as recorded in results.json (paper A, Yang et al. 2023: 93 % '
                       "fine-label test accuracy from coarse-trained features on CIFAR-10).</p>"
                       if "fine_test_acc" in (run.results.get("paper") or {}) else "")
    per = lookup(run.results, "recovery.per_superclass")
    if isinstance(per, list) and per:
        _, fine_names, _ = hierarchy_of(run)
        rows2 = []
        estimated = any(isinstance(s, dict) and s.get("k_scores") is not None for s in per)
        for i, s in enumerate(per):
            if not isinstance(s, dict):
                continue
            fines = ", ".join(fine_names[f] if 0 <= int(f) < len(fine_names) else str(f) for f in s.get("fine") or [])
            rows2.append([s.get("coarse", i), s.get("name", ""), fines, s.get("train_acc"), s.get("test_acc"),
                          s.get("test_acc_predicted_routing")] + ([s.get("k")] if estimated else []))
        out.append("<h3>Recovery per superclass</h3>")
        out.append(table(["coarse", "name", "fine labels", "train clustering acc", "test acc, true-coarse routing",
                          "test acc, predicted routing"] + (["clusters (k estimated)"] if estimated else []),
                         rows2, percent_cols=(3, 4, 5)))
        ke = lookup(run.results, "recovery.k_estimation")
        if isinstance(ke, dict) and ke.get("groups"):
            out.append(f'<p class="note">k per superclass estimated without labels ({esc(ke.get("criterion"))}, '
                       f'1..{esc(ke.get("k_max"))}): the hierarchy\'s number of fine classes in '
                       f'{esc(ke.get("correct"))} '
                       f'of {esc(ke.get("groups"))} superclasses.</p>')
        out.append('<p class="note">Rows = samples whose true superclass is this one. With predicted routing a '
                   "sample the network sends to another superclass counts as an error here.</p>")
    final = _final_metrics(run)
    if final:
        out.append("<h3>Final logged metrics</h3>")
        out.append(table(["metric", "last logged value"], final))
    return "\n".join(x for x in out if x)


def _final_metrics(run: RunData) -> list[list[Any]]:
    if run.series is None:
        return []
    rows = []
    for k, v in run.series.values.items():
        parts = k.split(".")
        headline = len(parts) == 4 and parts[0] == "nc" and (
            parts[3] in FINAL_NC or (parts[2] == FWC and parts[3] == "mean"))
        if headline or k in ("train_loss", "test_loss", "train_acc", "test_acc") or (
                k.startswith("recovery.") and not k.endswith("time_s")):
            rows.append([k, num_cell(run.series.last(k), is_acc_key(k))])  # last finite value logged
    return rows


# NC metrics listed in the final-metrics table (all of them are in the curves).
FINAL_NC = ("nc1", "cdnv", "etf_error_means", "self_duality", "ncc_mismatch", "nc2", "nc3", "nc4")


# ---- curves, features, grid, tables, sub-runs ------------------------------------------------------------


def recovery_callback_note(run: RunData) -> str:
    """How the logged recovery curve was clustered: the run's recorded recovery settings (config ``recovery``),
    with any key the ``recovery`` callback overrides named (then its last point can differ from the final
    recovery in the results table)."""
    from nclab.contracts.recovery import BY_NAME
    from nclab.contracts.recovery import DEFAULTS as RECOVERY_DEFAULTS

    cb = lookup(run.config, "callbacks.recovery")
    if not isinstance(cb, dict) or run.series is None or "recovery.test_acc" not in run.series.values:
        return ""
    n_train = run.info.n_train
    recorded = lookup(run.config, "recovery")
    overrides = {k: v for k, v in cb.items() if k in BY_NAME}

    def subset(m) -> str:
        if not m or (isinstance(n_train, int) and m >= n_train):
            return "all train samples"
        return f"a {int(m):,}-sample train subset"

    def how(settings: dict) -> str:
        s = {**RECOVERY_DEFAULTS, **settings}  # a key a file lacks takes the protocol's default (one table)
        return (f"{s['method']}, normalize {s['normalize']}"
                + (f" at {s['whiten_var']} of the variance" if s["normalize"] == "whiten" else ""))

    if isinstance(recorded, dict):  # configs that record the run's settings
        used = {**recorded, **overrides}
        changed = [f"{k}={v}" for k, v in overrides.items() if recorded.get(k) != v]
        if not changed:
            return (f'<p class="note">Logged recovery (curves) uses the run\'s recovery settings ({how(used)}, '
                    f"{subset(used.get('max_train'))}), the same as the final recovery in the results table.</p>")
        return (f'<p class="note">Logged recovery (curves) uses the run\'s recovery settings with '
                f"{', '.join(changed)} (callbacks.recovery): {how(used)}, {subset(used.get('max_train'))}; the "
                "final recovery in the results table uses the run's own, so the last point and it can differ.</p>")
    # a run written before configs recorded the settings: the callback's own defaults were whiten at 0.95
    final = lookup(run.results, "recovery.test_acc")
    opts = lookup(run.results, "recovery.options") or {}
    tail = ""
    if isinstance(final, (int, float)):
        tail = (f"; the results table's recovery ({fmt_value(final, percent=True)}) clusters "
                f"{subset(opts.get('max_train'))} ({how(opts)}), so the two can differ")
    return (f'<p class="note">Logged recovery (curves, last logged values): the training callback clusters '
            f"{subset(cb.get('max_train'))} ({how(cb)}){tail}.</p>")


def curves_section(run: RunData, sink: FigureSink) -> str:
    out = [recovery_callback_note(run)]
    series = [("", run.series)] if run.series is not None and len(run.series) else []
    series += [(name, s) for name, s in run.extra_series.items()]
    for sname, s in series:
        for g in group_keys(list(s.values), drop=constant_by_construction(s.values)):
            fig = plot_panels(g.panels, [(run.name, s)], xlabel=s.xkey)
            if fig is not None:
                title = f"{g.title} [{sname}.jsonl]" if sname else g.title
                img = sink.add(fig, f"curves_{sname + '_' if sname else ''}{g.name}", alt=title)
                out.append(f"<details><summary>{esc(title)}</summary>{img}</details>" if g.secondary
                           else f"<h3>{esc(title)}</h3>{img}")
    return "\n".join(out)


def _npy(path: Path) -> np.ndarray | None:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None


def superclass_section(run: RunData, sink: FigureSink, max_points: int = 1500) -> str:
    fdir = run.features_dir
    f2c, fine_names, coarse_names = hierarchy_of(run)
    conf = lookup(run.results, "recovery.confusion")
    conf = np.asarray(conf, dtype=float) if isinstance(conf, list) and conf else None
    if conf is not None and (conf.ndim != 2 or conf.shape[0] != conf.shape[1]):
        conf = None
    splits = {}
    for sp in ("train", "test"):
        x, yf, yc = _npy(fdir / f"{sp}_features.npy"), _npy(fdir / f"{sp}_fine.npy"), _npy(fdir / f"{sp}_coarse.npy")
        if x is not None and yf is not None and x.ndim == 2 and len(x) == len(yf):
            if yc is None or len(yc) != len(yf):
                yc = np.array([f2c.get(int(f), -1) for f in yf])
            splits[sp] = (x, yf.astype(np.int64), yc.astype(np.int64))
    cents = None
    if (fdir / "centroids.npz").exists():
        try:
            with np.load(fdir / "centroids.npz", allow_pickle=False) as z:
                cents = {k: z[k] for k in z.files}
        except (OSError, ValueError):
            cents = None
    if not splits and conf is None:
        return ""
    coarse_ids = sorted(set(f2c.values())) if f2c else sorted({int(c) for s in splits.values() for c in s[2]})
    if not coarse_ids:
        return ""
    rng = np.random.default_rng(0)
    out = ['<p class="note">Each row: one superclass. Points are last-layer features of its samples (true '
           "superclass), projected on the top two principal axes of its train features; colour = fine label (the "
           "same colour for a fine label in every figure); crosses = the recovery clusters' centroids coloured by "
           "the fine label each cluster was matched to. Right: recovery confusion on the test set.</p>"]
    for c in coarse_ids:
        fines = sorted(f for f, cc in f2c.items() if cc == c) if f2c else sorted(
            {int(f) for s in splits.values() for f, cc in zip(s[1], s[2]) if cc == c})
        parts = {}
        for sp, (x, yf, yc) in splits.items():
            idx = np.flatnonzero(yc == c)
            if idx.size > max_points:  # deterministic subsample keeps the figure light
                idx = np.sort(rng.choice(idx, max_points, replace=False))
            if idx.size:
                parts[sp] = (x[idx], yf[idx])
        cen = None
        if cents is not None and f"c{c}" in cents:
            cf = cents.get(f"c{c}_fine", np.full(len(cents[f"c{c}"]), -1))
            cen = (cents[f"c{c}"], np.asarray(cf, dtype=np.int64))
        sub, cols = None, None
        if conf is not None and fines and max(fines) < conf.shape[0]:
            sub = conf[np.ix_(fines, fines)]
            other = conf[fines].sum(1) - sub.sum(1)
            if other.any():
                sub = np.concatenate([sub, other[:, None]], 1)
                cols = [fine_names[f] for f in fines] + ["other superclass"]
        name = coarse_names[c] if c < len(coarse_names) else f"coarse {c}"
        fig = superclass_figure(f"superclass {c}: {name}", fines, fine_names, parts.get("train"), parts.get("test"),
                                cen, sub, cols)
        if fig is not None:
            out.append(sink.add(fig, f"superclass_{c:03d}", alt=f"superclass {c} {name}"))
    if conf is not None and not f2c:
        fig = superclass_figure("recovery confusion (all fine labels)", list(range(conf.shape[0])), fine_names,
                                None, None, None, conf)
        out.append(sink.add(fig, "confusion_all"))
    return "\n".join(out) if len(out) > 1 else ""


def _cell_color(v: float, lo: float, hi: float, log: bool) -> tuple[str, str]:
    import matplotlib

    if not np.isfinite(v):
        return "#eeeeee", "#000000"
    if log and lo > 0:
        t = (np.log(v) - np.log(lo)) / (np.log(hi) - np.log(lo)) if hi > lo else 0.5
    else:
        t = (v - lo) / (hi - lo) if hi > lo else 0.5
    r, g, b, _ = matplotlib.colormaps["viridis"](float(np.clip(t, 0, 1)))
    fg = "#000000" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "#ffffff"
    return "#{:02x}{:02x}{:02x}".format(int(r * 255), int(g * 255), int(b * 255)), fg


def grid_section(run: RunData, sink: FigureSink, out_dir: Path) -> str:
    grid = run.results.get("grid")
    if not isinstance(grid, dict) or not isinstance(grid.get("cells"), list) or not grid["cells"]:
        return ""
    axes = grid.get("axes") if isinstance(grid.get("axes"), dict) else {}
    cells = [c for c in grid["cells"] if isinstance(c, dict)]
    # two axes span the heatmap; any others (a seed axis first of all) are averaged over, never overwritten
    names = [a for a in axes if a != "seed"][:2] or list(axes)[:1]
    if not names:
        return ""
    averaged = [a for a in axes if a not in names]
    yname, xname = (names + [None])[:2] if len(names) == 2 else (None, names[0])
    xs = list(axes[xname])
    ys = list(axes[yname]) if yname else [None]
    metrics = [m for m in ("recovery_acc", "coarse_acc", "nc1") if any(m in c for c in cells)]
    metrics += sorted({k for c in cells for k, v in c.items()
                       if k not in metrics and k not in axes and k != "run" and scalar(v) is not None})
    note = f"{len(cells)} runs. " + (f"Rows: {esc(yname)}; columns: {esc(xname)}." if yname
                                     else f"Columns: {esc(xname)}.")
    if averaged:
        note += (f" Each cell is the mean over {esc(', '.join(averaged))} (± the standard deviation over those runs, "
                 "n = runs with a value); the runs' own reports are linked under Sub-runs.")
    else:
        note += " Each cell links to that run's report."
    out = [f'<p class="note">{note}</p>']
    for m in metrics:
        per_cell: dict[tuple[int, int], list[float]] = {}
        links: dict[tuple[int, int], str] = {}
        for c in cells:
            try:
                j = xs.index(c.get(xname))
                i = ys.index(c.get(yname)) if yname else 0
            except ValueError:
                continue
            v = scalar(c.get(m))
            per_cell.setdefault((i, j), [])
            if v is not None and np.isfinite(v):
                per_cell[(i, j)].append(v)
            if c.get("run") and not averaged:
                href = report_link((run.path / str(c["run"])), out_dir)
                if href is not None:
                    links[(i, j)] = href
        vals = np.full((len(ys), len(xs)), np.nan)
        spread: dict[tuple[int, int], str] = {}
        for (i, j), vs in per_cell.items():
            if vs:
                vals[i, j] = float(np.mean(vs))
                if averaged and len(vs) > 1:
                    spread[(i, j)] = f" ± {fmt_value(float(np.std(vs, ddof=1)), percent=is_acc_key(m))} (n={len(vs)})"
                elif averaged:
                    spread[(i, j)] = " (n=1)"
        pct, log = is_acc_key(m), m.startswith("nc1")
        fin = vals[np.isfinite(vals)]
        lo, hi = (float(fin.min()), float(fin.max())) if fin.size else (0.0, 1.0)
        rows = []
        for i, yv in enumerate(ys):
            tds = [f"<th>{esc(fmt_value(yv))}</th>" if yname else "<th></th>"]
            for j in range(len(xs)):
                bg, fg = _cell_color(vals[i, j], lo, hi, log)
                text = esc(fmt_value(None if np.isnan(vals[i, j]) else float(vals[i, j]), percent=pct)
                           + spread.get((i, j), ""))
                if (i, j) in links:
                    text = f'<a href="{esc(links[(i, j)])}">{text}</a>'
                tds.append(f'<td style="background:{bg};color:{fg}">{text}</td>')
            rows.append("<tr>" + "".join(tds) + "</tr>")
        head = f"<tr><th>{esc(yname or '')} \\ {esc(xname)}</th>" + "".join(
            f"<th>{esc(fmt_value(x))}</th>" for x in xs) + "</tr>"
        out.append(f"<h3>{esc(m)}</h3><table class=\"heat\"><thead>{head}</thead>"
                   f"<tbody>{''.join(rows)}</tbody></table>")
        title = f"{m} (mean over {', '.join(averaged)})" if averaged else m
        fig = heatmap_figure(title, vals, [fmt_value(x) for x in xs], [fmt_value(y) for y in ys] if yname else [""],
                             xname, yname or "", log=log, percent=pct)
        out.append(sink.add(fig, f"grid_{m}", alt=f"heatmap of {m}"))
    return "\n".join(out)


def tables_section(run: RunData) -> str:
    tables = run.results.get("tables")
    if not isinstance(tables, list):
        return ""
    out = []
    for t in tables:
        if not isinstance(t, dict) or not isinstance(t.get("rows"), list):
            continue
        cols = [str(c) for c in t.get("columns") or []]
        pct = [i for i, c in enumerate(cols) if is_acc_key(c.replace(" ", "_"))]
        if t.get("title"):
            out.append(f"<h3>{esc(t['title'])}</h3>")
        out.append(table(cols, [r if isinstance(r, list) else [r] for r in t["rows"]], percent_cols=pct))
        if t.get("note"):
            out.append(f'<p class="note">{esc(t["note"])}</p>')
    return "\n".join(out)


def subruns_section(run: RunData, sink: FigureSink, out_dir: Path, max_overlay: int = 12) -> str:
    subs = run.results.get("subruns")
    if not isinstance(subs, list) or not subs:
        return ""
    loaded = [(str(s), load_run(run.path / str(s), missing_ok=True)) for s in subs]  # missing ones get a row

    def last(sr: RunData, *keys: str) -> float | None:
        return next((v for k in keys if sr.series is not None and (v := sr.series.last(k)) is not None), None)

    # (column, percent?, value of a sub-run); columns no sub-run has a value for are left out
    cols = [("coarse test acc", True,
             lambda sr, rr: next((v for k, v in rr.items() if k.startswith("Coarse test")), None)),
            ("recovery test acc", True,
             lambda sr, rr: next((v for k, v in rr.items() if "predicted coarse" in k), None)),
            ("last test_acc", True, lambda sr, rr: last(sr, "test_acc")),
            ("last loss", False, lambda sr, rr: last(sr, "train_loss", "loss")),
            ("last NC1 (coarse / layer 0)", False, lambda sr, rr: last(sr, "nc.train.coarse.nc1", "nc1", "layer0.nc1"))]
    vals = []
    for rel, sr in loaded:
        rr = {label: ours for label, ours, _ in results_rows(sr)}
        vals.append([f(sr, rr) for _, _, f in cols])
    keep = [j for j in range(len(cols)) if any(v[j] is not None for v in vals)]
    rows = [[RawHTML(link(report_link(sr.path, out_dir), rel)),
             STATUS_TEXT.get(sr.status_name, sr.status_name) if sr.path.is_dir() else "missing (not in this folder)",
             sr.title]
            + [v[j] for j in keep] for (rel, sr), v in zip(loaded, vals)]
    out = [table(["sub-run", "status", "experiment"] + [cols[j][0] for j in keep], rows,
                 percent_cols=[3 + i for i, j in enumerate(keep) if cols[j][1]])]
    with_series = [(rel, sr.series) for rel, sr in loaded if sr.series is not None and len(sr.series)]
    if 1 < len(with_series) <= max_overlay:
        xkey = with_series[0][1].xkey
        keys = list(dict.fromkeys(k for _, s in with_series for k in s.values))
        flat = set.intersection(*(constant_by_construction(s.values) for _, s in with_series))
        for g in group_keys(keys, compact=True, drop=flat):
            if g.name.startswith("layers_") and len(with_series) > 3:
                continue  # a line per (layer, sub-run) is unreadable; each sub-run's own report has them
            fig = plot_panels(g.panels, with_series, xlabel=xkey)
            if fig is not None:
                out.append(f"<h3>{esc(g.title)} — all sub-runs</h3>" + sink.add(fig, f"subruns_{g.name}"))
    return "\n".join(out)


def details_section(run: RunData) -> str:
    out = []
    if run.run_info:
        out.append("<details><summary>Run info (run.json)</summary><pre>"
                   + esc(json.dumps(run.run_info, indent=2, sort_keys=True, default=str)) + "</pre></details>")
    if run.status:
        out.append("<details><summary>Status (status.json)</summary><pre>"
                   + esc(json.dumps(run.status, indent=2, sort_keys=True, default=str)) + "</pre></details>")
    if run.checkpoints:
        out.append(f'<p class="note">Checkpoints: {esc(", ".join(run.checkpoints))}</p>')
    return "\n".join(out)
