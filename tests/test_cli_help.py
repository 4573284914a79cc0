"""Every option of every command explains itself in --help."""

import argparse

from nclab.cli import build_parser


def _undocumented(parser: argparse.ArgumentParser, path: str) -> list[str]:
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                missing += _undocumented(sub, f"{path} {name}")
        elif action.dest != "help" and not isinstance(action, argparse._VersionAction) and not action.help:
            missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    return missing


def test_every_option_has_help_text():
    parser = build_parser()
    assert _undocumented(parser, "nclab") == []
    # the walk reaches the nested commands (a broken walk would pass vacuously)
    names = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)][0].choices
    assert {"train", "recover", "reproduce", "ufm"} <= set(names)
