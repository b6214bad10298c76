"""Training step time and memory: kerasemote's loop vs a minimal diffusers training step.

Same weights (diffusers' random init, saved as a diffusers folder that we convert once),
same images, batch 1, AdamW, same trainable parameters; tiny at 64 px and sd-v1 at 256 px.
Each measurement runs in its own process (so peak RSS is its own): ``--warm`` steps are
discarded (tracing, first allocations), then the median of ``--steps`` timed steps counts.

* Textual inversion. Ours: only the placeholder row trains (its own variable); the text
  encoder runs forward and backward every step. diffusers (its ``textual_inversion.py``
  recipe): the whole token-embedding matrix is handed to AdamW and every row but the new one
  is copied back after each step, so AdamW also updates 49,409 rows of moments per step.
* LoRA, rank 4 on the UNet attention projections (to_q, to_k, to_v, to_out.0). Ours: Keras
  ``enable_lora``, captions encoded once (the text encoder is frozen). diffusers (its
  ``train_text_to_image_lora.py`` recipe): PEFT ``add_adapter``, the frozen text encoder runs
  forward every step, no latent cache.
* Both sides: VAE latents sampled, noise, uniform timestep, ``add_noise``, epsilon MSE,
  backward, clip to norm 1, AdamW (weight decay 1e-2). Ours runs with and without
  ``cache_latents``; diffusers' recipes encode the image with the VAE every step.

    python bench/train.py                          # tiny and sd-v1 (about 15 minutes on 2 cores)
    python bench/train.py --configs tiny --warm 3 --steps 5
    python bench/train.py --memory --sizes 256,512 --warm 1 --steps 2   # sd-v1 peak memory
    python bench/train.py --memory --sizes 512 --tasks lora --runs ours,ours-ckpt --keep /tmp/sd
    python bench/train.py --memory --bf16 --sizes 512 --keep /tmp/sd   # both sides in bfloat16

Prints seconds per step, ours / diffusers (lower is better for us), peak RSS. Our workers load a
model directory converted once beforehand (in its own process), as ``kerasemote train`` does, under the
allocator the command line chooses (``TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1`` unless set otherwise).

``--memory``: sd-v1, batch 1, each size in ``--sizes``; textual inversion and LoRA, ours without and with
gradient checkpointing and diffusers' step, each in its own process (peak RSS over the process's whole life, and
from the steps' start). Prints each peak, ours / diffusers, what checkpointing saves and its step-time cost; a
run the kernel kills for memory is reported as not fitting.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

from train_tables import memory_table, report  # noqa: E402

TOKEN, INIT_WORD = "<emoji>", "face"
CAPTION = f"a photo of a {TOKEN}"
LORA_CAPTION = "a photo of an emoji"
RANK = 4
LEARNING_RATES = {"ti": 5e-3, "lora": 1e-4}
BF16_ENV = "KERASEMOTE_BENCH_BF16"  # set by --bf16 for every worker


def bf16() -> bool:
    """Both sides in bfloat16: ours under Keras' mixed_bfloat16 policy; diffusers as its recipes' --mixed_precision
    bf16 (frozen parts held in bfloat16, trained parameters float32, autocast)."""
    return os.environ.get(BF16_ENV) == "1"


# ---------------------------------------------------------------------- shared setup


def rss_mib() -> float:
    """Current resident set size in MiB (Linux)."""
    with open("/proc/self/status") as f:
        line = next(l for l in f if l.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak() -> None:
    """Start a new peak (VmHWM) from the current RSS (Linux: clear_refs 5); ``ru_maxrss`` keeps the whole life's."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def hwm_mib() -> float:
    """Peak RSS since the last ``reset_peak`` in MiB (Linux)."""
    with open("/proc/self/status") as f:
        return int(next(l for l in f if l.startswith("VmHWM:")).split()[1]) / 1024


def prepare(config_name: str, root: str) -> None:
    """A diffusers folder with diffusers' random init, and four training images."""
    from PIL import Image, ImageDraw
    from reference import diffusers_parts

    from kerasemote.config import get_config

    config = get_config(config_name)
    unet, vae, text = diffusers_parts(config, seed=0)
    for name, module in (("unet", unet), ("vae", vae), ("text_encoder", text)):
        module.save_pretrained(os.path.join(root, "diffusers", name))
    folder = os.path.join(root, "images", "emoji")
    os.makedirs(folder)
    for i, colour in enumerate(["gold", "orange", "tomato", "khaki"]):
        image = Image.new("RGB", (256, 256), "white")
        draw = ImageDraw.Draw(image)
        draw.ellipse((20, 20, 236, 236), fill=colour, outline="black", width=6)
        draw.ellipse((80, 80, 100 + 8 * i, 110), fill="black")
        draw.arc((70, 120, 186, 200), 10, 170, fill="black", width=8)
        image.save(os.path.join(folder, f"{i}.png"))


