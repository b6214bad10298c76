"""LoRA: Keras' ``enable_lora`` on the targeted layers; only the A and B factors train.

The model's layers (``kerasemote.models.lora_layers``) multiply by the factors in the forward pass,
``x W + s (x A) B``, so a step holds no merged kernel and no kernel-sized gradient.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from kerasemote import storage
from kerasemote.lora_files import DEFAULT_TARGETS, check_targets, enable_lora, lora_from_model, lora_variables, save_lora
from kerasemote.training.data import ImageSet
from kerasemote.training.strategy import Strategy
from kerasemote.training.templates import fill_templates

LORA_FILE = "lora.npz"


class LoRA(Strategy):
    """Low-rank adapters on the UNet (and optionally the text encoder).

    Args:
        rank: LoRA rank.
        alpha: scale numerator (delta = alpha / rank * A @ B); default ``rank``.
        targets: groups of ``kerasemote.lora_files.TARGETS`` (default UNet attention q/k/v/out).
        words: concept -> the words that name it in template captions (e.g. a trigger word);
            default the concept's own name. Sidecar captions are used as they are.
        templates: ``object`` or ``style`` templates for images without a caption.
        seed: seed of the A initializers.
    """

    name = "lora"
    default_learning_rate = 1e-4

    def __init__(self, rank: int = 4, alpha: float | None = None, targets: Sequence[str] = DEFAULT_TARGETS,
                 words: Mapping[str, str] | None = None, templates: str = "object", seed: int = 0):
        self.rank = int(rank)
        self.alpha = float(alpha or rank)
        self.targets = check_targets(targets)
        self.words = dict(words or {})
        self.templates = templates
        self.seed = seed
        self._concepts: list[str] = []

    @property
    def trains_text_encoder(self) -> bool:
        return "text" in self.targets

    def prepare(self, model) -> None:
        if lora_variables(model):  # prepared already (e.g. by evaluate_loss before train)
            return
        enable_lora(model, self.rank, self.alpha, self.targets, seed=self.seed)

    def trainable_variables(self, model) -> list:
        return lora_variables(model)

    def caption(self, images: ImageSet) -> ImageSet:
        self._concepts = images.concept_names
        return images.with_captions(self.words, self.templates)

    def validation_prompts(self) -> list[str]:
        concepts = self._concepts or ["emoji"]
        return [fill_templates(self.words.get(c) or c.replace("-", " "), self.templates)[2] for c in concepts]

    def settings(self) -> dict[str, Any]:
        return {"rank": self.rank, "alpha": self.alpha, "targets": self.targets, "words": self.words,
                "templates": self.templates, "seed": self.seed}

    def save(self, model, out_dir: str, step: int, ema=None) -> list[str]:
        lora = lora_from_model(model, self.targets, steps=step)
        return [save_lora(storage.join(out_dir, LORA_FILE), lora)]
