"""The text-to-image stage: the shared training loop (``training.train``) on text encoder + UNet.

``TextToImage`` is a strategy of the one training loop: it trains the text encoder and the
UNet together on cached latents and saves a whole model directory (EMA weights swapped in).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from kerasemote import model_dir, storage
from kerasemote.model import StableDiffusion
from kerasemote.pretrain.settings import MODEL_DIR, VALIDATION_PROMPTS, PretrainSettings
from kerasemote.training.config import TrainConfig
from kerasemote.training.data import ImageSet
from kerasemote.training.strategy import Strategy


class TextToImage(Strategy):
    """Train the text encoder and the UNet together; save a whole model directory.

    Args:
        save_dtype: dtype of the saved model files.
        initial_steps: steps already done by warm-start weights (their count continues).
    """

    name = "text-to-image"
    default_learning_rate = 2e-4
    trains_text_encoder = True

    def __init__(self, save_dtype: str = "float16", initial_steps: int = 0):
        self.save_dtype = save_dtype
        self.initial_steps = initial_steps

    def trainable_variables(self, model) -> list:
        return list(model.text_encoder.trainable_variables) + list(model.unet.trainable_variables)

    def caption(self, images: ImageSet) -> ImageSet:
        return images  # captions_for already gave every image its candidates

    def validation_prompts(self) -> list[str]:
        return list(VALIDATION_PROMPTS)

    def initial_step(self) -> int:
        return self.initial_steps

    def save(self, model, out_dir: str, step: int, ema: dict[str, np.ndarray] | None = None) -> list[str]:
        target = storage.join(out_dir, MODEL_DIR)
        save_model(model, target, step, ema, self.save_dtype)
        return [target]


def save_model(model: StableDiffusion, directory: str, step: int, ema: Mapping[str, np.ndarray] | None = None,
               dtype: str = "float16", extra: Mapping[str, Any] | None = None) -> None:
    """Write the model directory with the EMA weights swapped in (the live ones are put back after)."""
    weights = model.text_encoder.weights + model.unet.weights
    by_path = {v.path: v for v in weights}
    if len(by_path) != len(weights):
        raise AssertionError("Text encoder and UNet variable paths collide; EMA weights cannot be matched.")
    live = {path: np.array(by_path[path].numpy()) for path in (ema or {})}
    for path, value in (ema or {}).items():
        by_path[path].assign(value)
    try:
        facts = {"strategy": TextToImage.name, "steps": int(step), "ema": bool(ema)}
        model.save(directory, dtype=dtype, extra={"training": facts, **(extra or {})})
    finally:
        for path, value in live.items():
            by_path[path].assign(value)


def text_to_image_config(settings: PretrainSettings, progress: bool = True) -> TrainConfig:
    """The training loop's config of the text-to-image stage."""
    return TrainConfig(
        steps=settings.steps, batch_size=settings.batch_size, learning_rate=settings.learning_rate,
        lr_schedule=settings.lr_schedule, warmup_steps=settings.warmup_steps,
        min_snr_gamma=settings.min_snr_gamma, ema_decay=settings.ema_decay,
        seed=settings.seed, checkpoint_every=settings.checkpoint_every, validate_every=settings.validate_every,
        validation_prompts=VALIDATION_PROMPTS, validation_steps=20, keep_checkpoints=2, progress=progress,
    )


def exporter(model: StableDiffusion, export_dir: str, every: int,
             vae: Mapping[str, Any]) -> Callable[[int, float], None]:
    """A train callback writing the live weights to ``export_dir`` every ``every`` steps."""

    def export(step: int, loss: float) -> None:
        if every and step % every == 0:
            save_model(model, export_dir, step, None, "float16", {"vae": dict(vae)})

    return export


def copy_model(source: str, target: str, vae: Mapping[str, Any]) -> None:
    """Copy a model directory to ``target`` (a save: all-old or all-new), its manifest with the VAE facts ``vae``."""
    model_dir.copy(source, target, {"vae": dict(vae)})
