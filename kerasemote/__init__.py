"""kerasemote: teach Stable Diffusion 1.x new emoji and emotion concepts in Keras 3."""

import os as _os

_os.environ.setdefault("KERAS_BACKEND", "tensorflow")
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the CLI

__version__ = "0.1.0"

from kerasemote.config import ModelConfig, get_config  # noqa: E402
from kerasemote.model import StableDiffusion, load_model  # noqa: E402

__all__ = ["ModelConfig", "StableDiffusion", "get_config", "load_model", "__version__"]
