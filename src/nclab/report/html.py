"""HTML building blocks: escaping, number formatting, tables and the page shell (inline CSS, no JS).

Every piece of text that comes from a run directory goes through :func:`esc`; the page loads nothing
from the network (figures are ``data:`` URIs, styles are inline).
"""

from __future__ import annotations

import html
import math
from typing import Any, Sequence

CSS = """
:root { --fg:#1d2330; --muted:#5b6475; --line:#d9dde5; --bg:#ffffff; --soft:#f5f7fa; --accent:#2456a6;
        --ok:#1e7b34; --warn:#9a6200; --bad:#b3261e; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
       font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif; }
main { max-width:1240px; margin:0 auto; padding:20px 28px 60px; }
h1 { font-size:26px; margin:8px 0 2px; }
h2 { font-size:20px; margin:34px 0 10px; padding-bottom:4px; border-bottom:2px solid var(--line); }
h3 { font-size:16px; margin:22px 0 8px; }
a { color:var(--accent); }
.sub { color:var(--muted); margin:0 0 12px; }
.pill { display:inline-block; padding:1px 10px; border-radius:999px; font-size:13px; font-weight:600;
        color:#fff; background:var(--muted); vertical-align:middle; }
.pill.complete { background:var(--ok); } .pill.running, .pill.paused { background:var(--warn); }
.pill.stopped_nan, .pill.interrupted, .pill.failed, .pill.damaged { background:var(--bad); }
.banner { border:2px solid var(--bad); background:#fdecea; color:#5f1410; border-radius:8px; padding:12px 16px;
          margin:14px 0; font-size:16px; }
.banner.warn { border-color:var(--warn); background:#fff4e0; color:#4d3100; }
.banner strong { display:block; font-size:18px; margin-bottom:2px; }
nav.toc { background:var(--soft); border-radius:8px; padding:8px 14px; margin:12px 0; font-size:14px; }
nav.toc a { margin-right:14px; white-space:nowrap; }
table { border-collapse:collapse; margin:6px 0 14px; font-size:14px; display:block; max-width:100%; overflow-x:auto; }
td, th { overflow-wrap:anywhere; }
th, td { border:1px solid var(--line); padding:4px 10px; text-align:left; vertical-align:top; }
th { background:var(--soft); font-weight:600; }
td.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
table.results td:first-child { min-width:360px; }
table.results tr.headline td { font-weight:700; }
table.kv th { width:200px; }
table.kv td { font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; font-size:13px; word-break:break-all; }
table.heat td { text-align:center; min-width:80px; font-variant-numeric:tabular-nums; }
table.heat td a { color:inherit; text-decoration:none; display:block; }
table.heat td a:hover { text-decoration:underline; }
.note { color:var(--muted); font-size:13px; }
pre { background:var(--soft); padding:10px 12px; border-radius:6px; overflow:auto; font-size:12.5px; max-height:520px; }
details { margin:8px 0; } summary { cursor:pointer; color:var(--accent); }
figure { margin:10px 0 22px; }
figure img { max-width:100%; height:auto; border:1px solid var(--line); border-radius:4px; display:block; }
figcaption { color:var(--muted); font-size:13px; margin-top:4px; }
.problems { color:var(--warn); }
"""


def esc(text: Any) -> str:
    """HTML-escape any value (quotes included)."""
    return html.escape("" if text is None else str(text), quote=True)


def is_acc_key(key: str) -> bool:
    """Accuracy-like metric keys (stored as fractions in 0..1, shown as percent)."""
    last = key.rsplit(".", 1)[-1]
    return last == "acc" or last.endswith("_acc") or last.startswith("acc_") or last in ("accuracy", "fine_test_acc")


def fmt_value(v: Any, *, percent: bool = False) -> str:
    """Deterministic text for a number (4 significant digits; percent with 2 decimals); other values as str."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        f = float(v)
        if math.isnan(f):
            return "NaN"
        if math.isinf(f):
            return "∞" if f > 0 else "−∞"
        if percent:
            return f"{100.0 * f:.2f} %"
        if isinstance(v, int):
            return str(v)
        if f != 0 and (abs(f) < 1e-4 or abs(f) >= 1e6):
            return f"{f:.3e}"
        return f"{f:.4g}"
    return str(v)


def _cell(v: Any, percent: bool = False) -> str:
    if isinstance(v, RawHTML):
        return f'<td class="{esc(v.cls)}">{v.html}</td>' if v.cls else f"<td>{v.html}</td>"
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return f'<td class="num">{esc(fmt_value(v, percent=percent))}</td>'
    return f"<td>{esc(fmt_value(v))}</td>"


class RawHTML:
    """A table cell that is already HTML (built from escaped parts)."""

    def __init__(self, html_text: str, cls: str = ""):
        self.html, self.cls = html_text, cls


def num_cell(v: Any, percent: bool = False) -> RawHTML:
    """A right-aligned number cell with an explicit percent choice."""
    return RawHTML(esc(fmt_value(v, percent=percent)), "num")


def table(columns: Sequence[Any], rows: Sequence[Sequence[Any]], *, cls: str = "",
          percent_cols: Sequence[int] = (), row_classes: Sequence[str] | None = None) -> str:
    """A plain table; numbers right-aligned; ``percent_cols`` formatted as percentages."""
    pc = set(percent_cols)
    out = [f'<table class="{esc(cls)}">' if cls else "<table>", "<thead><tr>"]
    out += [f"<th>{esc(c)}</th>" for c in columns]
    out.append("</tr></thead><tbody>")
    for i, row in enumerate(rows):
        rc = row_classes[i] if row_classes and row_classes[i] else ""
        out.append(f'<tr class="{esc(rc)}">' if rc else "<tr>")
        out += [_cell(v, j in pc) for j, v in enumerate(row)]
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def kv_table(pairs: Sequence[tuple[str, Any]]) -> str:
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(fmt_value(v))}</td></tr>" for k, v in pairs)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def link(href: str | None, text: str) -> str:
    """A link, or (``href`` None: the target is missing) the text marked as such."""
    if href is None:
        return f'{esc(text)} <span class="note">(folder missing)</span>'
    return f'<a href="{esc(href)}">{esc(text)}</a>'


def page(title: str, body: str) -> str:
    """The whole self-contained document (the empty favicon stops the browser from requesting one)."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body><main>\n{body}\n</main></body></html>\n"
    )