def step_summary(stamps: list[float], warm: int) -> dict[str, float]:
    durations = [b - a for a, b in zip(stamps, stamps[1:])][warm:]
    return {"median_s": statistics.median(durations), "mean_s": statistics.fmean(durations),
            "min_s": min(durations), "steps": len(durations)}


# ---------------------------------------------------------------------- our worker


def convert(root: str) -> dict:
    """Our model directory from the diffusers folder (what ``kerasemote convert`` writes)."""
    from kerasemote.convert import convert_checkpoint

    convert_checkpoint(os.path.join(root, "diffusers")).save(os.path.join(root, "ours"))
    return {"peak_rss_mib": peak_rss_mib()}


def our_task(task: str, root: str, size: int):
    """``task``'s strategy and its training images at ``size`` px, each with the caption the diffusers side uses."""
    from kerasemote.training import LoRA, TextualInversion, load_training_images

    images = load_training_images(os.path.join(root, "images"), size=size)
    if task == "ti":
        strategy = TextualInversion({"emoji": TOKEN}, init=INIT_WORD)
        images = images.with_captions({"emoji": CAPTION.replace(TOKEN, "{}")})  # one caption, as diffusers'
    else:
        strategy = LoRA(rank=RANK, targets=["attention"])
    return strategy, _fixed_caption(images, CAPTION if task == "ti" else LORA_CAPTION)


def our_config(task: str, steps: int, cache: bool, checkpointing: bool):
    """The training settings of our side: batch 1, AdamW, the recipe's learning rate."""
    from kerasemote.training import TrainConfig

    return TrainConfig(steps=steps, batch_size=1, learning_rate=LEARNING_RATES[task], optimizer="adamw",
                       weight_decay=1e-2, clip_norm=1.0, cache_latents=cache, progress=False, seed=0,
                       gradient_checkpointing=checkpointing)


def ours(task: str, root: str, size: int, warm: int, steps: int, cache: bool, checkpointing: bool = False) -> dict:
    import keras

    from kerasemote.model import StableDiffusion
    from kerasemote.training import train

    if bf16():
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = StableDiffusion.load(os.path.join(root, "ours"))
    strategy, images = our_task(task, root, size)
    loaded = rss_mib()
    reset_peak()
    config = our_config(task, warm + steps, cache, checkpointing)
    stamps: list[float] = []
    with tempfile.TemporaryDirectory() as out:
        stamps.append(time.perf_counter())
        train(model, strategy, images, config, out, callbacks=[lambda step, loss: stamps.append(time.perf_counter())])
    return {**step_summary(stamps, warm), "loaded_rss_mib": loaded, "peak_rss_mib": peak_rss_mib(),
            "train_peak_rss_mib": hwm_mib()}


def _fixed_caption(images, caption: str):
    """Every image captioned by ``caption`` alone (the diffusers side uses the same ids)."""
    from dataclasses import replace

    return replace(images, captions=tuple((caption,) for _ in range(len(images))))


# ---------------------------------------------------------------------- diffusers worker


