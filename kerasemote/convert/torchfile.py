"""Read PyTorch weight files into NumPy without torch and without running pickled code.

Supported:

* ``.safetensors`` (via the ``safetensors`` package; bfloat16 tensors, which NumPy
  has no dtype for, are widened to float32 from the raw bytes);
* ``.bin`` / ``.ckpt`` / ``.pt`` written by ``torch.save`` since PyTorch 1.6: a zip
  holding ``<name>/data.pkl`` (the object tree) and ``<name>/data/<key>`` (raw
  storage bytes).

Why a restricted unpickler: unpickling can call any importable function
(``os.system`` included), so ``pickle.load`` on a downloaded checkpoint runs
whatever its author wrote. ``_RestrictedUnpickler.find_class`` only resolves the
few names a state dict needs (``torch._utils._rebuild_tensor_v2``,
``_rebuild_parameter``, the typed storages such as ``torch.FloatStorage``,
``collections.OrderedDict``, and the NumPy scalar constructors some Lightning
checkpoints use for ``global_step``), each replaced by our own NumPy function.
Anything else raises ``UnsafePickleError`` before it is called. Tensors are built
from the zip's ``data/`` entries with their storage offset and strides, so views
(a tensor saved as a slice of a larger storage) come back right.

Legacy (non-zip) torch files are refused with instructions to re-save them.
"""

from __future__ import annotations

import collections
import json
import pickle
import struct
import zipfile
from typing import Any

import numpy as np

from kerasemote import storage

_PICKLE_PROTO = b"\x80"
_ZIP_MAGIC = b"PK"

# torch storage class -> NumPy dtype of the raw bytes (bfloat16 read as uint16 bits).
_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}

_SAFETENSORS_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A pickle asked for something other than tensors and plain containers."""


def bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    """Widen raw bfloat16 bits (uint16) to float32: they are a float32's top 16 bits."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


# ---------------------------------------------------------------------- safetensors


def _safetensors_header(filename: str) -> tuple[dict[str, Any], int]:
    """The JSON header and the byte offset where tensor data starts."""
    with open(filename, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(length)), 8 + length


def _read_safetensors(filename: str) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    header, data_start = _safetensors_header(filename)
    arrays = {}
    with safe_open(filename, framework="numpy") as f:
        for key in f.keys():
            dtype = header[key]["dtype"]
            if dtype == "BF16":
                begin, end = header[key]["data_offsets"]
                bits = np.fromfile(filename, dtype="<u2", count=(end - begin) // 2, offset=data_start + begin)
                arrays[key] = bfloat16_to_float32(bits).reshape(header[key]["shape"])
            elif dtype in _SAFETENSORS_DTYPES:
                arrays[key] = f.get_tensor(key)
            else:
                raise ValueError(
                    f"{filename}: key {key!r} has dtype {dtype}; expected one of "
                    f"{sorted(_SAFETENSORS_DTYPES) + ['BF16']}."
                )
    return arrays


# ---------------------------------------------------------------------- torch zip pickles


class _Storage:
    """A typed storage: the data of one ``data/<key>`` zip entry, read on first use."""

    def __init__(self, zf: zipfile.ZipFile, member: str, dtype: Any, source: str, key: str):
        self._zf, self._member, self.dtype, self.source, self.key = zf, member, dtype, source, key
        self._array: np.ndarray | None = None

    def array(self) -> np.ndarray:
        """The whole storage as a flat array (read once, into one writable buffer)."""
        if self._array is None:
            raw = np.empty(self._zf.getinfo(self._member).file_size, dtype=np.uint8)
            with self._zf.open(self._member) as f:
                filled = 0
                while filled < raw.size:
                    n = f.readinto(memoryview(raw)[filled:])
                    if not n:
                        raise ValueError(f"{self.source}: storage entry {self._member!r} is truncated.")
                    filled += n
            if self.dtype == "bfloat16":
                self._array = bfloat16_to_float32(raw.view("<u2"))
            else:
                self._array = raw.view(np.dtype(self.dtype).newbyteorder("<"))
        return self._array


class _StorageType:
    def __init__(self, name: str):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


def _rebuild_tensor(storage: _Storage, offset: int, size: tuple, stride: tuple, *_: Any) -> np.ndarray:
    """NumPy copy of ``storage[offset:]`` viewed with ``size`` and element ``stride``."""
    flat = storage.array()
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride) or min(size + stride + (offset,), default=0) < 0:
        raise UnsafePickleError(
            f"{storage.source}: storage {storage.key!r} has an invalid view "
            f"(offset {offset}, size {size}, stride {stride})."
        )
    if 0 in size:
        return np.zeros(size, dtype=flat.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= flat.size:
        raise UnsafePickleError(
            f"{storage.source}: storage {storage.key!r} holds {flat.size} elements but a tensor "
            f"(offset {offset}, size {size}, stride {stride}) reads element {last}."
        )
    count = int(np.prod(size))
    if stride == _contiguous_strides(size):
        return flat[offset : offset + count].reshape(size)  # no copy: most tensors own their storage
    view = np.lib.stride_tricks.as_strided(
        flat[offset:], shape=size, strides=tuple(s * flat.itemsize for s in stride), writeable=False
    )
    return np.array(view)  # a real view (slice, transpose): contiguous copy


def _contiguous_strides(size: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for n in reversed(size):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))


def _rebuild_parameter(data: np.ndarray, *_: Any) -> np.ndarray:
    return data


