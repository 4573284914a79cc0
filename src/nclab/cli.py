"""``nclab`` command line: a thin shell over the Python API.

Each subcommand lives in ``nclab.commands.<name>`` and exposes ``add_parser(subparsers)``, which
registers its parser and sets ``func`` (called with the parsed namespace, returning an exit code).
User errors (:class:`nclab.utils.errors.NclabError`) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import re
import sys

from nclab import __version__
from nclab.commands import compare, data, demo, metrics, probe, recover, report, reproduce, sweep, train, ufm
from nclab.utils import clock
from nclab.utils.errors import EXIT_PAUSED, NclabError, RunPaused

# The subcommands, in the order of ``nclab --help``; each module's ``add_parser(subparsers)`` registers its parser.
COMMANDS = [demo, data, train, metrics, probe, recover, reproduce, sweep, ufm, report, compare]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nclab",
        description="Neural Collapse Lab: coarse-label training, NC metrics, fine-label recovery, deep linear theory.",
    )
    parser.add_argument("--version", action="version", version=f"nclab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in COMMANDS:
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


RESUMABLE = ("train", "reproduce")  # commands whose interrupted work continues with --resume


def resume_command(argv: list[str]) -> str:
    """The command line that continues an interrupted ``argv``: the same words with ``--resume`` (and without
    ``--force``, which would start over)."""
    import shlex

    words = [w for w in argv if w != "--force"]
    if "--resume" not in words:
        words.append("--resume")
    return "nclab " + " ".join(shlex.quote(w) for w in words)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(_join_negative_values(parser, argv))
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from nclab.utils import progress

    if getattr(args, "quiet", False) or getattr(args, "json", False):
        progress.set_quiet(True)
    try:
        _check_torchrun(args.command, getattr(args, "experiment", None))
        rc = args.func(args)
    except NclabError as e:
        progress.close_bars()
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RunPaused as e:
        from nclab.train import distributed

        if not distributed.active():
            print(f"paused: {e}", file=sys.stderr)
            return EXIT_PAUSED
        # torchrun reports any non-zero exit as a failed rank: paused ranks exit 0 (status.json says paused)
        if distributed.is_main():
            print(f"paused: {e}", file=sys.stderr)
        return 0
    except KeyboardInterrupt:
        progress.close_bars()
        if args.command in RESUMABLE:
            print(f"interrupted; continue with: {resume_command(argv)}", file=sys.stderr)
        elif args.command == "sweep":
            print("interrupted; run the same command again to continue (complete cells are skipped)", file=sys.stderr)
        else:
            print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `nclab ... --json | head`: the reader went away; not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # the file system refused (a path that is a file, no permission, disk full, ...)
        progress.close_bars()
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}; check that the path is a writable folder (or a readable file) "
              "and that the disk has space", file=sys.stderr)
        return 2
    _leave_process_group()
    return int(rc or 0)


# commands that write run folders or reports from every process: under torchrun (docs/distributed.md) they would
# race on the same files, so they refuse instead of half-working. nclab reproduce of paper A's trained experiments
# and nclab sweep are data-parallel (rank 0 writes); the theory experiments refuse (TORCHRUN_EXPERIMENTS).
NOT_UNDER_TORCHRUN = ("demo", "data", "recover", "ufm", "report", "compare")
DATA_PARALLEL = "nclab train, nclab metrics --run, nclab reproduce cifar10-coarse5|cifar100-coarse20|cifar10-finer " \
                "and nclab sweep"


def _check_torchrun(command: str | None, experiment: str | None = None) -> None:
    if command not in NOT_UNDER_TORCHRUN and command != "reproduce":
        return
    from nclab.train.distributed import env_world_size

    if env_world_size() <= 1:
        return
    if command == "reproduce":
        from nclab.experiments.finegrain_runs import EXPERIMENTS

        if experiment is None or experiment in EXPERIMENTS:
            return
        command = f"reproduce {experiment}"
    raise NclabError(f"nclab {command} does not run under torchrun (WORLD_SIZE > 1); only {DATA_PARALLEL} "
                     f"are data-parallel: run nclab {command} as one process")


def _leave_process_group() -> None:
    """A command that finished normally under torchrun leaves the process group cleanly (after an error the
    process exits without waiting on peers that may be gone)."""
    if "torch.distributed" in sys.modules:
        from nclab.train import distributed

        distributed.shutdown()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
