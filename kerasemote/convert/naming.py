"""Map our Keras variable paths to PyTorch (diffusers / transformers) state-dict keys.

Our layers are named after the reference modules (see ``kerasemote.models.layers``),
so a path ``unet/down_blocks.0/resnets.0/conv1/kernel`` is the key
``down_blocks.0.resnets.0.conv1.weight``; only the last name and the tensor layout
change:

* Dense ``kernel`` (in, out)          <-> Linear ``weight`` (out, in)
* Conv2D ``kernel`` (kh, kw, in, out) <-> Conv2d ``weight`` (out, in, kh, kw)
* norms ``gamma`` / ``beta``          <-> ``weight`` / ``bias``
* Embedding ``embeddings``            <-> ``weight``
"""

from __future__ import annotations

import numpy as np

_LEAF = {"kernel": "weight", "bias": "bias", "gamma": "weight", "beta": "bias", "embeddings": "weight"}


def torch_key(path: str) -> str | None:
    """Reference key for one of our variable paths (model name dropped); None if it has none.

    Placeholder rows (``extra_embeddings``) have no counterpart in a base checkpoint.
    """
    parts = path.split("/")[1:]
    leaf = parts[-1]
    if leaf not in _LEAF:
        return None
    return ".".join(parts[:-1] + [_LEAF[leaf]])


def to_keras(path: str, array: np.ndarray, keras_shape: tuple[int, ...]) -> np.ndarray:
    """Reorder a reference tensor into the layout of our variable at ``path``.

    A 1x1 convolution and a Linear layer are interchangeable (older VAE checkpoints
    store attention projections as 1x1 convs; SD 2 uses Linear proj_in/out).
    """
    array = np.asarray(array)
    if path.endswith("/embeddings") or len(keras_shape) == 1:
        return array
    if len(keras_shape) == 4:
        if array.ndim == 2:
            array = array[:, :, None, None]
        return np.transpose(array, (2, 3, 1, 0))  # (out, in, kh, kw) -> (kh, kw, in, out)
    if array.ndim == 4:
        array = array[:, :, 0, 0]
    return array.T  # (out, in) -> (in, out)


def to_torch(path: str, value: np.ndarray) -> np.ndarray:
    """Our variable value in the reference layout (inverse of ``to_keras``)."""
    value = np.asarray(value)
    if path.endswith("/embeddings") or value.ndim == 1:
        return value
    if value.ndim == 4:
        return np.transpose(value, (3, 2, 0, 1))
    return value.T
