"""Options and steps that several commands share: the model to load, its adapters, sampling, outputs.

Choices come from the library's own tables (``kerasemote.schedulers.SAMPLERS``,
``kerasemote.weights.SAVE_DTYPES``...), so a new sampler or file format shows up in every
command at once.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import errno
import os
import struct
import sys
import types
import typing
import zipfile
from typing import Any, Sequence

import numpy as np

from kerasemote.config import PRECISION_POLICIES
from kerasemote.presets import DEFAULT_MODEL


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model`` / ``--weights`` / ``--mixed-precision``, shared by every command that loads a model."""
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"preset name, model directory or checkpoint (default: {DEFAULT_MODEL})",
    )
    parser.add_argument("--weights", help="local copy of a downloadable preset's checkpoint (file or folder), "
                                          "e.g. --model sd-v1-5 --weights v1-5-pruned-emaonly.safetensors")
    parser.add_argument(
        "--mixed-precision", nargs="?", const="float16", choices=tuple(PRECISION_POLICIES), metavar="DTYPE",
        help="compute in float16 (the default DTYPE, for GPUs) or bfloat16 (GPUs and TPUs that have it, and CPUs "
             "with AMX or AVX512-BF16, where it generates much faster than float32: docs/benchmarks.md); weights stay "
             "float32",
    )


def load_model_from_args(args: argparse.Namespace) -> Any:
    """The model that ``add_model_arguments``'s options name (a ``StableDiffusion``)."""
    import keras

    from kerasemote.presets import load_model

    if args.mixed_precision:
        warning = precision_warning(args.mixed_precision)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
        keras.mixed_precision.set_global_policy(PRECISION_POLICIES[args.mixed_precision])
    return load_model(args.model, weights=args.weights or None)


def precision_warning(dtype: str, cpu_flags: set[str] | None = None,
                      accelerator: bool | None = None) -> str | None:
    """Why ``--mixed-precision DTYPE`` is likely slower than float32 here, or None: float16 without a GPU (or
    TPU: ``accelerator``, default whether one is visible), or bfloat16 on a CPU whose flags
    (``/proc/cpuinfo``; unknown elsewhere: no warning) lack AMX and AVX512-BF16."""
    if accelerator is None:
        from kerasemote.models.devices import accelerator_visible

        accelerator = accelerator_visible()
    if accelerator:  # a GPU or TPU computes it
        return None
    if dtype == "float16":
        return "--mixed-precision float16 without a GPU: CPUs compute float16 slowly; use bfloat16 or float32."
    flags = _cpu_flags() if cpu_flags is None else cpu_flags
    if flags and not flags & {"amx_bf16", "avx512_bf16"}:
        return ("--mixed-precision bfloat16 on a CPU without AMX or AVX512-BF16 (/proc/cpuinfo): it is emulated "
                "there and slower than float32.")
    return None


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    except OSError:
        return set()


def add_adapter_arguments(parser: argparse.ArgumentParser, embeddings_help: str, lora_help: str) -> None:
    """``--embeddings FILE...`` and repeatable ``--lora FILE[:SCALE]``, read by ``apply_adapters``."""
    parser.add_argument("--embeddings", nargs="+", default=[], metavar="FILE", help=embeddings_help)
    parser.add_argument("--lora", action="append", default=[], metavar="FILE[:SCALE]", help=lora_help)


def lora_arguments(loras: Sequence[str]) -> list[tuple[str, float]]:
    """``--lora FILE[:SCALE]`` values as ``(file, scale)``, refusing the scales ``apply_lora`` refuses, before any
    model loads."""
    from kerasemote.lora_files import check_scale, parse_lora_argument

    parsed = [parse_lora_argument(text) for text in loras]
    for text, (_, scale) in zip(loras, parsed):
        check_scale(scale, f"--lora {text}")
    return parsed


def apply_adapters(model: Any, embeddings: Sequence[str], loras: Sequence[str]) -> None:
    """Load ``--embeddings`` files and merge ``--lora FILE[:SCALE]`` adapters into ``model``."""
    parsed = lora_arguments(loras)
    if embeddings:
        from kerasemote.embeddings import load_embeddings

        tokens = load_embeddings(model, list(embeddings))
        print(f"tokens: {' '.join(tokens)}")
    for path, scale in parsed:
        from kerasemote.lora_files import apply_lora

        apply_lora(model, path, scale)


def add_sampler_arguments(parser: argparse.ArgumentParser) -> None:
    """``--steps``, ``--guidance`` and ``--sampler`` (any name in ``kerasemote.schedulers.SAMPLERS``)."""
    from kerasemote.schedulers import SAMPLERS

    parser.add_argument("--steps", type=int, default=25, help="sampler steps (default 25)")
    parser.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale (default 7.5)")
    parser.add_argument("--sampler", choices=SAMPLERS, default="ddim", help="sampler (default ddim): ddim-kerascv reproduces keras-cv's images, euler-a and "
                        "dpm++-karras are diffusers' EulerAncestral and DPM++ 2M Karras; see docs/generating.md")


def add_size_arguments(parser: argparse.ArgumentParser) -> None:
    """``--height`` / ``--width`` in pixels; None leaves the model's own image size."""
    parser.add_argument("--height", type=int, default=None, help="height in pixels, a multiple of 8")
    parser.add_argument("--width", type=int, default=None, help="width in pixels, a multiple of 8")


