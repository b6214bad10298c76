"""The README's command tour and the CLI parser agree: every command is documented, every
documented command and option exists."""

import argparse
import re
from pathlib import Path

from kerasemote.cli import build_parser

README = (Path(__file__).parent.parent / "README.md").read_text()


def _subcommands(parser: argparse.ArgumentParser, prefix=()):
    """(command words, parser) for every leaf command."""
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not actions:
        yield prefix, parser
        return
    for name, sub in actions[0].choices.items():
        yield from _subcommands(sub, prefix + (name,))


def _documented_invocations():
    """Lines of the README's command table and code blocks that run `kerasemote ...`."""
    for line in README.splitlines():
        for match in re.finditer(r"`?kerasemote ((?:[a-z][a-z0-9-]*)(?: [a-z][a-z0-9-]*)?)([^`|]*)", line):
            yield match.group(1).split(), match.group(2)


COMMANDS = {words: parser for words, parser in _subcommands(build_parser())}


def _command_of(words):
    for n in (2, 1):
        if tuple(words[:n]) in COMMANDS:
            return tuple(words[:n])
    return None


def test_every_cli_command_is_in_the_readme():
    for words in COMMANDS:
        assert f"kerasemote {' '.join(words)}" in README, f"`kerasemote {' '.join(words)}` is not documented"


def test_every_documented_option_exists():
    checked = 0
    for words, rest in _documented_invocations():
        command = _command_of(words)
        if command is None:
            continue
        options = {s for a in COMMANDS[command]._actions for s in a.option_strings}
        for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", rest):
            assert flag in options, f"README documents {flag} for `kerasemote {' '.join(command)}`"
            checked += 1
    assert checked > 20


def test_every_option_of_every_command_is_documented():
    for words, parser in COMMANDS.items():
        for action in parser._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag != "--help":
                    assert flag in README, f"{flag} of `kerasemote {' '.join(words)}` is not in the README"
