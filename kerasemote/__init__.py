"""kerasemote: teach Stable Diffusion 1.x new emoji and emotion concepts in Keras 3."""

import os as _os

_os.environ.setdefault("KERAS_BACKEND", "tensorflow")
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the CLI

__version__ = "0.1.0"

from kerasemote.config import ModelConfig, get_config  # noqa: E402


def __getattr__(name: str):
    # The model pulls in TensorFlow; import it on first use so `kerasemote data ...`
    # and `import kerasemote.data` start fast.
    if name in ("StableDiffusion", "load_model"):
        from kerasemote import model

        return getattr(model, name)
    raise AttributeError(f"module 'kerasemote' has no attribute {name!r}")


__all__ = ["ModelConfig", "StableDiffusion", "get_config", "load_model", "__version__"]
