"""kerasemote: teach Stable Diffusion 1.x new emoji and emotion concepts in Keras 3."""

import os as _os

_os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from kerasemote.config import ModelConfig, get_config  # noqa: E402

__version__ = "0.1.0"

__all__ = ["ModelConfig", "get_config", "__version__"]
