"""The header every benchmark prints first: machine, versions and date, so a number pasted anywhere carries
where and when it was measured."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def header(device: str = "cpu") -> str:
    """One line: date (UTC), CPU model and cores, GPU name when ``device`` is CUDA, Python / torch / numpy /
    nclab versions and the git commit of the checkout."""
    import numpy as np
    import torch

    import nclab

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).resolve().parent).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    gpu = ""
    if str(device).startswith("cuda") and torch.cuda.is_available():
        gpu = f", GPU {torch.cuda.get_device_name(0)}"
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"# {now}; {cpu_name()}, {os.cpu_count()} cores{gpu}; Python {platform.python_version()}, torch "
            f"{torch.__version__}, numpy {np.__version__}, nclab {nclab.__version__} ({commit})")


if __name__ == "__main__":
    print(header())
