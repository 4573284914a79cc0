"""Assemble and write run reports: ``write_report`` (one run) and ``try_write_report`` (never raises)."""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Callable

from nclab.report import sections as S
from nclab.report.figures import FigureSink
from nclab.report.html import esc, page
from nclab.report.load import RunData, load_run
from nclab.rundir import RunDir
from nclab.utils.io import atomic_write_text
from nclab.utils.progress import say


class SectionError(RuntimeError):
    """A section failed while rendering (raised only with ``strict=True``)."""


def render_sections(specs: list[tuple[str, str, Callable[[], str]]], strict: bool,
                    problems: list[str]) -> list[tuple[str, str, str]]:
    """Run each (anchor, title, render) and keep the non-empty ones; a failing section becomes a note
    (or raises with ``strict``), so one bad file never costs the whole report."""
    done = []
    for anchor, title, render in specs:
        try:
            body = render()
        except Exception as e:
            if strict:
                raise SectionError(f"section {title!r} failed: {type(e).__name__}: {e}") from e
            problems.append(f"section {title!r} could not be drawn: {type(e).__name__}: {e}")
            say(f"report: section {title!r} skipped ({type(e).__name__}: {e})")
            continue
        if body:
            done.append((anchor, title, body))
    return done


def _assemble(title: str, header: Callable[[list[tuple[str, str]]], str], done: list[tuple[str, str, str]],
              problems: list[str]) -> str:
    toc = [(a, t) for a, t, _ in done]
    parts = [header(toc)]
    for anchor, t, body in done:
        parts.append(f'<section id="{esc(anchor)}"><h2>{esc(t)}</h2>\n{body}\n</section>')
    if problems:
        items = "".join(f"<li>{esc(p)}</li>" for p in problems)
        parts.append('<section id="problems"><h2>Problems reading this run</h2>'
                     f'<ul class="problems">{items}</ul></section>')
    parts.append('<p class="note">Written by <code>nclab report</code> from the run directory alone; '
                 "regenerate with <code>nclab report &lt;run dir&gt;</code>.</p>")
    return page(title, "\n".join(parts))


def build_report(run: RunData, out_dir: Path, *, strict: bool = False) -> tuple[str, FigureSink]:
    """The report HTML for a loaded run (figures are written to ``out_dir/figures``)."""
    sink = FigureSink(out_dir)
    problems = list(run.problems)
    specs = [
        ("results", "Results", lambda: S.results_section(run)),
        ("curves", "Curves over training", lambda: S.curves_section(run, sink)),
        ("superclasses", "Per superclass: features and recovery", lambda: S.superclass_section(run, sink)),
        ("grid", "Sweep", lambda: S.grid_section(run, sink, out_dir)),
        ("tables", "Tables", lambda: S.tables_section(run)),
        ("subruns", "Sub-runs", lambda: S.subruns_section(run, sink, out_dir)),
        ("details", "Run details", lambda: S.details_section(run)),
    ]
    done = render_sections(specs, strict, problems)
    try:
        html = _assemble(f"nclab report — {run.title}", lambda toc: S.header(run, toc), done, problems)
    except Exception as e:
        if strict:
            raise
        problems.append(f"header could not be drawn: {type(e).__name__}: {e}")
        html = _assemble(f"nclab report — {run.name}", lambda toc: f"<h1>{esc(run.name)}</h1>", done, problems)
    return html, sink


def write_report(run_dir: str | os.PathLike, *, strict: bool = False, subreports: bool = True) -> Path:
    """Write ``<run_dir>/report.html`` (self-contained) and ``<run_dir>/figures/*.png``; return the HTML path.

    Reads only the run directory. Missing files just leave their sections out; a file that cannot be read
    or a section that fails to draw is listed under "Problems" in the report (``strict=True`` raises
    instead — for tests). ``subreports``: first write the missing reports of the sub-runs listed in
    results.json (``subruns``, sweep cells), so the links in this report lead somewhere.
    Raises :class:`NclabError` only if ``run_dir`` is not a run directory (:meth:`RunDir.is_run`).
    """
    path = Path(run_dir)
    RunDir(path).require(run=True)  # never write report.html / prune figures/ in a folder that is not a run
    run = load_run(path)
    if subreports:
        _write_missing_subreports(run, strict)
    html, sink = build_report(run, path, strict=strict)
    out = atomic_write_text(path / "report.html", html)
    sink.prune()
    return out


def _write_missing_subreports(run: RunData, strict: bool) -> None:
    subs = run.results.get("subruns") if isinstance(run.results.get("subruns"), list) else []
    cells = (run.results.get("grid") or {}).get("cells") if isinstance(run.results.get("grid"), dict) else None
    subs = list(subs) + [c.get("run") for c in cells or [] if isinstance(c, dict) and c.get("run")]
    base = run.path.resolve()
    for rel in dict.fromkeys(str(s) for s in subs):
        sub = (run.path / rel)
        try:
            inside = sub.resolve().is_relative_to(base) and sub.resolve() != base
        except OSError:
            inside = False
        if inside and sub.is_dir() and not (sub / "report.html").exists():
            if strict:
                write_report(sub, strict=True)
            else:
                try_write_report(sub)


def try_write_report(run_dir: str | os.PathLike) -> Path | None:
    """``write_report`` for the end of a run: never raises (prints one warning line instead), returns None
    on failure. A finished run must not be lost because its report could not be drawn."""
    try:
        return write_report(run_dir)
    except Exception as e:  # noqa: BLE001 — deliberately broad; KeyboardInterrupt still propagates
        # a warning, not progress: printed even under --quiet/--json (stderr keeps stdout clean)
        print(f"warning: could not write the report for {run_dir}: {type(e).__name__}: {e}", file=sys.stderr)
        if os.environ.get("NCLAB_DEBUG"):
            traceback.print_exc()
        return None
