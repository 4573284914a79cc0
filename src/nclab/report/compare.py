"""``write_compare_report``: one report overlaying the curves and tables of several runs."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Sequence

from nclab.report import sections as S
from nclab.report.curves import constant_by_construction, group_keys
from nclab.report.figures import FigureSink, plot_panels, run_color
from nclab.report.html import RawHTML, esc, is_acc_key, link, num_cell, table
from nclab.report.load import RunData, load_run
from nclab.report.writer import _assemble, render_sections
from nclab.rundir import RunDir
from nclab.utils.errors import NclabError
from nclab.utils.io import atomic_write_text


def default_compare_dir(run_dirs: Sequence[str | os.PathLike]) -> Path:
    """``<parent of the first run>/compare-<a>-vs-<b>...`` (name shortened to 100 characters)."""
    names = "-vs-".join(Path(p).resolve().name for p in run_dirs)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"compare-{names}")[:100]
    return Path(run_dirs[0]).resolve().parent / name


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def _labels(runs: list[RunData]) -> list[str]:
    names = [r.name for r in runs]
    return [n if names.count(n) == 1 else f"{n} ({i + 1})" for i, n in enumerate(names)]


def _runs_table(runs: list[RunData], labels: list[str], out_dir: Path) -> str:
    rows = []
    for r, lab in zip(runs, labels):
        ds = S.dataset_info(r)
        rows.append([RawHTML(f'<span style="color:{run_color(len(rows))}">■</span> '
                             + link(S.report_link(r.path, out_dir), lab)),
                     r.title,
                     S.STATUS_TEXT.get(r.status_name, r.status_name)
                     + (" (resumed)" if r.status.get("resumed") else ""),
                     ds["source"], ds["hierarchy"], ds["labels"], S._fmt_duration(S.wall_time(r)),
                     (r.info.git_commit or "")[:10] or None])
    banners = "".join(S.status_banner(r).replace("<strong>", f"<strong>{esc(lab)}: ", 1)
                      for r, lab in zip(runs, labels))
    return banners + table(["run", "experiment", "status", "dataset", "hierarchy", "labels", "wall time", "commit"],
                           rows)


def _results(runs: list[RunData], labels: list[str]) -> str:
    per_run = [S.results_rows(r) for r in runs]
    order: list[str] = []
    for rows in per_run:
        for label, _, _ in rows:
            if label not in order:
                order.append(label)
    if not order:
        return ""
    paper = {label: p for rows in per_run for label, _, p in rows if p is not None}
    cells = []
    for label in order:
        pct = S._pct(label)
        row: list[Any] = [label]
        for rows in per_run:
            v = next((o for lab, o, _ in rows if lab == label), None)
            row.append(num_cell(v, pct))
        if paper:
            row.append(num_cell(paper.get(label), pct))
        cells.append(row)
    return table(["result", *labels] + (["paper"] if paper else []), cells, cls="results")


def _config_diff(runs: list[RunData], labels: list[str]) -> str:
    flat = [_flatten(r.config) for r in runs]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    diff = [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1]
    if not diff:
        return '<p class="note">The resolved configs are identical.</p>' if any(flat) else ""
    rows = [[k, *[str(f.get(k)) if k in f else "—" for f in flat]] for k in diff]
    return ("<p class=\"note\">Config keys whose values differ between the runs:</p>"
            + table(["config key", *labels], rows))


def _curves(runs: list[RunData], labels: list[str], sink: FigureSink) -> str:
    with_series = [(lab, r.series) for r, lab in zip(runs, labels) if r.series is not None and len(r.series)]
    if not with_series:
        return ""
    keys = list(dict.fromkeys(k for _, s in with_series for k in s.values))
    xkey = with_series[0][1].xkey
    out = ['<p class="note">Colour = run; line style = quantity within a panel (see each panel\'s legend).</p>']
    flat = set.intersection(*(constant_by_construction(s.values) for _, s in with_series))
    for g in group_keys(keys, compact=True, drop=flat):
        if g.name.startswith("layers_") and len(with_series) > 3:
            continue
        fig = plot_panels(g.panels, with_series, xlabel=xkey)
        if fig is not None:
            out.append(f"<h3>{esc(g.title)}</h3>" + sink.add(fig, f"compare_{g.name}", alt=g.title))
    return "\n".join(out) if len(out) > 1 else ""


def _tables(runs: list[RunData], labels: list[str]) -> str:
    merged: dict[tuple[str, tuple[str, ...]], list[list[Any]]] = {}
    for r, lab in zip(runs, labels):
        for t in r.results.get("tables") or []:
            if isinstance(t, dict) and isinstance(t.get("rows"), list):
                cols = tuple(str(c) for c in t.get("columns") or [])
                merged.setdefault((str(t.get("title", "")), cols), []).extend(
                    [lab, *(row if isinstance(row, list) else [row])] for row in t["rows"])
    out = []
    for (title, cols), rows in merged.items():
        pct = [i + 1 for i, c in enumerate(cols) if is_acc_key(c.replace(" ", "_"))]
        out.append((f"<h3>{esc(title)}</h3>" if title else "") + table(["run", *cols], rows, percent_cols=pct))
    return "\n".join(out)


def write_compare_report(run_dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike | None = None, *,
                         strict: bool = False) -> Path:
    """Write ``<out_dir>/report.html`` comparing the runs (results side by side, overlaid curves, config
    differences, merged tables); figures in ``<out_dir>/figures``. Returns the HTML path."""
    if not run_dirs:
        raise NclabError("nothing to compare; pass two or more run directories")
    for p in run_dirs:
        RunDir(p).require(run=True)
    seen = [Path(p).resolve() for p in run_dirs]
    if len(set(seen)) < len(seen):
        raise NclabError("the same run directory is listed twice; pass each run once")
    out = Path(out_dir) if out_dir is not None else default_compare_dir(run_dirs)
    if out.exists() and not out.is_dir():
        raise NclabError(f"--out {out} is a file; pass a folder for the comparison report")
    if RunDir(out).is_run():  # its report.html and figures/ belong to that run
        raise NclabError(f"--out {out} is a run directory; pass a new folder for the comparison report")
    out.mkdir(parents=True, exist_ok=True)
    runs = [load_run(p) for p in run_dirs]
    labels = _labels(runs)
    problems = [f"{lab}: {p}" for r, lab in zip(runs, labels) for p in r.problems]
    sink = FigureSink(out)
    specs = [
        ("results", "Results side by side", lambda: _results(runs, labels)),
        ("curves", "Curves overlaid", lambda: _curves(runs, labels, sink)),
        ("tables", "Tables", lambda: _tables(runs, labels)),
        ("config", "Config differences", lambda: _config_diff(runs, labels)),
    ]
    done = render_sections(specs, strict, problems)
    runs_html = _runs_table(runs, labels, out)

    def header(toc):
        nav = '<nav class="toc">' + "".join(link(f"#{a}", t) for a, t in toc) + "</nav>"
        return f"<h1>Comparison of {len(runs)} runs</h1>{nav}{runs_html}"

    html = _assemble(f"nclab compare — {', '.join(labels)}", header, done, problems)
    path = atomic_write_text(out / "report.html", html)
    sink.prune()
    return path
