"""The strategy contract: what trains and what is saved (TextualInversion, LoRA, FineTune implement it)."""

from __future__ import annotations

from typing import Any

import numpy as np

from kerasemote.training.data import ImageSet


class Strategy:
    """What trains and what is saved; subclasses: TextualInversion, LoRA, FineTune."""

    name = "strategy"
    default_learning_rate = 1e-4
    trains_text_encoder = False

    def prepare(self, model) -> None:
        """Change the model for training (add placeholders, enable LoRA); called once."""

    def trainable_variables(self, model) -> list:
        raise NotImplementedError

    def caption(self, images: ImageSet) -> ImageSet:
        """Captions for every image (sidecar text or templates)."""
        return images.with_captions()

    def validation_prompts(self) -> list[str]:
        return ["an emoji"]

    def settings(self) -> dict[str, Any]:
        """JSON facts a resumed run must match (tokens, rank, targets...)."""
        return {}

    def initial_step(self) -> int:
        """Steps already done by what ``prepare`` loaded (a seed-style embedding file)."""
        return 0

    def after_step(self, model) -> None:
        """Called after every optimizer step (textual inversion puts back the rows it must not change)."""

    def save(self, model, out_dir: str, step: int, ema: dict[str, np.ndarray] | None = None) -> list[str]:
        """Write the user-facing files (embeddings, LoRA, UNet); returns their paths."""
        raise NotImplementedError
