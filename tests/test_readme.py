"""The README is a front page: short, its commands run as written, and it leads to every manual page."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from test_docs import _code_blocks, shown_commands

from kerasemote.cli import build_parser

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
MAX_LINES = 150


def _readme_command_lines() -> list[str]:
    """The `kerasemote ...` lines of the README's code blocks (what a reader copies and runs)."""
    return shown_commands("\n".join(f"```\n{block}```" for block in _code_blocks(README)))


def test_readme_is_a_front_page_of_at_most_150_lines():
    assert len(README.splitlines()) <= MAX_LINES, (
        f"README.md has {len(README.splitlines())} lines, more than {MAX_LINES}: move detail into docs/")


def test_readme_shows_the_quick_start_and_the_demo():
    commands = [shlex.split(line)[1] for line in _readme_command_lines() if len(shlex.split(line)) > 1]
    assert {"generate", "train", "demo"} <= set(commands)


@pytest.mark.parametrize("line", _readme_command_lines())
def test_every_readme_command_parses_as_written(line):
    args = shlex.split(line)[1:]
    if args == ["--help"]:
        return
    parsed = build_parser().parse_args(args)  # an unknown command, option or value exits with an error
    assert getattr(parsed, "func", None) is not None, f"`{line}` names a command group, not a command"


def test_readme_links_every_manual_page():
    for page in sorted((ROOT / "docs").glob("*.md")):
        assert f"](docs/{page.name})" in README, f"README.md does not link docs/{page.name}"
