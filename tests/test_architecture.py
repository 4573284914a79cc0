"""The one-way import rule of docs/architecture.md, checked on the source: no module imports a layer above its
own, at module level or inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# layer of each top-level module or subpackage of nclab (docs/architecture.md, "Layers")
LAYERS = {
    "utils": 0, "contracts": 0, "runlock": 0,
    "data": 1, "models": 1, "rundir": 1,
    "train": 2,
    "collapse": 3, "finegrain": 3, "theory": 3,
    "experiments": 4, "integrations": 4, "track": 4,
    "report": 5,
    "commands": 6, "cli": 6, "__main__": 6,
}


def modules():
    for f in sorted((SRC / "nclab").rglob("*.py")):
        parts = f.relative_to(SRC).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, f


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if parts[0] == "nclab" and len(parts) > 1 else None


def imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module, node.lineno
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, node.lineno


def test_every_part_of_the_package_has_a_layer():
    unplaced = sorted({name.split(".")[1] for name, _ in modules() if name != "nclab"} - set(LAYERS))
    assert not unplaced, f"add {unplaced} to LAYERS here and to docs/architecture.md"


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for name, path in modules():
        if name == "nclab":  # the package's lazy public API (nclab.__getattr__) may name any layer
            continue
        mine = layer(name)
        for target, line in imports(path):
            theirs = layer(target)
            if theirs is not None and theirs > mine:
                upward.append(f"{name}:{line} imports {target}")
    assert not upward, "\n".join(upward)


# the science (collapse, finegrain, theory) and the application layer (experiments) take Python arguments only:
# every command-line parser is in nclab.commands (docs/architecture.md, "Layers")
NO_ARGPARSE = ("nclab.collapse", "nclab.finegrain", "nclab.theory", "nclab.experiments")
PARSER_METHODS = {"add_argument", "add_parser", "add_subparsers", "add_argument_group", "set_defaults"}


def parser_pieces(path: Path):
    """``argparse`` imports and calls of argparse's parser-building methods (``p.add_argument(...)``, ...)."""
    for target, line in imports(path):
        if target == "argparse" or target.startswith("argparse."):
            yield f"{line} imports {target}"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in PARSER_METHODS:
            yield f"{node.lineno} calls .{node.func.attr}()"


def test_science_and_experiments_do_not_parse_command_lines():
    offenders = [f"{name}:{piece}" for name, path in modules()
                 if any(name == p or name.startswith(p + ".") for p in NO_ARGPARSE) for piece in parser_pieces(path)]
    assert not offenders, "move the parser into nclab.commands:\n" + "\n".join(offenders)


def test_the_parser_rule_catches_a_parser(tmp_path):
    """The checker itself: a planted argparse import (also inside a function) and a parser method call are found."""
    bad = tmp_path / "bad.py"
    bad.write_text("def add(sub):\n    import argparse\n    from argparse import ArgumentParser\n"
                   "    sub.add_parser('x').add_argument('--y')\n")
    assert sorted(parser_pieces(bad)) == ["2 imports argparse", "3 imports argparse", "4 calls .add_argument()",
                                          "4 calls .add_parser()"]


def test_the_metric_functions_and_the_second_pass_do_not_import_each_other_at_module_level():
    def module_level(path):
        tree = ast.parse(path.read_text())
        return {n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.module}

    metrics = module_level(SRC / "nclab" / "collapse" / "metrics.py")
    second = module_level(SRC / "nclab" / "collapse" / "second_pass.py")
    assert "nclab.collapse.second_pass" not in metrics and "nclab.collapse.metrics" not in second
    assert "nclab.collapse.geometry" in metrics and "nclab.collapse.geometry" in second


def test_the_rule_catches_an_upward_import(tmp_path):
    """The checker itself: a planted upward import is found."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from nclab.report import write_report\n")
    assert [t for t, _ in imports(bad) if layer(t) is not None and layer(t) > LAYERS["train"]] == ["nclab.report"]