def diffusers_step_factory(task: str, root: str, size: int):
    """The minimal diffusers training step of ``task`` (see the module docstring) and its parts."""
    import numpy as np
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from PIL import Image
    from transformers import CLIPTextModel

    from kerasemote.config import get_config
    from kerasemote.tokenizer import Tokenizer

    torch.set_num_threads(os.cpu_count() or 1)
    folder = os.path.join(root, "diffusers")
    unet = UNet2DConditionModel.from_pretrained(os.path.join(folder, "unet"))
    vae = AutoencoderKL.from_pretrained(os.path.join(folder, "vae")).eval()
    text = CLIPTextModel.from_pretrained(os.path.join(folder, "text_encoder"))
    config = get_config(json.load(open(os.path.join(root, "config_name.json"))))
    scheduler = DDPMScheduler(num_train_timesteps=config.num_train_timesteps, beta_start=config.beta_start,
                              beta_end=config.beta_end, beta_schedule="scaled_linear")
    tokenizer = Tokenizer()
    vae.requires_grad_(False)
    unet.requires_grad_(False)
    text.requires_grad_(False)
    half = torch.bfloat16 if bf16() else torch.float32
    vae.to(half)  # the recipes' weight_dtype: frozen parts in bfloat16 (the trained text encoder of TI stays float32)
    unet.to(half)
    if task != "ti":
        text.to(half)
    if task == "ti":
        init_id = tokenizer.token_ids(INIT_WORD)[0]
        tokenizer.add_placeholder(TOKEN)
        text.resize_token_embeddings(tokenizer.vocab_size)
        table = text.get_input_embeddings().weight
        with torch.no_grad():
            table[-1] = table[init_id]
        table.requires_grad_(True)
        frozen_rows = torch.ones(table.shape[0], dtype=torch.bool)
        frozen_rows[-1] = False
        original = table.detach().clone()
        params = [table]
        text.train()
        ids = torch.from_numpy(tokenizer.encode(CAPTION)).long()
    else:
        from peft import LoraConfig

        unet.add_adapter(LoraConfig(r=RANK, lora_alpha=RANK, init_lora_weights="gaussian",
                                    target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
        params = [p for p in unet.parameters() if p.requires_grad]
        for p in params:  # the recipe's cast_training_params: adapters train in float32
            p.data = p.data.float()
        ids = torch.from_numpy(tokenizer.encode(LORA_CAPTION)).long()
    unet.train()
    optimizer = torch.optim.AdamW(params, lr=LEARNING_RATES[task], weight_decay=1e-2)
    files = sorted(os.listdir(os.path.join(root, "images", "emoji")))
    pixels = np.stack([np.asarray(Image.open(os.path.join(root, "images", "emoji", f)).convert("RGB")
                                  .resize((size, size), Image.BICUBIC)) for f in files])
    pixels = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (N, 3, S, S)
    generator = torch.Generator().manual_seed(0)

    def step(i: int) -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16()):
            return _step(i)

    def _step(i: int) -> float:
        with torch.no_grad():
            image = pixels[i % len(pixels)][None]
            latents = vae.encode(image).latent_dist.sample(generator) * config.scaling_factor
        noise = torch.randn(latents.shape, generator=generator)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (1,), generator=generator)
        noisy = scheduler.add_noise(latents, noise, t)
        if task == "ti":
            context = text(ids)[0]
        else:
            with torch.no_grad():
                context = text(ids)[0]
        prediction = unet(noisy, t, context).sample
        loss = torch.nn.functional.mse_loss(prediction.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad()
        if task == "ti":  # textual_inversion.py: only the new row may change
            with torch.no_grad():
                table[frozen_rows] = original[frozen_rows]
        return float(loss)

    return step


def theirs(task: str, root: str, size: int, warm: int, steps: int) -> dict:
    step = diffusers_step_factory(task, root, size)
    loaded = rss_mib()
    reset_peak()
    stamps = [time.perf_counter()]
    for i in range(warm + steps):
        step(i)
        stamps.append(time.perf_counter())
    return {**step_summary(stamps, warm), "loaded_rss_mib": loaded, "peak_rss_mib": peak_rss_mib(),
            "train_peak_rss_mib": hwm_mib()}


# ---------------------------------------------------------------------- driver

RUNS = (  # (label, side, task, cache)
    ("ti ours", "ours", "ti", True),
    ("ti diffusers", "diffusers", "ti", False),
    ("lora ours", "ours", "lora", True),
    ("lora ours no-cache", "ours", "lora", False),
    ("lora diffusers", "diffusers", "lora", False),
)


def run_worker(side: str, task: str, root: str, size: int, warm: int, steps: int, cache: bool,
               checkpointing: bool = False) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--worker", side, "--task", task, "--root", root,
               "--size", str(size), "--warm", str(warm), "--steps", str(steps)] + ([] if cache else ["--no-cache"])
    command += ["--gradient-checkpointing"] if checkpointing else []
    # Ours under the allocator `kerasemote` commands choose (kerasemote.cli sets it unless the user did).
    env = dict(os.environ)
    if side == "ours":
        env.setdefault("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", "1")
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [l for l in done.stdout.splitlines() if l.startswith("{")]
    if done.returncode == -9:  # SIGKILL: the kernel's out-of-memory killer
        return {"killed": True}
    if done.returncode or not lines:
        raise RuntimeError(f"worker {side} {task} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def available_gib() -> float:
    with open("/proc/meminfo") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("MemAvailable:")) / 2**20


def bench_config(name: str, size: int, warm: int, steps: int) -> dict[str, dict]:
    results = {}
    with tempfile.TemporaryDirectory(prefix="kerasemote-bench-") as root:
        prepare_all(name, root)
        for label, side, task, cache in RUNS:
            results[label] = run_worker(side, task, root, size, warm, steps, cache)
            r = results[label]
            print(f"{name} {size}px {label:20s} {r['median_s']:7.3f} s/step (mean {r['mean_s']:.3f}, "
                  f"min {r['min_s']:.3f})  RSS loaded {r['loaded_rss_mib']:7.0f} MiB, peak {r['peak_rss_mib']:7.0f} MiB",
                  flush=True)
    return results


def prepare_all(name: str, root: str) -> None:
    """The diffusers folder and images, then our model directory converted in its own process."""
    prepare(name, root)
    json.dump(name, open(os.path.join(root, "config_name.json"), "w"))
    run_worker("convert", "ti", root, 0, 0, 0, True)


MEMORY_RUNS = (  # (label, side, checkpointing)
    ("ours", "ours", False),
    ("ours-ckpt", "ours", True),
    ("diffusers", "diffusers", False),
)


def bench_memory(sizes: list[int], warm: int, steps: int, keep: str | None = None,
                 tasks: tuple[str, ...] = ("ti", "lora"), runs: tuple[str, ...] | None = None) -> None:
    """Peak RSS and step time of sd-v1 TI and LoRA steps, ours with and without checkpointing vs diffusers.

    ``runs``: the labels of ``MEMORY_RUNS`` to measure (default all); the table shows what was measured.
    """
    labels = [label for label, _, _ in MEMORY_RUNS]
    if runs is not None and set(runs) - set(labels):
        raise SystemExit(f"bench/train.py: --runs expects labels among {labels}, got {list(runs)}")
    chosen = [run for run in MEMORY_RUNS if runs is None or run[0] in runs]
    results: dict[tuple[int, str, str], dict] = {}
    with tempfile.TemporaryDirectory(prefix="kerasemote-bench-") as tmp:
        root = keep or tmp
        if not os.path.exists(os.path.join(root, "ours", "config.json")):
            os.makedirs(root, exist_ok=True)
            prepare_all("sd-v1", root)
        for size in sizes:
            for task in tasks:
                for label, side, checkpointing in chosen:
                    print(f"available {available_gib():.1f} GiB before {size}px {task} {label}", flush=True)
                    r = run_worker(side, task, root, size, warm, steps, side == "ours", checkpointing)
                    results[(size, task, label)] = r
                    if r.get("killed"):
                        print(f"sd-v1 {size}px {task} {label}: killed (does not fit in memory)", flush=True)
                        continue
                    print(f"sd-v1 {size}px {task:4s} {label:10s} {r['median_s']:7.2f} s/step  RSS loaded "
                          f"{r['loaded_rss_mib'] / 1024:5.2f} GiB, peak {r['peak_rss_mib'] / 1024:5.2f} GiB, "
                          f"peak after loading {r['train_peak_rss_mib'] / 1024:5.2f} GiB", flush=True)
    memory_table(results, sizes, tasks, tuple(label for label, _, _ in MEMORY_RUNS),
                 "bfloat16" if bf16() else "float32")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="tiny,sd-v1", help="comma-separated configs (tiny, sd-v1)")
    parser.add_argument("--resolution", type=int, default=256, help="sd-v1 image size (tiny uses 64)")
    parser.add_argument("--warm", type=int, default=3, help="steps discarded before timing")
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--memory", action="store_true", help="sd-v1 peak memory with and without checkpointing")
    parser.add_argument("--sizes", default="256,512", help="image sizes of --memory")
    parser.add_argument("--tasks", default="ti,lora", help="--memory: comma-separated tasks (ti, lora)")
    parser.add_argument("--runs", default=",".join(label for label, _, _ in MEMORY_RUNS),
                        help="--memory: comma-separated runs (ours, ours-ckpt, diffusers)")
    parser.add_argument("--keep", metavar="DIR", help="--memory: prepare the models in DIR once and reuse them")
    parser.add_argument("--bf16", action="store_true",
                        help="both sides compute in bfloat16 (fast on CPUs with AMX or AVX512-BF16)")
    parser.add_argument("--worker", choices=["ours", "diffusers", "convert"], help=argparse.SUPPRESS)
    parser.add_argument("--gradient-checkpointing", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--task", choices=["ti", "lora"], help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--no-cache", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bf16:
        os.environ[BF16_ENV] = "1"  # the workers inherit it
    if args.worker == "convert":
        print(json.dumps(convert(args.root)))
        return
    if args.worker == "ours":
        print(json.dumps(ours(args.task, args.root, args.size, args.warm, args.steps, not args.no_cache,
                              args.gradient_checkpointing)))
        return
    if args.worker == "diffusers":
        print(json.dumps(theirs(args.task, args.root, args.size, args.warm, args.steps)))
        return
    if args.memory:
        bench_memory([int(s) for s in args.sizes.split(",")], args.warm, args.steps, args.keep,
                     tuple(args.tasks.split(",")), tuple(args.runs.split(",")))
        return
    all_results = {}
    for name in args.configs.split(","):
        size = 64 if name == "tiny" else args.resolution
        all_results[(name, size)] = bench_config(name, size, args.warm, args.steps)
    report(all_results)


if __name__ == "__main__":
    main()
