"""``kerasemote export`` and ``kerasemote import``: learned concepts to and from diffusers, A1111, kohya."""

from __future__ import annotations

import argparse

from kerasemote.cli._common import add_dtype_argument


def register(subparsers) -> None:
    from kerasemote.convert.embeddings_interop import EMBEDDING_FORMATS
    from kerasemote.convert.lora_interop import LORA_FORMATS

    p = subparsers.add_parser(
        "export",
        help="write embeddings or a LoRA for diffusers, A1111 or kohya",
        description=(
            "Write a textual-inversion run's embeddings or a LoRA as .safetensors that diffusers "
            "(pipe.load_textual_inversion / pipe.load_lora_weights), AUTOMATIC1111 and ComfyUI load."
        ),
    )
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    e = kinds.add_parser("embeddings", help="textual-inversion tokens -> diffusers or A1111 files")
    e.add_argument("src", help="embeddings.npz / .npy / embeddings.json or a run folder")
    e.add_argument("--format", choices=EMBEDDING_FORMATS, default="diffusers",
                   help="diffusers (key = the token) or a1111 (key emb_params; the file name is the trigger word)")
    e.add_argument("--out", required=True,
                   help="a .safetensors file (one token) or a folder (one <token>.safetensors per token)")
    e.add_argument("--token", action="append", help="export only this token (repeatable; default all)")
    add_dtype_argument(e)
    e.set_defaults(func=run_export_embeddings)

    lo = kinds.add_parser("lora", help="a LoRA .npz -> diffusers / PEFT or kohya .safetensors")
    lo.add_argument("src", help="our LoRA file (lora.npz) or its run folder")
    lo.add_argument("--format", choices=LORA_FORMATS, default="diffusers",
                    help="diffusers (PEFT keys), kohya (lora_unet_down_blocks_...) or kohya-ldm "
                         "(lora_unet_input_blocks_...)")
    lo.add_argument("--out", required=True, help="the .safetensors file to write")
    add_dtype_argument(lo)
    lo.add_argument("--config", default=None,
                    help="UNet config for kohya-ldm names (default: the base model's, from the LoRA's manifest)")
    lo.set_defaults(func=run_export_lora)

    p = subparsers.add_parser(
        "import",
        help="read diffusers, A1111 or kohya embeddings / LoRAs into our formats",
        description=(
            "Convert textual-inversion files (diffusers learned_embeds, A1111 .safetensors or .pt, read "
            "without running pickled code) into an embeddings folder, or a diffusers / kohya LoRA into lora.npz."
        ),
    )
    kinds = p.add_subparsers(dest="kind", metavar="KIND", required=True)
    e = kinds.add_parser("embeddings", help="diffusers / A1111 embedding files -> an embeddings folder")
    e.add_argument("src", nargs="+", help="embedding files (.safetensors, .bin, .pt)")
    e.add_argument("--out", required=True, help="folder for embeddings.npz, embeddings.json and the .npy files")
    e.add_argument("--token", action="append",
                   help="the token of each file, in order (default: the diffusers key, or <file stem> for A1111)")
    e.set_defaults(func=run_import_embeddings)

    lo = kinds.add_parser("lora", help="a diffusers / PEFT or kohya LoRA -> lora.npz")
    lo.add_argument("src", help="LoRA file (.safetensors; .bin / .pt read without running pickled code)")
    lo.add_argument("--out", required=True, help="the .npz to write, or a folder (then FOLDER/lora.npz)")
    lo.add_argument("--config", default="sd-v1", help="UNet config for kohya LDM-style names (default sd-v1)")
    lo.set_defaults(func=run_import_lora)


def _lora_file(path: str) -> str:
    from kerasemote import storage
    from kerasemote.training.lora import LORA_FILE

    return storage.join(path, LORA_FILE) if storage.isdir(path) or not path.endswith(".npz") else path


def run_export_embeddings(args: argparse.Namespace) -> int:
    from kerasemote import storage
    from kerasemote.convert.embeddings_interop import export_embeddings

    paths = export_embeddings(args.src, args.out, args.format, args.token, args.dtype)
    for path in paths:
        print(f"wrote {path}")
    if args.format == "a1111":
        triggers = [storage.basename(p)[: -len(".safetensors")] for p in paths]
        print(f"A1111 trigger words (the file names): {', '.join(triggers)}")
    return 0


def run_export_lora(args: argparse.Namespace) -> int:
    from kerasemote.config import get_config
    from kerasemote.convert.lora_interop import export_lora
    from kerasemote.lora_files import read_lora

    src = _lora_file(args.src)
    lora = read_lora(src)
    ldm = {}
    if args.format == "kohya-ldm":  # the only layout named after the UNet's config
        # A LoRA records the config it was trained on; files from before that record are SD 1.x.
        ldm["config"] = get_config(args.config or lora.manifest.get("base_model", {}).get("config", "sd-v1"))
    export_lora(lora, args.out, args.format, args.dtype, **ldm)
    print(f"wrote {args.out} ({args.format} layout) from {src}")
    return 0


def run_import_embeddings(args: argparse.Namespace) -> int:
    from kerasemote.convert.embeddings_interop import import_embeddings

    # A file that asks to run pickled code raises UnsafePickleError, a ValueError the CLI reports in one line.
    paths = import_embeddings(args.src, args.out, args.token)
    print(f"wrote {', '.join(paths)}")
    return 0


def run_import_lora(args: argparse.Namespace) -> int:
    from kerasemote.config import get_config
    from kerasemote.convert.lora_interop import import_lora

    out = _lora_file(args.out)
    import_lora(args.src, out, get_config(args.config))  # UnsafePickleError: see run_import_embeddings
    print(f"wrote {out}")
    return 0
