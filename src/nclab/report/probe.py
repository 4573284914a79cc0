"""HTML report of ``nclab probe``: NC1 and recovery accuracy across depth, and per-layer tables."""

from __future__ import annotations

from pathlib import Path

from nclab.report.html import esc, kv_table, page, table
from nclab.utils.io import atomic_write_text

TABLE_METRICS = ("nc1", "nc1_quotient", "cdnv", "equiangular_means", "etf_error_means", "self_duality",
                 "ncc_mismatch", "hyperspherical_log_energy", "hyperspherical_riesz1_energy")


def write_probe_report(result, out_dir: str | Path) -> Path:
    """``out_dir/probe.html`` and ``out_dir/figures/depth.png`` from a :class:`ProbeResult`."""
    out = Path(out_dir)
    result.plot(out / "figures" / "depth.png")
    parts = [f"<h1>probe: {esc(result.model)}</h1>",
             kv_table([(k, v) for k, v in result.info.items() if not isinstance(v, (dict, list))]),
             "<h2>Across depth</h2>", '<img src="figures/depth.png" alt="NC1 and recovery across depth">']
    for split, per_layer in result.metrics.items():
        parts.append(f"<h2>split {esc(split)}</h2>")
        views = sorted({v for m in per_layer.values() for v in m if v != "fine_within_coarse"})
        cols = ["layer", "D", "reduction"] + [f"{v} {m}" for v in views for m in TABLE_METRICS
                                            if any(m in per_layer[n].get(v, {}) for n in per_layer)]
        if any("fine_within_coarse" in m for m in per_layer.values()):
            cols.append("fine_within_coarse nc1 (mean)")
        rows = []
        for n in result.layers:
            m = per_layer.get(n, {})
            row = [n, result.dims.get(n), result.reductions.get(n)]
            for c in cols[3:]:
                if c.startswith("fine_within_coarse"):
                    row.append(m.get("fine_within_coarse", {}).get("mean"))
                else:
                    v, metric = c.split(" ", 1)
                    row.append(m.get(v, {}).get(metric))
            rows.append(row)
        parts.append(table(cols, rows))
    if result.recovery:
        parts.append("<h2>Fine-label recovery</h2>")
        rows = [[n, r.get("test_acc"), r.get("oracle_test_acc"), r.get("train_acc"),
                 r.get("options", {}).get("routing")]
                for n, r in result.recovery.items()]
        parts.append(table(["layer", "test_acc", "oracle_test_acc", "train_acc", "routing"], rows))
    return atomic_write_text(out / "probe.html", page(f"probe {result.model}", "\n".join(parts)))
