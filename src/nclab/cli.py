"""``nclab`` command line: a thin shell over the Python API.

Each subcommand lives in ``nclab.commands.<name>`` and exposes ``add_parser(subparsers)``, which
registers its parser and sets ``func`` (called with the parsed namespace, returning an exit code).
User errors (:class:`nclab.utils.errors.NclabError`) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys

from nclab import __version__
from nclab.utils import clock
from nclab.utils.errors import EXIT_PAUSED, NclabError, RunPaused

# Order here is the order in ``nclab --help``.
COMMANDS = [
    "demo",
    "data",
    "train",
    "metrics",
    "probe",
    "recover",
    "reproduce",
    "sweep",
    "ufm",
    "report",
    "compare",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nclab",
        description="Neural Collapse Lab: coarse-label training, NC metrics, fine-label recovery, deep linear theory.",
    )
    parser.add_argument("--version", action="version", version=f"nclab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"nclab.commands.{name}")
        except ModuleNotFoundError as e:  # a command not built yet; never hide other import errors
            if e.name == f"nclab.commands.{name}":
                continue
            raise
        mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    clock.mark_command_start()
    try:
        return _main(argv)
    finally:
        clock.clear_command_start()  # a Python caller's later Trainers count from their own construction


_NEGATIVE_VALUE = re.compile(r"-\.?\d[\d.,eE+-]*")


def _join_negative_values(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """``--counts -3,4`` -> ``--counts=-3,4``. argparse reads a value that starts with '-' as an option unless it
    is a plain number, so a negative entry in a comma list would end in "expected one argument" instead of the
    command's own message about the value. Options that take no value are left alone."""
    # the sub-commands' flags (store_true etc.): a token after one of them is not its value
    commands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    flags = {o for group in commands for sub in group.choices.values() for a in sub._actions if a.nargs == 0
             for o in a.option_strings}
    out: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok == "--":  # end of options: everything after it is a positional, as typed
            out += argv[i:]
            break
        if (tok.startswith("--") and "=" not in tok and tok not in flags and i + 1 < len(argv)
                and _NEGATIVE_VALUE.fullmatch(argv[i + 1])):
            out.append(f"{tok}={argv[i + 1]}")
            i += 2
            continue
        out.append(tok)
        i += 1
    return out


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(_join_negative_values(parser, list(sys.argv[1:] if argv is None else argv)))
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from nclab.utils import progress

    if getattr(args, "quiet", False) or getattr(args, "json", False):
        progress.set_quiet(True)
    try:
        rc = args.func(args)
    except NclabError as e:
        progress.close_bars()
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RunPaused as e:
        print(f"paused: {e}", file=sys.stderr)
        return EXIT_PAUSED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `nclab ... --json | head`: the reader went away; not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # the file system refused (a path that is a file, no permission, disk full, ...)
        progress.close_bars()
        where = f" {e.filename}" if e.filename else ""
        print(f"error:{where}: {e.strerror or e}; check that the path is a writable folder (or a readable file) "
              "and that the disk has space", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
