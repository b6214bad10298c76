"""``kerasemote demo``: the whole workflow on the embedded tiny model, offline, in minutes.

Its options are DemoConfig's fields (``--kebab-name``, type, default, help and choices from the
field), so a new field is a new option; only ``--out`` is the command's own.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing


def register(subparsers) -> None:
    from kerasemote.demo import DemoConfig  # light: TensorFlow loads only when the demo runs

    p = subparsers.add_parser(
        "demo",
        help="the whole workflow on the tiny model: data, textual inversion, samples, mixing, success rates",
        description=(
            "Prepare the packaged emoji sets at 64 px, learn <broccoli> from its images and <happy> <sad> <angry> "
            "<in-love> from the labelled faces (textual inversion), LoRA adapters for the concept on top of its "
            "token, draw the emotion prompts, tokens and the concept (with and without its LoRA), mix the concept "
            "with an emotion, train a judge (a ResNet-50 gate: face / the concept / other emoji, and ResNet-50s on the "
            "four emotions' faces, averaged) and score "
            "--num-images generations per prompt. Writes OUT/index.html with every figure, the success-rate table "
            "and the timings (measured times: docs/demo.md)."
        ),
    )
    p.add_argument("--out", default="demo", help="output folder (default demo)")
    add_config_options(p, DemoConfig)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kerasemote.demo import DemoConfig, run_demo

    run_demo(args.out, config_from_args(DemoConfig, args))
    return 0


# ---------------------------------------------------------------------- options from a config dataclass


def option_fields(config_class: type) -> list[dataclasses.Field]:
    """The fields of ``config_class`` that are command-line options (all but ``metadata["option"] = False``)."""
    return [f for f in dataclasses.fields(config_class) if f.metadata.get("option", True)]


def add_config_options(parser: argparse.ArgumentParser, config_class: type) -> None:
    """One option per field of the dataclass ``config_class``, in field order.

    ``field_name`` becomes ``--field-name`` with the field's default and ``metadata["help"]``
    (followed by ``(default X)`` unless the default is None), ``metadata["choices"]`` and
    ``metadata["metavar"]`` where given. ``int`` / ``float`` fields parse as such, ``X | None``
    as ``X``, ``tuple[X, ...]`` from a comma-separated list. A ``bool`` field that defaults to
    True becomes ``--no-field-name`` (help: "no " + its help), one that defaults to False
    ``--field-name``.

    Raises:
        TypeError: a field's type is none of those.
    """
    hints = typing.get_type_hints(config_class)
    for f in option_fields(config_class):
        flag, text = f.name.replace("_", "-"), f.metadata.get("help", "")
        kind = _plain_type(hints[f.name])
        if kind is bool:
            if f.default:
                parser.add_argument(f"--no-{flag}", dest=f.name, action="store_false", help=f"no {text}")
            else:
                parser.add_argument(f"--{flag}", dest=f.name, action="store_true", help=text)
            continue
        options: dict = {"dest": f.name, "default": f.default}
        if text:
            options["help"] = text if f.default is None else f"{text} (default {_shown(f.default)})"
        if typing.get_origin(kind) is tuple:
            options["type"] = _comma_list(typing.get_args(kind)[0])
        elif kind in (int, float):
            options["type"] = kind
        elif kind is not str:
            raise TypeError(f"{config_class.__name__}.{f.name}: expected a type of int, float, str, bool, "
                            f"tuple[X, ...] or X | None for a command-line option, found {hints[f.name]}")
        for key in ("choices", "metavar"):
            if key in f.metadata:
                options[key] = list(f.metadata[key]) if key == "choices" else f.metadata[key]
        parser.add_argument(f"--{flag}", **options)


def config_from_args(config_class: type, args: argparse.Namespace):
    """``config_class`` from the options :func:`add_config_options` added (other fields keep their defaults)."""
    return config_class(**{f.name: getattr(args, f.name) for f in option_fields(config_class)})


def _plain_type(hint):
    """``X | None`` -> ``X``; any other type as it is."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        kinds = [k for k in typing.get_args(hint) if k is not type(None)]
        return kinds[0] if len(kinds) == 1 else hint
    return hint


def _shown(value) -> str:
    """A default as the help shows it: ``2e-3`` -> ``0.002``, ``7.0`` -> ``7``, a tuple comma-separated."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def _comma_list(item: type):
    def parse(text: str) -> tuple:
        return tuple(item(s.strip()) for s in text.split(",") if s.strip())

    parse.__name__ = "comma-separated list"  # argparse names the type in its error message
    return parse
