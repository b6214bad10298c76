"""Building a part whose every variable is assigned right after: zeros instead of random draws.

A part is built with random initial values (``StableDiffusion.random``, training from scratch).
A part built only to receive saved weights (``StableDiffusion.load``) would draw those values and
overwrite them at once; at sd-v1 size the draws take most of the build (about 860M uniform draws
for the UNet alone). Inside ``skip_random_init()`` the layers that hold the large kernels
(``kerasemote.models.lora_layers``' ``Dense`` and ``Conv2D``, the token embedding) start at zeros,
a plain memory fill. Variable names, shapes, dtypes and order do not change.

Example:
    >>> with skip_random_init():
    ...     unet = UNet(config).build_with_dummy()  # doctest: +SKIP
    >>> weights.assign_arrays(unet, arrays, "unet.npz")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator

_state = threading.local()


@contextlib.contextmanager
def skip_random_init() -> Iterator[None]:
    """Variables created on this thread inside the block start at zeros; use only when each is assigned next."""
    previous = getattr(_state, "active", False)
    _state.active = True
    try:
        yield
    finally:
        _state.active = previous


def initializer(default: Any) -> Any:
    """``default``, or ``"zeros"`` inside ``skip_random_init()``."""
    return "zeros" if getattr(_state, "active", False) else default
