"""Figures for reports: a PNG sink, a fixed fine-label palette, and the plot functions.

All plots use matplotlib's Agg backend (no display needed) and are saved without timestamps, so the
same run directory gives the same PNG bytes.
"""

from __future__ import annotations

import base64
import colorsys
import io
import re
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg", force=False)  # noqa: E402  (headless; respects an already-chosen backend)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter, PercentFormatter  # noqa: E402

from nclab.report.html import esc  # noqa: E402
from nclab.utils.io import atomic_write_bytes  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DPI = 100

# Fine label f always gets colour fine_color(f) in every figure of every report.
_BASE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
]
_GOLDEN = 0.618033988749895


def fine_color(f: int) -> str:
    """Colour of fine label ``f``: tab10 for 0..9, the light tab20 colours for 10..19, then golden-ratio hues at
    alternating lightness."""
    f = int(f)
    if 0 <= f < len(_BASE):
        return _BASE[f]
    h = (0.11 + f * _GOLDEN) % 1.0
    light = (0.38, 0.55, 0.46)[f % 3]
    r, g, b = colorsys.hls_to_rgb(h, light, 0.75)
    return "#{:02x}{:02x}{:02x}".format(int(r * 255), int(g * 255), int(b * 255))


def run_color(i: int) -> str:
    """Colour of the i-th run in a comparison (same palette, so the first runs are tab10)."""
    return fine_color(i)


