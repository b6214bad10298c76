"""Peak memory of loading and converting a full-size model, each in its own fresh process.

Prepares (in a child process) a random-weight model of ``--config`` saved as a kerasemote model
directory, and the same weights as an original-layout single ``.safetensors`` file
(``export_single_file``, what A1111 / ComfyUI load) and, when PyTorch is installed, as a
``torch.save`` ``.ckpt`` holding ``{"state_dict": ...}``. Then measures, each in a fresh process:

* ``convert``: ``kerasemote convert FILE.safetensors --out DIR`` (read, build, save), and the same
  for ``FILE.ckpt``;
* ``load``: ``StableDiffusion.load(DIR)`` of the saved model directory, with TensorFlow's own CPU
  allocator and with the system allocator that ``kerasemote`` commands choose
  (``TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1``).

Peak RSS comes from the kernel's accounting of each child (``wait4``'s ``ru_maxrss``), and is
printed beside the model's float32 parameter bytes: the ratio is peak / parameter bytes.

    python bench/load.py                      # sd-v1 (about 4.3 GB of float32 parameters)
    python bench/load.py --config tiny
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
GIB = 2**30


def prepare(config_name: str, root: str) -> None:
    """The model directory and single file of one random model; its parameter bytes in ``params.json``."""
    import gc

    import numpy as np

    from kerasemote.convert.layout import part_arrays
    from kerasemote.convert.original import export_single_file
    from kerasemote.model import StableDiffusion

    model = StableDiffusion.random(config_name, seed=0)
    model.save(os.path.join(root, "model"))
    count = sum(int(np.prod(v.shape)) for part in model.parts.values() for v in part.weights)
    config, arrays = model.config, part_arrays(model.parts)
    del model  # the export copies every array once more: keep two copies in memory, not three
    gc.collect()
    export_single_file(arrays, config, os.path.join(root, "model.safetensors"))
    with open(os.path.join(root, "params.json"), "w") as f:
        json.dump({"parameters": count, "float32_bytes": 4 * count}, f)


def prepare_ckpt(root: str) -> None:
    """The single file again as a ``torch.save`` zip (``model.ckpt``), the layout of original SD checkpoints."""
    import torch
    from safetensors.torch import load_file

    state = load_file(os.path.join(root, "model.safetensors"))
    torch.save({"state_dict": state, "global_step": 0}, os.path.join(root, "model.ckpt"))


def has_torch() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def load(directory: str) -> None:
    from kerasemote.model import StableDiffusion

    StableDiffusion.load(directory)


def peak_of(command: list[str], **env_vars: str) -> tuple[float, float]:
    """Run ``command`` to its end with ``env_vars`` added; returns (peak RSS in bytes, seconds)."""
    import time

    start = time.perf_counter()
    env = {**os.environ, **env_vars,
           "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))}
    with tempfile.TemporaryFile() as log:  # a file, not a pipe: a chatty child never blocks
        child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, env=env)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        log.seek(0)
        errors = log.read().decode(errors="replace")
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{errors[-3000:]}")
    return usage.ru_maxrss * 1024, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="sd-v1", help="tiny or sd-v1")
    parser.add_argument("--root", help="keep the prepared files here (default: a temporary folder)")
    parser.add_argument("--prepare", metavar="ROOT", help=argparse.SUPPRESS)
    parser.add_argument("--prepare-ckpt", metavar="ROOT", help=argparse.SUPPRESS)
    parser.add_argument("--load", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:
        return prepare(args.config, args.prepare)
    if args.prepare_ckpt:
        return prepare_ckpt(args.prepare_ckpt)
    if args.load:
        return load(args.load)
    with tempfile.TemporaryDirectory(prefix="kerasemote-load-") as tmp:
        root = args.root or tmp
        os.makedirs(root, exist_ok=True)
        if not os.path.exists(os.path.join(root, "params.json")):
            peak_of([sys.executable, __file__, "--config", args.config, "--prepare", root])
        ckpt = os.path.join(root, "model.ckpt")
        if has_torch() and not os.path.exists(ckpt):
            peak_of([sys.executable, __file__, "--prepare-ckpt", root])
        with open(os.path.join(root, "params.json")) as f:
            params = json.load(f)["float32_bytes"]
        runs = {
            "convert .safetensors": [sys.executable, "-m", "kerasemote", "convert",
                                     os.path.join(root, "model.safetensors"), "--out", os.path.join(root, "converted")],
            "convert .ckpt": [sys.executable, "-m", "kerasemote", "convert", ckpt,
                              "--out", os.path.join(root, "converted-ckpt")],
            "load, TF allocator": [sys.executable, __file__, "--load", os.path.join(root, "model")],
            "load, system allocator": [sys.executable, __file__, "--load", os.path.join(root, "model")],
        }
        allocator = {"load, TF allocator": {"TF_ONEDNN_USE_SYSTEM_ALLOCATOR": "0"},
                     "load, system allocator": {"TF_ONEDNN_USE_SYSTEM_ALLOCATOR": "1"}}
        if not os.path.exists(ckpt):
            del runs["convert .ckpt"]
            print("convert .ckpt: skipped (PyTorch, which writes the .ckpt, is not installed)")
        print(f"{args.config}: float32 parameters {params / GIB:.2f} GiB")
        for label, command in runs.items():
            peak, seconds = peak_of(command, **allocator.get(label, {}))
            print(f"{label:22s} peak RSS {peak / GIB:6.2f} GiB  = {peak / params:.2f}x parameter bytes  "
                  f"({seconds:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
