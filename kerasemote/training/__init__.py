"""Training: one loop (``loop.train``) and strategies that say what trains and what is saved.

Example:
    >>> from kerasemote.training import TextualInversion, TrainConfig, concept_tokens, load_training_images, train
    >>> data = load_training_images("emotions/", size=64)          # happy/, sad/, ...
    >>> strategy = TextualInversion(concept_tokens(data), init="face")
    >>> result = train(model, strategy, data, TrainConfig(steps=500), "runs/emotions")
"""

from kerasemote.training.config import TrainConfig, TrainResult
from kerasemote.training.data import ImageSet, load_training_images
from kerasemote.training.finetune import FineTune
from kerasemote.training.loop import train
from kerasemote.training.lora import LoRA
from kerasemote.training.strategy import Strategy
from kerasemote.training.templates import OBJECT_TEMPLATES, STYLE_TEMPLATES, fill_templates
from kerasemote.training.textual_inversion import TextualInversion, concept_tokens

__all__ = [
    "FineTune", "ImageSet", "LoRA", "OBJECT_TEMPLATES", "STYLE_TEMPLATES", "Strategy", "TextualInversion",
    "TrainConfig", "TrainResult", "concept_tokens", "fill_templates", "load_training_images", "train",
]
