"""``LazyArray``: an array whose data is read only when NumPy asks for it (loading and saving tensor by tensor).

``read_aligned`` fills the buffers of those reads (``aligned_empty``), aligned as TensorFlow's own
tensors are, and ``to_tensor`` hands one to TensorFlow without a copy: a variable is then assigned
while its new value is held once beside it.
"""

from __future__ import annotations

import ctypes
import functools
import os
from typing import Any, BinaryIO, Callable, Sequence

import numpy as np


class LazyArray:
    """An array read (or converted) only when NumPy asks for it (``np.asarray(lazy)``).

    Its shape and dtype are known first, so a checkpoint is checked before anything is read, and
    a model loads or saves one tensor at a time instead of holding a second copy of itself.

    Args:
        shape, dtype: the array's, known before it is read.
        load: returns the array: a fresh one each call, which nothing else holds, so its reader
            may hand it on without copying it (``weights.assign_arrays`` gives it to TensorFlow).
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


# TensorFlow's CPU tensors are aligned to 64 bytes (Eigen's widest vectors); a NumPy buffer aligned
# the same way can be handed to it without a copy.
ALIGNMENT = 64


def aligned_empty(shape: Sequence[int], dtype: Any) -> np.ndarray:
    """An uninitialized C-ordered array whose data starts on an ``ALIGNMENT``-byte boundary."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGNMENT, dtype=np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start : start + nbytes].view(dtype).reshape(shape)


def aligned_copy(array: np.ndarray, dtype: Any) -> np.ndarray:
    """``array`` cast to ``dtype`` into a fresh ``aligned_empty`` buffer (one copy)."""
    out = aligned_empty(array.shape, dtype)
    np.copyto(out, array, casting="unsafe")
    return out


def is_aligned(array: np.ndarray) -> bool:
    """Whether ``array`` is C-contiguous and starts on an ``ALIGNMENT``-byte boundary."""
    return array.flags.c_contiguous and array.ctypes.data % ALIGNMENT == 0


def read_aligned(f: BinaryIO, shape: Sequence[int], dtype: Any) -> np.ndarray:
    """The next bytes of ``f`` as a fresh ``aligned_empty`` array of ``shape`` and ``dtype``.

    Raises:
        EOFError: ``f`` ends before the array is full (the message gives both byte counts).
    """
    array = aligned_empty(shape, dtype)
    buffer = memoryview(array.reshape(-1).view(np.uint8))
    filled = 0
    while filled < len(buffer):
        n = f.readinto(buffer[filled:])
        if not n:
            raise EOFError(f"expected {len(buffer)} bytes, found {filled}")
        filled += n
    return array


def to_tensor(value: Any, dtype: Any) -> Any:
    """``value`` (an array or a ``LazyArray``) as a tensor of ``dtype``, for ``Variable.assign``.

    TensorFlow's assign keeps the tensor it is given as the variable's storage and frees the old
    one. ``tf.convert_to_tensor`` of a NumPy array holds two more copies of it for a moment; with
    the system allocator (``system_allocator``) an aligned array is handed over through DLPack
    instead and becomes the storage itself. A ``LazyArray``'s read is fresh and nothing else holds
    it, so it is handed over as it is; any other array is copied once, so the variable never shares
    memory with the caller's array. With TensorFlow's own pooling allocator, which reuses the freed
    storage for the next converted tensor, the tensor is converted as usual.
    """
    import keras

    fresh = isinstance(value, LazyArray)
    array = np.asarray(value) if fresh else value
    try:
        want = np.dtype(getattr(dtype, "name", dtype))
    except TypeError:  # bfloat16 and other dtypes NumPy has no name for
        want = None
    if (keras.backend.backend() != "tensorflow" or not system_allocator() or want is None
            or not isinstance(array, np.ndarray) or not array.size):
        return keras.ops.cast(array, dtype)
    if not (fresh and array.dtype == want and is_aligned(array) and array.flags.writeable):
        array = aligned_copy(array, want)
    import tensorflow as tf

    return tf.experimental.dlpack.from_dlpack(array.__dlpack__())


def system_allocator() -> bool:
    """Whether TensorFlow was asked to take its CPU tensors from the C allocator (``malloc``).

    ``kerasemote`` commands ask for it before TensorFlow starts (``TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1``);
    freed tensors then go back to the C allocator, and ``release_memory`` returns them to the system.
    """
    return os.environ.get("TF_ONEDNN_USE_SYSTEM_ALLOCATOR", "").strip().lower() in ("1", "true")


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc; other C libraries have no such call
    except (AttributeError, OSError):
        return None


def release_memory() -> None:
    """Give the C allocator's free pages back to the system (glibc's ``malloc_trim``; a no-op elsewhere).

    Freed blocks inside the heap stay resident until then; loading a model frees one old variable
    storage per tensor, so without this the process would grow by the model's size again.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
