"""sd-v1 on one CUDA GPU: generation speed against keras-cv and diffusers, and the largest LoRA batch in 15 GB.

Generation: ``bench/generate.py``'s tables (totals, ratios, stages) at 512 px with each framework's fast GPU
settings: ours mixed precision (float16 compute) + XLA, keras-cv mixed precision + XLA, diffusers float16 +
PyTorch's scaled-dot-product attention (its default attention on torch 2). Random weights, DDIM, guidance 7.5,
warm-up then interleaved repeats, best time.

LoRA memory: a 512 px LoRA step (rank 4 on the UNet attention projections, mixed precision, cached latents)
in a fresh process whose TensorFlow may use 15 GB of the GPU (a 16 GB card such as Colab's T4); batches are
tried in rising order until one runs out of memory, without and with ``gradient_checkpointing``. The table
gives the largest batch that ran, its step time and TensorFlow's peak GPU memory.

    python bench/gpu.py                                 # both tables
    python bench/gpu.py --steps 25 --repeats 3 --batches 1,4
    python bench/gpu.py --no-lora                       # generation only

On a machine without a CUDA GPU it exits with a one-line message.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))

LIMIT_MIB = 15 * 1024
LORA_BATCHES = "1,2,3,4,6,8,12,16,24,32"


def gpu_name() -> str | None:
    """The first CUDA GPU both TensorFlow and torch see, or None."""
    import torch

    if not torch.cuda.is_available():  # asked first: importing TensorFlow prints its own start-up lines
        return None
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    for gpu in gpus:  # torch and TensorFlow share the card: TensorFlow takes memory as it needs it
        tf.config.experimental.set_memory_growth(gpu, True)
    return torch.cuda.get_device_name(0)


# ---------------------------------------------------------------------- LoRA worker (its own process)


def lora_worker(batches: list[int], checkpointing: bool, size: int) -> None:
    """Try each batch in turn on a 15 GB TensorFlow GPU; print one JSON line per batch."""
    import tensorflow as tf

    gpu = tf.config.list_physical_devices("GPU")[0]
    tf.config.set_logical_device_configuration(gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=LIMIT_MIB)])
    import keras
    import numpy as np
    from PIL import Image

    from kerasemote.config import get_config
    from kerasemote.model import StableDiffusion
    from kerasemote.training import LoRA, TrainConfig, load_training_images, train

    keras.mixed_precision.set_global_policy("mixed_float16")
    model = StableDiffusion(get_config("sd-v1"))
    with tempfile.TemporaryDirectory() as root:
        folder = os.path.join(root, "images", "emoji")
        os.makedirs(folder)
        rng = np.random.default_rng(0)
        for i in range(max(batches)):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(f"{folder}/{i}.png")
        images = load_training_images(os.path.join(root, "images"), size=size)
        for batch in batches:
            tf.config.experimental.reset_memory_stats("GPU:0")
            stamps: list[float] = []
            config = TrainConfig(steps=3, batch_size=batch, learning_rate=1e-4, progress=False, seed=0,
                                 gradient_checkpointing=checkpointing)
            try:
                with tempfile.TemporaryDirectory() as out:
                    train(model, LoRA(rank=4, targets=["attention"]), images, config, out,
                          callbacks=[lambda step, loss, stamps=stamps: stamps.append(time.perf_counter())])
            except tf.errors.OpError as error:  # out of memory shows as ResourceExhausted, or Internal on copies
                if not isinstance(error, tf.errors.ResourceExhaustedError) and "memory" not in str(error).lower():
                    raise
                print(json.dumps({"batch": batch, "fits": False}), flush=True)
                return
            peak = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**30
            step_s = min(b - a for a, b in zip(stamps, stamps[1:]))  # the LoRA stays on: later batches reuse it
            print(json.dumps({"batch": batch, "fits": True, "peak_gib": peak, "step_s": step_s}), flush=True)


def lora_table(size: int, batches: str) -> None:
    """Largest batch of a LoRA step in 15 GB, without and with gradient checkpointing."""
    from kerasemote.training import TrainConfig

    modes = [False]
    if "gradient_checkpointing" in {f.name for f in dataclasses.fields(TrainConfig)}:
        modes.append(True)
    else:
        print("gradient checkpointing: TrainConfig has no gradient_checkpointing field; that row is skipped")
    print(f"\nLoRA step, sd-v1, {size} px, rank 4, mixed precision, TensorFlow limited to {LIMIT_MIB // 1024} GB\n")
    print("| gradient checkpointing | largest batch | step s | peak GPU GiB | first batch that did not fit |")
    print("|---|---:|---:|---:|---:|")
    for checkpointing in modes:
        out = subprocess.run([sys.executable, __file__, "--lora-worker", batches, "--size", str(size)]
                             + (["--gradient-checkpointing"] if checkpointing else []),
                             check=False, capture_output=True, text=True)
        rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
        fits = [r for r in rows if r["fits"]]
        failed = next((str(r["batch"]) for r in rows if not r["fits"]), "-")
        if out.returncode != 0:  # a crash, not a clean out-of-memory: show its last line
            last = (out.stderr.strip().splitlines() or ["no output"])[-1][:120]
            failed = f"worker stopped (exit {out.returncode}): {last}"
        best = fits[-1] if fits else None
        cells = (f"{best['batch']} | {best['step_s']:.2f} | {best['peak_gib']:.1f}" if best else "none | - | -")
        print(f"| {'on' if checkpointing else 'off'} | {cells} | {failed} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="512", help="generation image sizes")
    parser.add_argument("--batches", default="1,4", help="generation batches")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-lora", action="store_true", help="skip the LoRA memory table")
    parser.add_argument("--no-generation", action="store_true", help="skip the generation tables")
    parser.add_argument("--lora-size", type=int, default=512)
    parser.add_argument("--lora-batches", default=LORA_BATCHES, help="LoRA batches tried, in rising order")
    parser.add_argument("--lora-worker", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=512, help=argparse.SUPPRESS)
    parser.add_argument("--gradient-checkpointing", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.lora_worker:
        lora_worker([int(b) for b in args.lora_worker.split(",")], args.gradient_checkpointing, args.size)
        return

    name = gpu_name()
    if name is None:
        sys.exit("bench/gpu.py: no CUDA GPU visible to both TensorFlow and torch; run it on a machine with one.")
    print(f"GPU: {name}", flush=True)
    if not args.no_generation:
        import keras

        import generate

        keras.mixed_precision.set_global_policy("mixed_float16")
        settings = generate.Settings(jit=True, mixed=True, device="cuda")
        generate.run_tables(["sd-v1"], generate.int_list(args.sizes), generate.int_list(args.batches),
                            args.steps, args.repeats, list(generate.FRAMEWORKS), settings)
        keras.mixed_precision.set_global_policy("float32")
    if not args.no_lora:
        lora_table(args.lora_size, args.lora_batches)


if __name__ == "__main__":
    main()