def _numpy_scalar(dtype: np.dtype, data: bytes | None = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biufc" or not isinstance(data, bytes):
        raise UnsafePickleError(f"only numeric NumPy scalars are allowed, got dtype {dtype!r}.")
    return np.frombuffer(data, dtype=dtype)[0]


def _numpy_dtype(name: Any, *_: Any) -> np.dtype:
    dtype = np.dtype(name)
    if dtype.kind not in "biufc":
        raise UnsafePickleError(f"only numeric NumPy dtypes are allowed, got {name!r}.")
    return dtype


def _encode(text: str, encoding: str = "utf-8") -> bytes:
    return str(text).encode(encoding)  # what protocol-2 pickles use to carry bytes


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy", "dtype"): _numpy_dtype,
    ("_codecs", "encode"): _encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals in ``_ALLOWED`` and torch's typed storages."""

    def __init__(self, file: Any, zf: zipfile.ZipFile, prefix: str, source: str):
        super().__init__(file)
        self._zf, self._prefix, self._source = zf, prefix, source
        self._storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafePickleError(
            f"{self._source}: refusing to unpickle {module}.{name}; a weight file should only hold "
            "tensors and dicts. If you trust this file, re-save its state dict as .safetensors "
            "(safetensors.torch.save_file(torch.load(path)['state_dict'], 'model.safetensors'))."
        )

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"):
            raise UnsafePickleError(f"{self._source}: unknown persistent id {pid!r}.")
        storage_type, key = pid[1], str(pid[2])
        if not isinstance(storage_type, _StorageType):
            raise UnsafePickleError(f"{self._source}: storage {key!r} has unknown type {storage_type!r}.")
        if key not in self._storages:
            member = f"{self._prefix}data/{key}"
            if member not in self._zf.NameToInfo:
                raise ValueError(f"{self._source}: storage entry {member!r} is missing from the zip.")
            self._storages[key] = _Storage(self._zf, member, storage_type.dtype, self._source, key)
        return self._storages[key]


def _pickle_member(zf: zipfile.ZipFile, source: str) -> str:
    names = [n for n in zf.namelist() if n.endswith("data.pkl") and n.count("/") <= 1]
    if len(names) != 1:
        raise ValueError(
            f"{source}: expected one '<name>/data.pkl' entry in a torch zip file, found {names or 'none'}."
        )
    return names[0]


def _check_byteorder(zf: zipfile.ZipFile, prefix: str, source: str) -> None:
    member = f"{prefix}byteorder"
    if member in zf.NameToInfo and zf.read(member).strip() != b"little":
        raise ValueError(
            f"{source}: big-endian torch files are not supported; re-save it on a little-endian machine."
        )


def load_torch_zip(path: storage.PathLike) -> Any:
    """Unpickle a ``torch.save`` zip file into NumPy arrays, dicts and plain values.

    Args:
        path: ``.bin``, ``.ckpt`` or ``.pt`` file (local or ``gs://``).

    Returns:
        The saved object with every tensor replaced by a NumPy array (bfloat16 ->
        float32; other dtypes kept).

    Raises:
        UnsafePickleError: the pickle names a function or class outside the allowlist.
        ValueError: a legacy non-zip file, or a malformed zip.
    """
    source = storage._fspath(path)
    with storage.local_copy(source) as filename:
        with open(filename, "rb") as f:
            magic = f.read(2)
        if magic[:1] == _PICKLE_PROTO:
            raise ValueError(
                f"{source} is a legacy (pre-zip) PyTorch file, which can only be read by running its "
                "pickle. If you trust it, convert it once with torch: "
                "`torch.save(torch.load(path, weights_only=True), 'new.ckpt')`, or better "
                "`safetensors.torch.save_file(state_dict, 'model.safetensors')`."
            )
        if magic != _ZIP_MAGIC:
            raise ValueError(f"{source}: not a torch zip file (starts with {magic!r}, expected b'PK').")
        with zipfile.ZipFile(filename) as zf:
            member = _pickle_member(zf, source)
            prefix = member[: -len("data.pkl")]
            _check_byteorder(zf, prefix, source)
            with zf.open(member) as pkl:
                return _RestrictedUnpickler(pkl, zf, prefix, source).load()


# ---------------------------------------------------------------------- state dicts


def _flat_arrays(obj: Any, source: str) -> dict[str, np.ndarray]:
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]  # Lightning / original SD checkpoints
    if not isinstance(obj, dict):
        raise ValueError(f"{source}: expected a dict of tensors, found {type(obj).__name__}.")
    return {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, np.ndarray)}


def load_state_dict(path: storage.PathLike) -> dict[str, np.ndarray]:
    """Every tensor of a ``.safetensors``, ``.bin``, ``.ckpt`` or ``.pt`` file, by key.

    A top-level ``"state_dict"`` entry (original SD ``.ckpt``) is unwrapped; other
    non-tensor entries (``global_step``...) are dropped.

    Args:
        path: local, Drive or ``gs://`` path.

    Returns:
        key -> NumPy array in the file's layout (PyTorch's (out, in, kh, kw)...);
        float16 stays float16, bfloat16 becomes float32.
    """
    source = storage._fspath(path)
    if source.endswith(".safetensors"):
        with storage.local_copy(source) as filename:
            return _read_safetensors(filename)
    return _flat_arrays(load_torch_zip(source), source)


def save_safetensors(path: storage.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as ``.safetensors`` atomically, with the ``{"format": "pt"}`` metadata
    that transformers and diffusers expect."""
    from safetensors.numpy import save_file

    contiguous = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    with storage.local_output(path) as tmp:
        save_file(contiguous, tmp, metadata={"format": "pt"})
