"""Full UNet fine-tuning: every UNet weight trains; the text encoder and VAE stay frozen.

The PMLDL recipe: AdamW or Adafactor, cosine schedule with warm-up, gradient accumulation
and clipping (all ``TrainConfig`` options), and an optional EMA whose average is what gets
saved. The output is a complete model directory (``OUT/model``) that every command loads.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from kerasemote import storage
from kerasemote.training.data import ImageSet
from kerasemote.training.strategy import Strategy
from kerasemote.training.templates import fill_templates

MODEL_DIR = "model"


class FineTune(Strategy):
    """Train the whole UNet.

    Args:
        words: concept -> the words that name it in template captions; default its name.
        templates: ``object`` or ``style`` templates for images without a caption.
        save_dtype: ``float32`` or ``float16`` model files.
    """

    name = "finetune"
    default_learning_rate = 1e-5

    def __init__(self, words: Mapping[str, str] | None = None, templates: str = "object",
                 save_dtype: str = "float32"):
        self.words = dict(words or {})
        self.templates = templates
        self.save_dtype = save_dtype
        self._concepts: list[str] = []

    def trainable_variables(self, model) -> list:
        return list(model.unet.trainable_variables)

    def caption(self, images: ImageSet) -> ImageSet:
        self._concepts = images.concept_names
        return images.with_captions(self.words, self.templates)

    def validation_prompts(self) -> list[str]:
        concepts = self._concepts or ["emoji"]
        return [fill_templates(self.words.get(c) or c.replace("-", " "), self.templates)[2] for c in concepts]

    def settings(self) -> dict[str, Any]:
        return {"words": self.words, "templates": self.templates}

    def save(self, model, out_dir: str, step: int, ema: dict[str, np.ndarray] | None = None) -> list[str]:
        """Write ``OUT/model`` (the EMA weights when EMA is on; the live weights are restored after)."""
        target = storage.join(out_dir, MODEL_DIR)
        live = {v.path: np.array(v.numpy()) for v in model.unet.weights} if ema else {}
        by_path = {v.path: v for v in model.unet.weights}
        for path, value in (ema or {}).items():
            by_path[path].assign(value)
        try:
            model.save(target, dtype=self.save_dtype, extra={"training": {"strategy": self.name, "steps": step,
                                                                          "ema": bool(ema)}})
        finally:
            for path, value in live.items():
                by_path[path].assign(value)
        return [target]
