"""Render the command-line reference (docs/cli.md) from the argparse parsers.

Every command and subcommand of ``kerasemote``, its description and each option with its
default and help, as Markdown. The text depends only on the parsers, never on the terminal
width or the Python version's help formatter, so the file in the repository can be compared
with a fresh rendering (tests/test_docs.py does).

    python -m kerasemote.cli.reference > docs/cli.md
    python -m kerasemote.cli.reference --write docs/cli.md
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Iterator

from kerasemote.cli import build_parser

REGENERATE = "python -m kerasemote.cli.reference --write docs/cli.md"


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser, str]]:
    """(name, parser, one-line help) of each direct subcommand, in registration order."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            seen: set[int] = set()
            result = []
            for name, sub in action.choices.items():
                if id(sub) not in seen:  # aliases map several names to one parser
                    seen.add(id(sub))
                    result.append((name, sub, helps.get(name, "")))
            return result
    return []


def _metavar(action: argparse.Action) -> str:
    if action.nargs == 0:
        return ""
    if action.metavar is not None:
        name = action.metavar if isinstance(action.metavar, str) else " ".join(action.metavar)
    elif action.choices is not None:
        name = "{" + ",".join(str(c) for c in action.choices) + "}"
    else:
        name = action.dest.upper().replace("-", "_") if action.option_strings else action.dest.upper()
    if action.nargs == "?":
        return f"[{name}]"
    if action.nargs == "*":
        return f"[{name} ...]"
    if action.nargs == "+":
        return f"{name} [{name} ...]"
    if isinstance(action.nargs, int) and action.nargs > 1:
        return " ".join([name] * action.nargs)
    return name


def _help(action: argparse.Action, prog: str) -> str:
    text = action.help or ""
    if "%" in text:  # argparse's own expansion of %(default)s, %(choices)s, %(prog)s
        params = {k: v for k, v in vars(action).items() if v is not argparse.SUPPRESS}
        params["prog"] = prog
        if params.get("choices") is not None:
            params["choices"] = ", ".join(str(c) for c in params["choices"])
        text = text % params
    return " ".join(text.split())


def _default(action: argparse.Action) -> str:
    value = action.default
    if action.nargs == 0 or value is None or value is argparse.SUPPRESS or value == []:
        return ""
    if isinstance(value, (list, tuple)):
        value = " ".join(str(v) for v in value)
    return f"`{value}`" if value != "" else '`""`'


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _options_table(parser: argparse.ArgumentParser) -> Iterator[str]:
    rows = []
    for action in parser._actions:
        if action.help is argparse.SUPPRESS or isinstance(action, argparse._SubParsersAction):
            continue
        if isinstance(action, argparse._HelpAction):
            continue
        metavar = _metavar(action)
        if action.option_strings:
            name = ", ".join(action.option_strings) + (f" {metavar}" if metavar else "")
        else:
            name = metavar
        rows.append(f"| `{_cell(name)}` | {_cell(_default(action))} | {_cell(_help(action, parser.prog))} |")
    if rows:
        yield "| option | default | what it does |"
        yield "|---|---|---|"
        yield from rows
        yield ""


def _usage(words: tuple[str, ...], parser: argparse.ArgumentParser) -> str:
    positionals = [_metavar(a) for a in parser._actions
                   if not a.option_strings and not isinstance(a, argparse._SubParsersAction)]
    return " ".join(["kerasemote", *words, *positionals, "[options]"])


def _command(words: tuple[str, ...], parser: argparse.ArgumentParser, summary: str) -> Iterator[str]:
    yield f"## `kerasemote {' '.join(words)}`"
    yield ""
    description = inspect.cleandoc(parser.description or summary or "")
    if description:
        yield description
        yield ""
    subcommands = _subcommands(parser)
    if subcommands:
        for name, _, help_text in subcommands:
            yield f"- [`kerasemote {' '.join(words)} {name}`](#{_anchor(words + (name,))}): {help_text}"
        yield ""
    else:
        yield "```"
        yield _usage(words, parser)
        yield "```"
        yield ""
        yield from _options_table(parser)
    if parser.epilog:
        yield inspect.cleandoc(parser.epilog)
        yield ""
    for name, sub, help_text in subcommands:
        yield from _command(words + (name,), sub, help_text)


def _anchor(words: tuple[str, ...]) -> str:
    """GitHub's anchor of the heading ``kerasemote WORDS``."""
    return "-".join(("kerasemote",) + words)


def render(parser: argparse.ArgumentParser | None = None) -> str:
    """The Markdown reference of every command of ``parser``.

    Args:
        parser: the top-level parser; default ``kerasemote.cli.build_parser()``.

    Returns:
        The text of docs/cli.md, ending in one newline.
    """
    if parser is None:
        parser = build_parser()
    lines = [
        "# Command-line reference",
        "",
        f"Generated from the command parsers by `{REGENERATE}`; edit the parsers, not this file.",
        f"`{parser.prog} COMMAND --help` prints the same text for one command.",
        "",
        inspect.cleandoc(parser.description or ""),
        "",
    ]
    lines += list(_options_table(parser))
    for name, _, help_text in _subcommands(parser):
        lines.append(f"- [`kerasemote {name}`](#{_anchor((name,))}): {help_text}")
    lines.append("")
    for name, sub, help_text in _subcommands(parser):
        lines += list(_command((name,), sub, help_text))
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(prog="python -m kerasemote.cli.reference", description=__doc__.splitlines()[0])
    cli.add_argument("--write", metavar="FILE", help="write the reference to FILE instead of printing it")
    args = cli.parse_args(argv)
    text = render()
    if args.write:
        with open(args.write, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
