"""The manual agrees with the software: the command reference is current, links resolve, every command and
option a page shows exists, every Python name it cites imports, and user-facing pages tell no development
history."""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
from pathlib import Path

import pytest

from kerasemote.cli import build_parser
from kerasemote.cli.reference import REGENERATE, render

ROOT = Path(__file__).parent.parent
CLI_MD = ROOT / "docs" / "cli.md"
HISTORY = ROOT / "docs" / "history.md"
CARDS = [ROOT / "README.md", ROOT / "weights" / "README.md", ROOT / "classification" / "README.md",
         ROOT / "dataset" / "README.md", *sorted((ROOT / "dataset").glob("*/README.md"))]
PAGES = sorted((ROOT / "docs").glob("*.md"))
ALL_DOCS = CARDS + PAGES
WRITTEN_DOCS = [p for p in ALL_DOCS if p != CLI_MD]  # hand-written: cli.md is generated
USER_DOCS = [p for p in ALL_DOCS if p != HISTORY]  # history.md is the one page that tells the past

# Development-history words: sessions, lettered stages of the weights' training.
HISTORY_WORDS = [r"\b[Ss]essions? \d", r"\bSession\b", r"\bstage 2[a-f]\b"]
HISTORY_WORDS_WRITTEN = HISTORY_WORDS + [r"\bstage 1[b-f]\b"]


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _leaf_parsers(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()):
    """{command words: parser} of every command, groups included."""
    found = {words: parser}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update(_leaf_parsers(sub, words + (name,)))
    return found


COMMANDS = _leaf_parsers(build_parser())


def _code_blocks(text: str) -> list[str]:
    return re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def shown_commands(text: str) -> list[str]:
    """Every `kerasemote ...` command line a page shows: in code blocks (continuation lines joined, comments
    dropped) and in inline code spans."""
    found = []
    for block in _code_blocks(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s#\s.*$", "", line).strip()
            line = re.sub(r"^(nice -n \d+ )", "", line)
            if line.startswith("kerasemote "):
                found.append(line)
    found.extend(re.findall(r"`(kerasemote [^`]+)`", text))
    return found


def split_command(line: str) -> tuple[tuple[str, ...], list[str]]:
    """(command words, the rest) of a `kerasemote ...` line; words stop at the first unknown one."""
    try:
        tokens = shlex.split(line)[1:]
    except ValueError:  # an unbalanced quote in a prose span: fall back to spaces
        tokens = line.split()[1:]
    words: tuple[str, ...] = ()
    for token in tokens:
        if words + (token,) in COMMANDS:
            words += (token,)
        else:
            break
    return words, tokens[len(words):]


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings}


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    outside_code = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    return {_slug(h) for h in re.findall(r"^#+ (.+)$", outside_code, flags=re.MULTILINE)}


def test_cli_reference_matches_the_parsers():
    assert CLI_MD.exists(), f"docs/cli.md is missing: run `{REGENERATE}`"
    assert CLI_MD.read_text(encoding="utf-8") == render(), f"docs/cli.md is stale: run `{REGENERATE}`"


def test_reference_shows_each_visible_option_with_its_default_and_hides_suppressed_ones():
    parser = argparse.ArgumentParser(prog="kerasemote", description="Top.")
    commands = parser.add_subparsers(dest="command")
    go = commands.add_parser("go", help="go somewhere", description="Go somewhere.")
    go.add_argument("place", help="where")
    go.add_argument("--speed", type=float, default=2.5, help="how fast (default %(default)s)")
    go.add_argument("--mode", choices=["walk", "run"], default="walk", help="gait | pace")
    go.add_argument("--quiet", action="store_true", help="say nothing")
    go.add_argument("--old-speed", dest="speed", type=float, help=argparse.SUPPRESS)
    text = render(parser)
    assert "## `kerasemote go`" in text and "Go somewhere." in text
    assert "- [`kerasemote go`](#kerasemote-go): go somewhere" in text
    assert "kerasemote go PLACE [options]" in text
    assert "| `--speed SPEED` | `2.5` | how fast (default 2.5) |" in text
    assert "| `--mode {walk,run}` | `walk` | gait \\| pace |" in text
    assert "| `--quiet` |  | say nothing |" in text
    assert "--old-speed" not in text
    assert render(parser) == text


def test_reference_lists_every_command_and_every_visible_option():
    text = render()
    for words, parser in COMMANDS.items():
        if not words:
            continue
        assert f"## `kerasemote {' '.join(words)}`" in text
        section = text.split(f"## `kerasemote {' '.join(words)}`\n", 1)[1].split("\n## ", 1)[0]
        for action in parser._actions:
            if action.help is argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
                continue
            for flag in action.option_strings:
                assert f"`{flag}" in section or f", {flag}" in section, f"{flag} of {words} not in its section"


