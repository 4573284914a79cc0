"""HTML run reports: one self-contained ``report.html`` per run directory (figures embedded as PNG data
URIs and also saved in ``figures/``), comparisons of several runs, and the plain-text results table.

```python
from nclab.report import write_report, try_write_report, write_compare_report, results_text, load_run
write_report("runs/demo")              # -> Path("runs/demo/report.html")
try_write_report("runs/demo")          # same, but returns None instead of raising (end of a training run)
write_compare_report(["runs/a", "runs/b"], "runs/compare-a-b")
print(results_text(load_run("runs/demo")))
```
"""

from nclab.report.compare import default_compare_dir, write_compare_report
from nclab.report.load import RunData, load_run
from nclab.report.sections import results_rows, results_text
from nclab.report.writer import try_write_report, write_report

__all__ = [
    "write_report",
    "try_write_report",
    "write_compare_report",
    "default_compare_dir",
    "load_run",
    "RunData",
    "results_rows",
    "results_text",
]
