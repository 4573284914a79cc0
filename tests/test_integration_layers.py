"""The integration modules keep the package layering: no import (module or function level) of a layer above."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "nclab"
FORBIDDEN = {
    "integrations": ("nclab.report", "nclab.commands", "nclab.cli"),
    "track.py": ("nclab.report", "nclab.commands", "nclab.cli"),
    "train/loggers.py": ("nclab.integrations", "nclab.experiments", "nclab.report", "nclab.commands"),
    "train/trainer.py": ("nclab.integrations", "nclab.experiments", "nclab.report", "nclab.commands"),
    "utils/extras.py": ("nclab.train", "nclab.integrations", "nclab.report", "nclab.commands"),
}


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def test_integration_modules_import_no_higher_layer():
    bad = []
    for where, banned in FORBIDDEN.items():
        target = SRC / where
        for f in (sorted(target.rglob("*.py")) if target.is_dir() else [target]):
            for mod in _imports(f):
                if mod.startswith(banned):
                    bad.append(f"{f.relative_to(SRC)} imports {mod}")
    assert bad == []


def test_frameworks_are_imported_lazily():
    import subprocess
    import sys

    code = ("import sys, nclab.integrations, nclab.track, nclab.train.trainer; "
            "print([m for m in ('lightning', 'transformers', 'tensorboard', 'mlflow', 'wandb') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr
