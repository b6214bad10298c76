"""Time to first image: saved sd-v1 files -> the first image, each framework in a fresh process.

``bench/generate.py --first-image`` calls ``first_image_table``. The files are written once (random
weights: diffusers' initialization, copied into ours; keras-cv its own):

* ours: a model directory (``StableDiffusion.save``), read back by ``kerasemote.load_model``;
* keras-cv: its text encoder, UNet and decoder ``.h5`` files in the layout of its published weights,
  read back by its ``load_weights`` (keras-cv's own loading path);
* diffusers: a pipeline folder (``save_pretrained``), read back by ``StableDiffusionPipeline.from_pretrained``.

Each worker process reports its import time and the time from the start of loading to the first
uint8 image (one image, DDIM, guidance 7.5), prompt encoding included. The runs alternate across
frameworks; the best of ``repeats`` counts.

    python bench/first_image.py --size 256 --steps 5 --repeats 2 [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

START = time.perf_counter()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench/generate.py

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, ".."))

PROMPT = "a happy broccoli emoji"
KERASCV_PARTS = ("text_encoder", "diffusion_model", "decoder")


def save_all(root: str, config_name: str = "sd-v1") -> None:
    """Write the frameworks' files of one random model under ``root`` (keras-cv: sd-v1 only)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from reference import copy_into_ours, diffusers_parts

    from kerasemote.config import get_config
    from kerasemote.model import StableDiffusion

    config = get_config(config_name)
    unet, vae, text = diffusers_parts(config)
    model = StableDiffusion(config)
    copy_into_ours(model, unet, vae, text)
    model.save(os.path.join(root, "ours"))
    del model
    scheduler = DDIMScheduler(beta_start=config.beta_start, beta_end=config.beta_end, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=None, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(os.path.join(root, "diffusers"))
    del pipe, unet, vae, text
    if config_name == "sd-v1":
        _save_kerascv(os.path.join(root, "keras-cv"))


def _kerascv_parts(size: int) -> dict:
    from keras_cv.src.models.stable_diffusion.decoder import Decoder
    from keras_cv.src.models.stable_diffusion.diffusion_model import DiffusionModel
    from keras_cv.src.models.stable_diffusion.text_encoder import TextEncoder

    return {"text_encoder": lambda: TextEncoder(77, download_weights=False),
            "diffusion_model": lambda: DiffusionModel(size, size, 77, download_weights=False),
            "decoder": lambda: Decoder(size, size, download_weights=False)}


def _save_kerascv(folder: str) -> None:
    """Each part's weights in the legacy ``.h5`` layout of keras-cv's published files."""
    import h5py
    from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

    os.makedirs(folder)
    for name, make in _kerascv_parts(512).items():  # weight shapes do not depend on the image size
        with h5py.File(os.path.join(folder, f"{name}.h5"), "w") as f:
            save_weights_to_hdf5_group(f, make())


# ---------------------------------------------------------------------- workers (one per process)


def _ids():
    from kerasemote.tokenizer import Tokenizer

    tokenizer = Tokenizer()
    return tokenizer.encode([PROMPT]).astype("int32"), tokenizer.encode([""]).astype("int32")


def ours_worker(root: str, size: int, steps: int) -> float:
    import kerasemote.model  # noqa: F401  (TensorFlow and Keras, as the others import theirs first)
    from kerasemote import load_model

    imported = time.perf_counter()
    model = load_model(os.path.join(root, "ours"))
    model.generate(PROMPT, steps=steps, height=size, width=size, seed=0, progress=False)
    return imported


def kerascv_worker(root: str, size: int, steps: int) -> float:
    import numpy as np
    from keras_cv.models import StableDiffusion

    imported = time.perf_counter()
    sd = StableDiffusion(img_height=size, img_width=size, jit_compile=False)
    for name, make in _kerascv_parts(size).items():
        part = make()
        part.load_weights(os.path.join(root, "keras-cv", f"{name}.h5"))
        setattr(sd, f"_{name}", part)
    ids, _ = _ids()
    context = sd.text_encoder.predict_on_batch({"tokens": ids, "positions": np.arange(77, dtype="int32")[None]})
    sd.generate_image(context, num_steps=steps, seed=0)
    return imported


def diffusers_worker(root: str, size: int, steps: int) -> float:
    import torch
    from diffusers import StableDiffusionPipeline

    torch.set_num_threads(os.cpu_count() or 1)
    imported = time.perf_counter()
    # The folder has no tokenizer (prompts arrive as ids, as for keras-cv) and no safety checker.
    pipe = StableDiffusionPipeline.from_pretrained(os.path.join(root, "diffusers"), tokenizer=None, safety_checker=None,
                                                   feature_extractor=None, image_encoder=None,
                                                   requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    ids, empty = (torch.from_numpy(i).long() for i in _ids())
    with torch.inference_mode():
        pipe(prompt_embeds=pipe.text_encoder(ids)[0], negative_prompt_embeds=pipe.text_encoder(empty)[0],
             height=size, width=size, num_inference_steps=steps, guidance_scale=7.5, output_type="np",
             generator=torch.Generator().manual_seed(0))
    return imported


WORKERS = {"ours": ours_worker, "keras-cv": kerascv_worker, "diffusers": diffusers_worker}


def run_worker(framework: str, root: str, size: int, steps: int) -> dict[str, float]:
    """One fresh process: its import and load-to-first-image seconds."""
    out = subprocess.run([sys.executable, __file__, "--worker", framework, "--root", root, "--size", str(size),
                          "--steps", str(steps)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def first_image_table(size: int, steps: int, repeats: int, frameworks: list[str], keep: str | None = None,
                      config_name: str = "sd-v1") -> None:
    """Save the files, time each framework ``repeats`` times (alternating), print the table."""
    if config_name != "sd-v1":
        frameworks = [f for f in frameworks if f != "keras-cv"]
    with tempfile.TemporaryDirectory() as scratch:
        root = keep or scratch
        if not os.path.isdir(os.path.join(root, "ours")):
            subprocess.run([sys.executable, __file__, "--save", "--root", root, "--config", config_name], check=True)
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in frameworks}
        for _ in range(repeats):
            for name in frameworks:
                runs[name].append(run_worker(name, root, size, steps))
                print(f"first image {name}: {runs[name][-1]}", flush=True)
    best = {name: min(r, key=lambda x: x["load_to_image_s"]) for name, r in runs.items()}
    print(f"\nTime to first image: {config_name} files -> one {size} px image, {steps} DDIM steps, best of {repeats}\n")
    print("| framework | import s | load to first image s | ours / it |")
    print("|---|---:|---:|---:|")
    for name, r in best.items():
        vs = f"{best['ours']['load_to_image_s'] / r['load_to_image_s']:.2f}" if "ours" in best else "-"
        print(f"| {name} | {r['import_s']:.1f} | {r['load_to_image_s']:.1f} | {vs} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--frameworks", default="ours,keras-cv,diffusers")
    parser.add_argument("--config", default="sd-v1", help="sd-v1, or tiny to try the script quickly (no keras-cv)")
    parser.add_argument("--keep", help="write the files here (reused when present) instead of a temporary folder")
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--save", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.save:
        save_all(args.root, args.config)
    elif args.worker:
        imported = WORKERS[args.worker](args.root, args.size, args.steps)
        done = time.perf_counter()
        print(json.dumps({"import_s": imported - START, "load_to_image_s": done - imported}))
    else:
        first_image_table(args.size, args.steps, args.repeats, args.frameworks.split(","), args.keep, args.config)


if __name__ == "__main__":
    main()
