"""kerasemote: teach Stable Diffusion 1.x new emoji and emotion concepts in Keras 3."""

import os as _os

_os.environ.setdefault("KERAS_BACKEND", "tensorflow")
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the CLI

__version__ = "0.1.0"

import importlib as _importlib  # noqa: E402

from kerasemote.config import ModelConfig, get_config  # noqa: E402

# The model pulls in TensorFlow; these names are imported on first use so that
# `kerasemote data ...` and `import kerasemote.data` start fast.
_LAZY = {
    "StableDiffusion": "kerasemote.model",
    "load_model": "kerasemote.presets",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(_importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kerasemote' has no attribute {name!r}")


__all__ = ["ModelConfig", "StableDiffusion", "get_config", "load_model", "__version__"]
