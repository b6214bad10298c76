"""``LazyArray``: an array whose data is read only when NumPy asks for it (loading and saving tensor by tensor)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np


class LazyArray:
    """An array read (or converted) only when NumPy asks for it (``np.asarray(lazy)``).

    Its shape and dtype are known first, so a checkpoint is checked before anything is read, and
    a model loads or saves one tensor at a time instead of holding a second copy of itself.

    Args:
        shape, dtype: the array's, known before it is read.
        load: returns the array (a fresh one each call; nothing is cached).
    """

    def __init__(self, shape: Sequence[int], dtype: Any, load: Callable[[], np.ndarray]):
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self._load = load

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        array = self._load()
        return array if dtype is None else array.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"LazyArray(shape={self.shape}, dtype={self.dtype})"
