"""``kerasemote demo``: the whole workflow on the embedded tiny model, offline, in minutes.

Its options are DemoConfig's fields (``kerasemote.cli._common.add_config_options``), so a new
field is a new option; only ``--out`` is the command's own.
"""

from __future__ import annotations

import argparse

from kerasemote.cli._common import add_config_options, config_from_args


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