def sampling_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``generate`` keyword arguments that ``add_sampler_arguments`` and ``add_size_arguments`` set."""
    return dict(steps=args.steps, guidance=args.guidance, sampler=args.sampler, height=args.height,
                width=args.width)


def option_flag(name: str) -> str:
    """A keyword argument's command-line option: ``num_images`` -> ``--num-images``."""
    return "--" + name.replace("_", "-")


def check_sampling_args(args: argparse.Namespace, model: Any = None, **more: Any) -> None:
    """Refuse ``sampling_options(args)`` (and ``more`` of ``generate``'s options) no generation can use.

    Called before loading the model, so a bad value fails at once, and again with ``model`` to
    check sizes against its VAE factor (``kerasemote.pipeline.check_generation`` holds the limits).

    Raises:
        ValueError: one line naming the option, what it expects and the value given.
    """
    from kerasemote.pipeline import check_generation

    options = {k: v for k, v in sampling_options(args).items() if k != "sampler"}
    factor = 1 if model is None else model.config.vae_downsample
    check_generation(**options, **more, factor=factor, name=option_flag)


def add_dtype_argument(
    parser: argparse.ArgumentParser, flag: str = "--dtype", help_text: str = "stored precision"
) -> None:
    """The precision a written file stores: one of ``kerasemote.weights.SAVE_DTYPES``, float32 by default."""
    from kerasemote.weights import SAVE_DTYPES

    parser.add_argument(flag, choices=SAVE_DTYPES, default="float32", help=help_text)


def save_images_and_grid(
    images: np.ndarray, out: str, prefix: str = "image", cols: int | None = None
) -> tuple[list[str], str]:
    """Write one PNG per image (``{prefix}_000.png``...) and ``grid.png`` into ``out``.

    Returns:
        The image paths and the grid's path.
    """
    from kerasemote import images as image_io
    from kerasemote import storage

    paths = image_io.save_images(images, out, prefix=prefix)
    grid_options = {} if cols is None else {"cols": cols}
    return paths, image_io.save_grid(images, storage.join(out, "grid.png"), **grid_options)


# ---------------------------------------------------------------------- outputs and errors

OUTPUT_OPTIONS = ("out", "export")
"""Argument names (``args.<name>``) that name where a command writes; ``check_outputs`` probes them."""


def check_output_writable(path: str, option: str = "--out") -> None:
    """Refuse an output this process cannot write, before the work that would fill it.

    A ``gs://`` output is probed (one empty object written and deleted); a local one by the
    permissions of its nearest existing folder. ``kerasemote train`` can call it on ``--out``.

    Raises:
        OSError: one line naming ``option``, the path and why (``StorageAuthError`` for ``gs://``).
    """
    from kerasemote import storage

    if storage.is_gcs(path):
        from kerasemote import storage_gcs

        storage_gcs.check_writable(path)
        return
    folder = os.path.abspath(path)
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if os.path.isdir(folder) and not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"{option} {path}: expected a folder this user can write to, found {folder} "
                              "read-only.")


def check_outputs(args: argparse.Namespace) -> None:
    """``check_output_writable`` on each of ``OUTPUT_OPTIONS`` that the command has and is set."""
    for name in OUTPUT_OPTIONS:
        value = getattr(args, name, None)
        if isinstance(value, str) and value:
            check_output_writable(value, option_flag(name))


def _error_classes() -> tuple[type, ...]:
    """What the project and the readers it calls raise for bad input or a failing system (not a bug)."""
    found: list[type] = [ValueError, LookupError, OSError, EOFError, RuntimeError, ImportError, MemoryError,
                         ArithmeticError, zipfile.BadZipFile, struct.error, csv.Error]
    # Only libraries already imported can have raised: look them up instead of importing them.
    for module, name in (("safetensors", "SafetensorError"), ("tensorflow", "errors.OpError"),
                         ("google.api_core.exceptions", "GoogleAPIError"),
                         ("google.auth.exceptions", "GoogleAuthError"),
                         ("PIL.Image", "DecompressionBombError")):
        cls = sys.modules.get(module)
        for attribute in name.split("."):
            cls = getattr(cls, attribute, None)
        if isinstance(cls, type):
            found.append(cls)
    return tuple(found)


# Their messages say what went wrong without saying which kind of error it is; others get the class name.
_SELF_EXPLAINING = (ValueError, RuntimeError, ImportError, FileNotFoundError, FileExistsError, PermissionError,
                    IsADirectoryError, NotADirectoryError)


def describe_error(err: Exception, out: str | None = None) -> str:
    """One line for the user about ``err``: its first line, the file it names, its kind where that helps.

    Args:
        err: the exception a command raised.
        out: the command's output (``--out``), named when a disk filled up without naming a file.
    """
    if isinstance(err, KeyError):  # str(KeyError("config")) is just "'config'"
        key = err.args[0] if err.args else None
        return key if isinstance(key, str) and " " in key else f"missing key {key!r}"
    text = str(err)
    if isinstance(err, OSError) and err.filename and err.strerror:
        text = f"{err.filename}: {err.strerror}"
    elif isinstance(err, OSError) and err.errno == errno.ENOSPC and out:
        text = f"no space left on the device while writing {out}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    text = lines[0] if lines else ""
    plain = type(err).__module__.startswith("kerasemote") or type(err) in _SELF_EXPLAINING
    if not isinstance(err, _error_classes()):
        return (f"{type(err).__name__}: {text} (an unexpected error: run `kerasemote --debug ...` for the "
                "traceback and report it)")
    if not text:
        return type(err).__name__
    return text if plain else f"{type(err).__name__}: {text}"


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
