"""Measure a pretrained model directory: sizes, VAE PSNR on the test split, sample grids.

    python bench/pretrain_report.py --model weights/kerasemote-tiny --data /tmp/emoji64 --out weights/samples

Writes ``samples.png`` (one row per prompt, ``--per-prompt`` seeds each), ``vae.png``
(test images over their reconstructions) and ``report.json``; prints the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402

from kerasemote import storage  # noqa: E402
from kerasemote.images import save_grid  # noqa: E402
from kerasemote.model import StableDiffusion, to_uint8  # noqa: E402
from kerasemote.presets import sha256_of  # noqa: E402
from kerasemote.models.vae import latent_distribution  # noqa: E402
from kerasemote.pretrain import VALIDATION_PROMPTS, read_prepared, reconstruction_psnr  # noqa: E402


def parameter_counts(model: StableDiffusion) -> dict[str, int]:
    return {part: int(sum(np.prod(v.shape) for v in m.weights)) for part, m in model.parts.items()}


def folder_megabytes(directory: str) -> float:
    return sum(os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory)) / 1e6


def file_hashes(directory: str) -> dict[str, str]:
    """sha256 of every file of the model directory (the manifest in weights/README.md)."""
    return {name: sha256_of(os.path.join(directory, name)) for name in sorted(os.listdir(directory))}


def sample_grid(model: StableDiffusion, prompts, per_prompt: int, guidance: float, steps: int, path: str) -> float:
    """One row per prompt; returns seconds per image."""
    started, rows = time.time(), []
    for i, prompt in enumerate(prompts):
        rows.append(model.generate([prompt] * per_prompt, steps=steps, guidance=guidance, seed=100 + i,
                                   progress=False))  # (per_prompt, S, S, 3)
    seconds = (time.time() - started) / (len(prompts) * per_prompt)
    save_grid(np.concatenate(rows), path, cols=per_prompt)
    return seconds


def vae_grid(model: StableDiffusion, images: np.ndarray, path: str) -> None:
    """Originals (top) over reconstructions (bottom)."""
    mean, _ = latent_distribution(model.vae_encoder(images.astype("float32") / 127.5 - 1.0))
    save_grid(np.concatenate([images, to_uint8(model.vae_decoder(mean))]), path, cols=len(images))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="weights/kerasemote-tiny")
    parser.add_argument("--data", required=True, help="prepared 64 px directory (for the test split)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--per-prompt", type=int, default=8)
    parser.add_argument("--guidance", type=float, default=7.0)
    parser.add_argument("--steps", type=int, default=25)
    args = parser.parse_args()
    model = StableDiffusion.load(args.model)
    storage.makedirs(args.out)
    images, rows, _ = read_prepared(args.data, model.config.image_size)
    test = images[np.array([r.split == "test" for r in rows])]
    pick = np.random.default_rng(0).choice(len(test), 12, replace=False)
    vae_grid(model, test[pick], os.path.join(args.out, "vae.png"))
    seconds = sample_grid(model, VALIDATION_PROMPTS, args.per_prompt, args.guidance, args.steps,
                          os.path.join(args.out, "samples.png"))
    manifest = json.loads(storage.read_bytes(os.path.join(args.model, "config.json")))
    report = {
        "model": args.model,
        "training": manifest.get("training"),
        "parameters": parameter_counts(model),
        "megabytes_on_disk": round(folder_megabytes(args.model), 2),
        "sha256": file_hashes(args.model),
        "vae_test_psnr_db": round(reconstruction_psnr(model, test), 2),
        "test_images": int(len(test)),
        "seconds_per_image": round(seconds, 3),
        "sampler": {"steps": args.steps, "guidance": args.guidance, "prompts": list(VALIDATION_PROMPTS)},
    }
    storage.write_bytes(os.path.join(args.out, "report.json"), json.dumps(report, indent=2).encode())
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
