"""The ``kerasemote`` command line: one module per command group, each owning no logic.

Every command only parses arguments and calls the public API.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow's oneDNN CPU allocator keeps every block it ever held; the system allocator gives freed
# tensors back, so loading or converting a full-size model peaks nearer its own size. TensorFlow
# reads this when it starts: no command module (nor TensorFlow) is imported before this line.
if "tensorflow" not in sys.modules:
    os.environ.setdefault("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", "1")

# Command modules, in the order `kerasemote --help` lists them. Each exposes
# ``register(subparsers)``; the parser it adds sets ``func`` to a function of ``args``.
COMMAND_MODULES = (
    "kerasemote.cli.generate",
    "kerasemote.cli.model",
    "kerasemote.cli.train",
    "kerasemote.cli.pretrain",
    "kerasemote.cli.export",
    "kerasemote.cli.interpolate",
    "kerasemote.cli.data",
    "kerasemote.cli.classify",
    "kerasemote.cli.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kerasemote",
        description="Teach Stable Diffusion 1.x new emoji and emotion concepts in TensorFlow / Keras 3.",
    )
    from kerasemote import __version__

    parser.add_argument("--version", action="version", version=f"kerasemote {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error (as does the environment variable KERASEMOTE_DEBUG=1)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; an error it raises prints as one line ``kerasemote CMD: error: ...`` and returns 1.

    ``--debug`` (or ``KERASEMOTE_DEBUG``) lets the error through with its traceback. Outputs
    (``--out``) are checked for write access before the command runs.
    """
    from kerasemote.cli._common import check_outputs, describe_error

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        check_outputs(args)
        result = args.func(args)
    except Exception as err:  # KeyboardInterrupt and SystemExit pass through
        if args.debug or os.environ.get("KERASEMOTE_DEBUG"):
            raise
        out = getattr(args, "out", None)
        print(f"kerasemote {args.command}: error: {describe_error(err, out if isinstance(out, str) else None)}",
              file=sys.stderr)
        return 1
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