class FigureSink:
    """Saves figures as ``figures/<name>.png`` under ``out_dir`` and returns HTML embedding them as data URIs."""

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.fig_dir = self.out_dir / "figures"
        self.written: list[str] = []

    def _unique(self, name: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "figure"
        cand, i = base, 2
        while cand + ".png" in self.written:
            cand, i = f"{base}_{i}", i + 1
        return cand + ".png"

    def add(self, fig, name: str, caption: str = "", alt: str = "") -> str:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
        plt.close(fig)
        data = buf.getvalue()
        fname = self._unique(name)
        atomic_write_bytes(self.fig_dir / fname, data)
        self.written.append(fname)
        b64 = base64.b64encode(data).decode("ascii")
        cap = f"{esc(caption)} " if caption else ""
        return (
            f'<figure><img src="data:image/png;base64,{b64}" alt="{esc(alt or caption or name)}" '
            f'data-file="figures/{esc(fname)}">'
            f'<figcaption>{cap}<a href="figures/{esc(fname)}">[PNG]</a></figcaption></figure>'
        )

    def prune(self) -> None:
        """Remove PNGs left in figures/ by an earlier report that this one did not write."""
        if not self.fig_dir.is_dir():
            return
        for p in self.fig_dir.glob("*.png"):
            if p.name not in self.written:
                try:
                    p.unlink()
                except OSError:
                    pass


# ---- curves -------------------------------------------------------------------------------------------


class Line:
    """One curve: metrics key, legend label, optional fixed colour/width."""

    def __init__(self, key: str, label: str, color: str | None = None, width: float | None = None, style: str = "-"):
        self.key, self.label, self.color, self.width, self.style = key, label, color, width, style


class Panel:
    """One subplot: a title, y label, log scale flag and its lines."""

    def __init__(self, title: str, ylabel: str, lines: list[Line], logy: bool | None = False, percent: bool = False):
        # logy=None: decide from the data (log when every value is positive and they span > 20x)
        self.title, self.ylabel, self.lines, self.logy, self.percent = title, ylabel, lines, logy, percent


_STYLES = ["-", "--", ":", "-."]
# Plain tick labels on log axes: matplotlib's default 10^x labels go through mathtext, which made
# layout the dominant cost of a report.
_LOG_LABELS = FuncFormatter(lambda v, _: f"{v:.3g}")


def _grid(nrows: int, ncols: int, pw: float, ph: float, top: float = 0.45, left: float = 0.85, bottom: float = 0.6,
          right: float = 0.2, wgap: float = 0.95, hgap: float = 0.85):
    """A figure of nrows x ncols panels of pw x ph inches with fixed margins (inches) — cheaper and more
    predictable than tight_layout."""
    w = left + right + ncols * pw + (ncols - 1) * wgap
    h = top + bottom + nrows * ph + (nrows - 1) * hgap
    fig, axes = plt.subplots(nrows, ncols, figsize=(w, h), squeeze=False)
    fig.subplots_adjust(left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h,
                        wspace=wgap / pw, hspace=hgap / ph)
    return fig, axes


def _log_axis(ax) -> None:
    """Plain labels on a log y axis. Under a decade a log axis has at most one labelled (major) tick, and its
    2..9 minor ticks crowd together at the top; there the axis gets about five round values instead, at the
    size of every other tick label."""
    ax.yaxis.set_major_formatter(_LOG_LABELS)
    ax.yaxis.set_minor_formatter(NullFormatter())
    lo, hi = ax.get_ylim()
    if lo > 0 and hi / lo < 10:
        ticks = [t for t in MaxNLocator(nbins=5).tick_values(lo, hi) if lo <= t <= hi and t > 0]
        if len(ticks) >= 2:
            ax.yaxis.set_major_locator(FixedLocator(ticks))


def log_spaced(xs: Sequence[np.ndarray]) -> bool:
    """Whether points at these x (all positive) are crowded to the left the way log-spaced log points are
    (Papyan et al.'s NC epochs, e.g. 1, 2, 5, 12, 28, 66, 152, 350): at least 4 distinct values spanning ≥ 30x,
    with the median below a fifth of the maximum. Such panels get a log x axis; every-epoch curves (median ≈
    half the maximum) keep a linear one."""
    x = np.unique(np.concatenate([np.asarray(v, dtype=float).ravel() for v in xs])) if len(xs) else np.array([])
    x = x[np.isfinite(x)]
    if x.size < 4 or x.min() <= 0:
        return False
    return bool(x.max() >= 30 * x.min() and np.median(x) < x.max() / 5)


def plot_panels(panels: Sequence[Panel], runs: Sequence[tuple[str, object]], xlabel: str, suptitle: str = ""):
    """Small multiples. ``runs`` = [(label, Series)]; one run: colour per line; several: colour per run,
    line style per key. Returns the figure, or None if nothing had data."""
    panels = [p for p in panels if any(ln.key in s.values for _, s in runs for ln in p.lines)]
    if not panels:
        return None
    n = len(panels)
    ncols = min(n, 3)
    nrows = (n + ncols - 1) // ncols
    fig, axes = _grid(nrows, ncols, 3.4, 2.5, top=0.75 if suptitle else 0.45)
    multi = len(runs) > 1
    for ax, panel in zip(axes.flat, panels):
        logy = panel.logy
        if logy is None:
            vals = np.concatenate([s.values[ln.key] for _, s in runs for ln in panel.lines if ln.key in s.values])
            vals = vals[np.isfinite(vals)]
            logy = bool(vals.size and (vals > 0).all() and vals.max() > 20 * vals.min())
        drawn: list[np.ndarray] = []
        for ri, (rlabel, s) in enumerate(runs):
            for li, ln in enumerate(panel.lines):
                y = s.values.get(ln.key)
                if y is None:
                    continue
                if logy:
                    y = np.where(y > 0, y, np.nan)
                keep = np.isfinite(y) & np.isfinite(s.x)  # metrics logged at some epochs only: join the points
                if not keep.any():
                    continue
                x, y = s.x[keep], y[keep]
                drawn.append(x)
                if multi:
                    color, style = run_color(ri), _STYLES[li % len(_STYLES)]
                    label = rlabel
                else:
                    color, style, label = ln.color, ln.style, ln.label
                ax.plot(x, y, style, color=color, lw=ln.width or 1.6, label=label,
                        marker="o" if len(x) <= 40 else None, ms=3)
        ax.set_title(panel.title, fontsize=11)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(panel.ylabel)
        if logy:
            ax.set_yscale("log")
            _log_axis(ax)
        if panel.percent:
            ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
        ax.grid(alpha=0.3)
        if log_spaced(drawn):  # metrics logged at log-spaced epochs: otherwise most points sit in the first tick
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(_LOG_LABELS)
            ax.set_xlabel(f"{xlabel} (log scale)")
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if multi and len(panel.lines) > 1:  # legend: colour = run, line style = quantity
            present = [ln for ln in panel.lines if any(ln.key in s.values for _, s in runs)]
            handles = [Line2D([], [], color=run_color(i), lw=2, label=r) for i, (r, _) in enumerate(runs)]
            handles += [Line2D([], [], color="black", ls=_STYLES[panel.lines.index(ln) % len(_STYLES)], label=ln.label)
                        for ln in present]
            if len(handles) <= 16:
                ax.legend(handles=handles, fontsize=7, loc="best")
        else:
            handles, _ = ax.get_legend_handles_labels()
            if handles and len(handles) <= 14:
                ax.legend(fontsize=8, loc="best")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    if suptitle:
        fig.suptitle(suptitle, fontsize=12)
    return fig


# ---- features -----------------------------------------------------------------------------------------


def pca_2d(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Project onto the top-2 principal axes of ``train`` (centred on its mean; sign fixed so the largest
    loading of each axis is positive, for determinism). Returns the projected train and ``others``."""
    train = np.asarray(train, dtype=np.float64)
    mu = train.mean(0)
    _, _, vt = np.linalg.svd(train - mu, full_matrices=False)
    comps = vt[:2]
    if comps.shape[0] < 2:  # a single sample or 1-D features: pad with a zero axis
        comps = np.vstack([comps, np.zeros((2 - comps.shape[0], train.shape[1]))])
    for i in range(comps.shape[0]):
        j = np.argmax(np.abs(comps[i]))
        if comps[i, j] < 0:
            comps[i] = -comps[i]
    return [(np.asarray(a, dtype=np.float64) - mu) @ comps.T for a in (train, *others)]


def superclass_figure(title: str, fine_ids: Sequence[int], fine_names: Sequence[str],
                      train: tuple[np.ndarray, np.ndarray] | None, test: tuple[np.ndarray, np.ndarray] | None,
                      centroids: tuple[np.ndarray, np.ndarray] | None, confusion: np.ndarray | None,
                      confusion_cols: Sequence[str] | None = None):
    """Train / test PCA scatter (coloured by fine label, centroids as crosses) and the confusion matrix.

    ``train``/``test`` = (features (n, D), fine labels (n,)); ``centroids`` = (means (k, D), fine label of each).
    The PCA basis comes from the train features (test if no train)."""
    scat = [(nm, d) for nm, d in (("train", train), ("test", test)) if d is not None and len(d[1])]
    ncols = len(scat) + (confusion is not None)
    if ncols == 0:
        return None
    fig, axes = _grid(1, ncols, 3.5, 3.2, top=0.75, bottom=1.25, left=1.0, wgap=1.2)
    axes = list(axes.flat)
    if scat:
        basis = scat[0][1][0]
        projs = pca_2d(basis, *[d[0] for _, d in scat], *([centroids[0]] if centroids is not None else []))
        for i, (nm, (_, y)) in enumerate(scat):
            ax, z = axes[i], projs[1 + i]
            for f in fine_ids:
                m = y == f
                if m.any():
                    ax.scatter(z[m, 0], z[m, 1], s=7, alpha=0.55, color=fine_color(f), lw=0,
                               label=f"{fine_names[f] if f < len(fine_names) else f} ({m.sum()})")
            if centroids is not None and len(centroids[1]):
                zc = projs[-1]
                for (cx, cy), cf in zip(zc, centroids[1]):
                    ax.scatter([cx], [cy], marker="X", s=140, color=fine_color(cf), edgecolor="black", lw=1.2, zorder=5)
            ax.set_title(f"{nm} features (PCA)", fontsize=11)
            ax.set_xlabel("PC 1")
            ax.set_ylabel("PC 2")
            ax.grid(alpha=0.25)
            ax.legend(fontsize=7, loc="best", markerscale=2, title="fine label (n)", title_fontsize=7)
    if confusion is not None:
        ax = axes[-1]
        cm = np.asarray(confusion, dtype=float)
        rows = cm.sum(1, keepdims=True)
        frac = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
        ax.imshow(frac, cmap="Blues", vmin=0, vmax=1, aspect="auto")  # fill the panel (k x (k+1) is wide)
        rl = [str(fine_names[f]) if f < len(fine_names) else str(f) for f in fine_ids]
        cl = list(confusion_cols) if confusion_cols is not None else rl
        ax.set_xticks(range(cm.shape[1]), cl, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(cm.shape[0]), rl, fontsize=8)
        for (i, j), v in np.ndenumerate(cm):
            ax.text(j, i, f"{int(v)}", ha="center", va="center", fontsize=8,
                    color="white" if frac[i, j] > 0.5 else "black")
        ax.set_xlabel("recovered fine label")
        ax.set_ylabel("true fine label")
        ax.set_title("recovery confusion (test, counts)", fontsize=11)
    fig.suptitle(title, fontsize=12)
    return fig


def heatmap_figure(title: str, values: np.ndarray, xlabels: Sequence[str], ylabels: Sequence[str],
                   xname: str, yname: str, log: bool = False, percent: bool = False):
    """A grid heatmap (rows = ``yname`` values, columns = ``xname`` values), each cell annotated."""
    from matplotlib.colors import LogNorm

    v = np.asarray(values, dtype=float)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.0 + 0.9 * v.shape[1]), max(2.6, 1.0 + 0.6 * v.shape[0])))
    finite = v[np.isfinite(v)]
    norm = LogNorm() if log and finite.size and (finite > 0).all() else None
    im = ax.imshow(np.ma.masked_invalid(v), cmap="viridis", norm=norm, aspect="auto")
    fig.colorbar(im, ax=ax)
    ax.set_xticks(range(v.shape[1]), xlabels, fontsize=8)
    ax.set_yticks(range(v.shape[0]), ylabels, fontsize=8)
    ax.set_xlabel(xname)
    ax.set_ylabel(yname)
    for (i, j), x in np.ndenumerate(v):
        if np.isfinite(x):
            r, g, b, _ = im.cmap(im.norm(x))
            ax.text(j, i, f"{100 * x:.1f}%" if percent else f"{x:.3g}", ha="center", va="center", fontsize=8,
                    color="black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white")
    ax.set_title(title, fontsize=11)
    fig.tight_layout()
    return fig