@pytest.mark.parametrize("path", ALL_DOCS, ids=_rel)
def test_every_link_resolves(path):
    text = path.read_text(encoding="utf-8")
    outside_code = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    for target in re.findall(r"\]\(([^)\s]+)\)", outside_code):
        if re.match(r"[a-z]+:", target):
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        assert linked.exists(), f"{_rel(path)}: link {target} names a missing file"
        if anchor and linked.suffix == ".md":
            assert anchor in _anchors(linked), f"{_rel(path)}: link {target}: no heading with that anchor"


def command_errors(text: str) -> list[str]:
    """One line per `kerasemote ...` command in ``text`` that names a missing command or option."""
    errors = []
    for line in shown_commands(text):
        words, rest = split_command(line)
        first = rest[0] if rest else ""
        # `kerasemote --help`, `kerasemote COMMAND --help` and `kerasemote ...` name no command on purpose.
        if not (words or first.startswith("-") or first.isupper() or first == "..."):
            errors.append(f"`{line}` is not a kerasemote command")
            continue
        options = _options(COMMANDS[words])
        for token in rest:
            flag = token.split("=", 1)[0]
            if re.fullmatch(r"--[a-z][a-z0-9-]*", flag) and flag not in options:
                errors.append(f"`{line}`: kerasemote {' '.join(words)} has no {flag}")
    return errors


def cited_names(text: str) -> set[str]:
    """Dotted ``kerasemote.*`` names, ``clf.*`` names and ``from kerasemote... import`` names in ``text``."""
    names = {n for n in re.findall(r"\b(kerasemote(?:\.[A-Za-z_]\w*)+)", text)
             if not n.endswith((".md", ".py", ".ipynb", ".json"))}
    names |= {f"kerasemote.classification.{n}" for n in re.findall(r"\bclf\.([A-Za-z_]\w*)", text)}
    imports = re.findall(r"^from (kerasemote[\w.]*) import ([\w, ]+?)(?:\s+#.*)?$", text, flags=re.MULTILINE)
    for module, imported in imports:
        names |= {f"{module}.{n.split(' as ')[0].strip()}" for n in imported.split(",")}
    return names


def unresolved(name: str) -> str | None:
    """Why ``name`` does not import, or None when it does."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return f"{'.'.join(parts[:cut])} has no {attr}"
            obj = getattr(obj, attr)
        return None
    return "no such module"


def history_words(text: str, patterns: list[str]) -> list[str]:
    return [m.group(0) for p in patterns for m in re.finditer(p, text)]


def test_the_checkers_catch_a_missing_command_option_name_and_history_word():
    page = "```bash\nkerasemote generate x --no-such\nkerasemote nosuch --out d\n```\n`kerasemote demo --out d`"
    assert command_errors(page) == ["`kerasemote generate x --no-such`: kerasemote generate has no --no-such",
                                    "`kerasemote nosuch --out d` is not a kerasemote command"]
    assert unresolved("kerasemote.no_such_module") is not None and unresolved("kerasemote.load_model") is None
    assert cited_names("from kerasemote.training import train, TrainConfig  # x\nclf.load_classifier") == {
        "kerasemote.training", "kerasemote.training.train", "kerasemote.training.TrainConfig",
        "kerasemote.classification.load_classifier"}
    assert history_words("as in session 6. Session notes: the stage 2f weights", HISTORY_WORDS) == [
        "session 6", "Session", "stage 2f"]
    assert history_words("stage 2 trains the UNet over a Colab session", HISTORY_WORDS_WRITTEN) == []


@pytest.mark.parametrize("path", WRITTEN_DOCS, ids=_rel)
def test_every_command_and_option_shown_exists(path):
    errors = command_errors(path.read_text(encoding="utf-8"))
    assert not errors, f"{_rel(path)}: " + "; ".join(errors)


@pytest.mark.parametrize("path", WRITTEN_DOCS, ids=_rel)
def test_every_python_name_cited_imports(path):
    names = cited_names(path.read_text(encoding="utf-8"))
    problems = [f"{name} ({unresolved(name)})" for name in sorted(names) if unresolved(name)]
    assert not problems, f"{_rel(path)} cites names that do not import: " + ", ".join(problems)


@pytest.mark.parametrize("path", USER_DOCS, ids=_rel)
def test_user_facing_docs_tell_no_development_history(path):
    found = history_words(path.read_text(encoding="utf-8"),
                          HISTORY_WORDS if path == CLI_MD else HISTORY_WORDS_WRITTEN)
    assert not found, f"{_rel(path)} says {found}: development history belongs in docs/history.md"
