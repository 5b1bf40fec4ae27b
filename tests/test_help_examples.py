"""Every example in a `--help` text parses as written: its subcommand and flags exist (the README's walkthrough is
run end to end by tests/test_readme_walkthrough.py)."""

from __future__ import annotations

import argparse
import re
import shlex

import pytest

from drirl.cli import EPILOG, build_parser


def _parsers(parser: argparse.ArgumentParser, prefix: str = "drirl"):
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{prefix} {name}")


def help_examples() -> list[tuple[str, str]]:
    """(where, command) of every `drirl ...` line of every epilog, continuation lines joined, comments and shell
    redirections cut."""
    found = []
    texts = [("drirl", EPILOG)] + [(name, p.epilog or "") for name, p in _parsers(build_parser())]
    for where, text in texts:
        for line in re.sub(r"\\\n\s*", " ", text).splitlines():
            line = line.strip()
            if not line.startswith("drirl "):
                continue
            line = re.split(r"\s+#\s", line)[0]
            found.append((where, re.split(r"\s[>|]\s", line)[0].strip()))
    return found


def test_every_subcommand_has_examples():
    wheres = {where for where, _ in help_examples()}
    assert {"drirl", "drirl run", "drirl eval", "drirl align", "drirl judge", "drirl data split"} <= wheres


@pytest.mark.parametrize("where,command", help_examples())
def test_help_example_parses(where, command, monkeypatch):
    argv = shlex.split(command)[1:]
    try:
        build_parser().parse_args(argv)
    except SystemExit as err:  # argparse exits on an unknown flag or subcommand
        pytest.fail(f"{where}: `{command}` does not parse (exit {err.code})")
    args = build_parser().parse_args(argv)
    if args.command == "eval" and args.model.startswith("runs/"):
        # An aligned run keeps its model in <run>/model: the run folder itself is not a model folder.
        assert args.model.endswith("/model"), (where, command)
