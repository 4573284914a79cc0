"""CLI subcommands: one module each, with ``add_parser(subparsers)``. See nclab.cli. ``reproduce_finegrain`` and
``reproduce_theory`` hold the parsers of ``nclab reproduce``'s experiments (``reproduce.experiment_modules``)."""


def missing_subcommand(parser) -> int:
    """A command group run without its sub-command: the usage on stderr and exit 2, as argparse does for a
    missing argument (exit 0 would tell a script that something ran)."""
    import sys

    parser.print_help(sys.stderr)
    return 2
