"""Read PyTorch weight files into NumPy without torch and without running pickled code.

Supported:

* ``.safetensors`` (read and checked by ``kerasemote.convert.safetensors_file``);
* ``.bin`` / ``.ckpt`` / ``.pt`` written by ``torch.save`` since PyTorch 1.6: a zip
  holding ``<name>/data.pkl`` (the object tree) and ``<name>/data/<key>`` (raw
  storage bytes).

Why a restricted unpickler: ``pickle.load`` on a downloaded checkpoint runs any importable function
its author named (``os.system`` included). ``_RestrictedUnpickler.find_class`` resolves only the names a
state dict needs (``torch._utils._rebuild_tensor_v2``, ``_rebuild_parameter``, typed storages such as
``torch.FloatStorage``, ``collections.OrderedDict``, the NumPy scalars of Lightning's ``global_step``),
each replaced by our own NumPy function; anything else raises ``UnsafePickleError`` before it is called.
Tensors are built from the zip's ``data/`` entries with their offsets and strides, so views come back
right. Read lazily (``load_state_dict(path, lazy=True)``), each tensor reads only its own bytes when
used, so a converter holds one tensor at a time.

Legacy (non-zip) torch files are refused with instructions to re-save them.
"""

from __future__ import annotations

import collections
import contextlib
import os
import pickle
import struct
import zipfile
from typing import Any, BinaryIO, Callable, Iterator

import numpy as np

from kerasemote import storage
from kerasemote.convert.safetensors_file import bfloat16_to_float32, read_safetensors
from kerasemote.lazy import LazyArray, read_aligned
from kerasemote.weights import WeightFileError

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

class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A pickle asked for something other than tensors and plain containers."""


# ---------------------------------------------------------------------- torch zip pickles


# A storage entry torch writes is stored, not deflated; one that deflates more than this is a zip
# bomb (1 KB of zip asking for GBs of zeros), refused before it is inflated.
_MAX_DEFLATE_RATIO = 16
_SMALL_ENTRY = 2**20


def _entry_size(zf: zipfile.ZipFile, member: str, source: str) -> int:
    """The bytes a zip entry inflates to, refused when its stored bytes cannot hold them."""
    info = zf.getinfo(member)
    # A forged directory can claim any sizes: the stored bytes are at most the archive's.
    limit = min(info.compress_size, os.path.getsize(zf.filename)) if zf.filename else info.compress_size
    if info.compress_type != zipfile.ZIP_STORED:
        limit = max(_MAX_DEFLATE_RATIO * info.compress_size, _SMALL_ENTRY)
    if info.file_size > limit:
        raise WeightFileError(
            f"{source}: zip entry {member!r} claims {info.file_size} bytes but the file holds "
            f"{info.compress_size} for it (limit {limit})."
        )
    return info.file_size


class _Storage:
    """A typed storage: the data of one ``data/<key>`` zip entry, read on first use."""

    def __init__(self, zf: zipfile.ZipFile, member: str, dtype: Any, source: str, key: str):
        self._zf, self._member, self.dtype, self.source, self.key = zf, member, dtype, source, key
        self._array: np.ndarray | None = None
        self.nbytes = _entry_size(zf, member, source)
        self._filename = zf.filename

    @property
    def itemsize(self) -> int:
        return 2 if self.dtype == "bfloat16" else np.dtype(self.dtype).itemsize

    def array(self) -> np.ndarray:
        """The whole storage as a flat array (read once)."""
        if self._array is None:
            self._array = self.reader()(0, self.nbytes // self.itemsize)
        return self._array

    def reader(self) -> Callable[[int, int], np.ndarray]:
        """A reader of elements ``[first, first + count)`` that works after the zip is closed.

        A stored entry (what ``torch.save`` writes) is read straight from the file at its data's
        offset, so each tensor costs its own bytes only; a deflated one is inflated up to the span.
        """
        filename, member = self._filename, self._member
        start = _stored_data_offset(filename, self._zf.getinfo(member))

        def read(first: int, count: int) -> np.ndarray:
            begin, size = first * self.itemsize, count * self.itemsize
            with open(filename, "rb") if start is not None else _zip_member(filename, member) as f:
                f.seek(begin + (start or 0))
                try:
                    raw = read_aligned(f, (size,), np.uint8)
                except EOFError as err:
                    raise WeightFileError(f"{self.source}: storage entry {member!r} is truncated ({err}).") from None
            if self.dtype == "bfloat16":
                return bfloat16_to_float32(raw.view("<u2"))
            return raw.view(np.dtype(self.dtype).newbyteorder("<"))

        return read


@contextlib.contextmanager
def _zip_member(filename: str, member: str) -> Iterator[BinaryIO]:
    with zipfile.ZipFile(filename) as zf, zf.open(member) as f:
        yield f


_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # a zip entry's local file header (APPNOTE 4.3.7)


def _stored_data_offset(filename: str, info: zipfile.ZipInfo) -> int | None:
    """Where an uncompressed, unencrypted entry's bytes start in the file; None for any other entry."""
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
        return None
    with open(filename, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(_LOCAL_HEADER.size)
    if len(header) != _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
        return None  # let zipfile report the damage when the entry is read
    fields = _LOCAL_HEADER.unpack(header)
    return info.header_offset + _LOCAL_HEADER.size + fields[10] + fields[11]


class _StorageType:
    def __init__(self, name: str):
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


class _Tensor:
    """A tensor named by the pickle: checked and read only once its state-dict key is known."""

    def __init__(self, storage: _Storage, offset: Any, size: Any, stride: Any):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


def _rebuild_tensor(storage: _Storage, offset: int, size: tuple, stride: tuple, *_: Any) -> _Tensor:
    if not isinstance(storage, _Storage):
        raise UnsafePickleError(f"a tensor must be built from a storage, found {type(storage).__name__}.")
    return _Tensor(storage, offset, size, stride)


def _view_problem(tensor: _Tensor) -> str | None:
    """Why ``tensor`` cannot be read from its storage without reading past it or inflating it; or None."""
    offset, size, stride = tensor.offset, tensor.size, tensor.stride
    tuples = isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)
    if not tuples or not all(isinstance(n, int) and not isinstance(n, bool) for n in (offset, *size, *stride)):
        return f"expected integer offset, size and stride of one length, found {offset!r}, {size!r}, {stride!r}"
    if min(size + (offset,), default=0) < 0:
        return f"expected sizes and offset >= 0, found offset {offset}, size {size}"
    itemsize, present = tensor.storage.itemsize, tensor.storage.nbytes
    count = int(np.prod(size, dtype=object))
    needed = count * itemsize
    # Every element of a view must come from its own bytes of the storage: a zero or overlapping
    # stride (``zeros(1).expand(20000, 20000)``) would turn a few bytes into gigabytes.
    if count and offset * itemsize + needed > present:
        return f"needs {needed} bytes (size {size}) but its storage holds {max(present - offset * itemsize, 0)}"
    if any(s <= 0 for n, s in zip(size, stride) if n > 1):
        return f"expected strides > 0, found stride {stride} (size {size})"
    last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if count else offset
    if count and (last + 1) * itemsize > present:
        return f"reads byte {(last + 1) * itemsize} (stride {stride}) but its storage holds {present}"
    return None


class _Materializer:
    """Replace every ``_Tensor`` of an unpickled tree by a NumPy array, each view checked first.

    With ``lazy``, a tensor becomes a ``LazyArray`` that reads only its own bytes from the file
    when NumPy asks for it (every view is still checked here, before anything is read).
    """

    def __init__(self, source: str, present: int, lazy: bool = False):
        self.source, self.budget, self.lazy = source, present, lazy
        # A pickle can reference one object from many places (its memo): each is converted once,
        # so nesting that doubles at every level costs no more than the objects themselves.
        self._done: dict[int, Any] = {}

    def __call__(self, obj: Any, key: str = "") -> Any:
        if not isinstance(obj, (_Tensor, dict, list, tuple)):
            return obj
        if id(obj) not in self._done:
            self._done[id(obj)] = self._convert(obj, key)
        return self._done[id(obj)]

    def _convert(self, obj: Any, key: str) -> Any:
        if isinstance(obj, _Tensor):
            return self._array(obj, key or "<root>")
        if isinstance(obj, dict):
            items = [(k, self(v, f"{key}.{k}" if key else str(k))) for k, v in obj.items()]
            return type(obj)(items) if isinstance(obj, collections.OrderedDict) else dict(items)
        return type(obj)(self(v, f"{key}[{i}]") for i, v in enumerate(obj))

    def _array(self, tensor: _Tensor, key: str) -> np.ndarray | LazyArray:
        problem = _view_problem(tensor)
        if problem:
            raise WeightFileError(f"{self.source}: tensor {key!r} {problem}.")
        size, stride, offset = tensor.size, tensor.stride, tensor.offset
        count = int(np.prod(size, dtype=object))
        if count > 1 and stride != _contiguous_strides(size):
            # A strided view (slice, transpose) is copied; all copies together stay within the file's bytes.
            self.budget -= count * tensor.storage.itemsize
            if self.budget < 0:
                raise WeightFileError(
                    f"{self.source}: tensor {key!r}: strided views need more bytes in all than the file's storages hold."
                )
        if not self.lazy:
            return _shaped(tensor.storage.array()[offset:], size, stride)
        span = sum((n - 1) * s for n, s in zip(size, stride)) + 1 if count else 0  # elements from offset
        read = tensor.storage.reader()
        dtype = np.float32 if tensor.storage.dtype == "bfloat16" else tensor.storage.dtype
        return LazyArray(size, dtype, lambda: _shaped(read(offset, span), size, stride))


def _shaped(flat: np.ndarray, size: tuple[int, ...], stride: tuple[int, ...]) -> np.ndarray:
    """The tensor of ``size`` and element ``stride`` whose first element is ``flat[0]``."""
    count = int(np.prod(size, dtype=object))
    if count == 0:
        return np.zeros(size, dtype=flat.dtype)
    if stride == _contiguous_strides(size) or count == 1:
        return flat[:count].reshape(size)  # no copy: most tensors own their storage
    view = np.lib.stride_tricks.as_strided(
        flat, shape=size, strides=tuple(s * flat.itemsize for s in stride), writeable=False
    )
    return np.array(view)


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


def load_torch_zip(path: storage.PathLike, lazy: bool = False) -> Any:
    """Unpickle a ``torch.save`` zip file into NumPy arrays, dicts and plain values.

    Args:
        path: ``.bin``, ``.ckpt`` or ``.pt`` file (local or ``gs://``).
        lazy: a local file gives ``LazyArray``s, each reading its own tensor's bytes from the
            file when NumPy asks for it (the file must stay in place until then); a ``gs://``
            file is read whole.

    Returns:
        The saved object with every tensor replaced by a NumPy array (bfloat16 ->
        float32; other dtypes kept).

    Every tensor's offset, size and strides are checked against the bytes its storage
    holds before it is read, so a few bytes can never expand into gigabytes.

    Raises:
        UnsafePickleError: the pickle names a function or class outside the allowlist.
        WeightFileError: a tensor needing more bytes than its storage holds, a damaged zip
            or pickle; one line naming the file (and the tensor's key).
        ValueError: a legacy non-zip file.
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
        try:
            return _unpickle_zip(filename, source, lazy and filename == source)
        except ValueError:
            raise
        except _MALFORMED as err:
            # A damaged zip or pickle stream: name the file instead of showing the parser's traceback.
            raise WeightFileError(f"{source}: not a readable torch zip file ({type(err).__name__}: {err}).") from None


# What a damaged zip or pickle stream raises (ValueError subclasses pass through as they are).
_MALFORMED = (
    pickle.UnpicklingError, zipfile.BadZipFile, EOFError, struct.error, TypeError, IndexError,
    KeyError, AttributeError, OverflowError, RecursionError, MemoryError, OSError,
)


def _unpickle_zip(filename: str, source: str, lazy: bool) -> Any:
    with zipfile.ZipFile(filename) as zf:
        member = _pickle_member(zf, source)
        prefix = member[: -len("data.pkl")]
        _check_byteorder(zf, prefix, source)
        _entry_size(zf, member, source)
        with zf.open(member) as pkl:
            unpickler = _RestrictedUnpickler(pkl, zf, prefix, source)
            obj = unpickler.load()
        present = sum(s.nbytes for s in unpickler._storages.values())
        return _Materializer(source, present, lazy)(obj)


# ---------------------------------------------------------------------- state dicts


def _flat_arrays(obj: Any, source: str) -> dict[str, np.ndarray]:
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]  # Lightning / original SD checkpoints
    if not isinstance(obj, dict):
        raise ValueError(f"{source}: expected a dict of tensors, found {type(obj).__name__}.")
    return {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, (np.ndarray, LazyArray))}


def load_state_dict(path: storage.PathLike, lazy: bool = False) -> dict[str, np.ndarray]:
    """Every tensor of a ``.safetensors``, ``.bin``, ``.ckpt`` or ``.pt`` file, by key.

    A top-level ``"state_dict"`` entry (original SD ``.ckpt``) is unwrapped; other
    non-tensor entries (``global_step``...) are dropped.

    Args:
        path: local, Drive or ``gs://`` path.
        lazy: a local file gives ``LazyArray``s, each read from the file when NumPy asks for
            it (converters then hold one tensor at a time); a ``gs://`` file is read whole.

    Returns:
        key -> NumPy array in the file's layout (PyTorch's (out, in, kh, kw)...);
        float16 stays float16, bfloat16 becomes float32.
    """
    source = storage._fspath(path)
    if source.endswith(".safetensors"):
        with storage.local_copy(source) as filename:
            return read_safetensors(filename, source, lazy=lazy and filename == source)
    return _flat_arrays(load_torch_zip(source, lazy=lazy), source)


def save_safetensors(path: storage.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as ``.safetensors`` atomically, with the ``{"format": "pt"}`` metadata
    that transformers and diffusers expect."""
    from safetensors.numpy import save_file

    contiguous = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    with storage.local_output(path) as tmp:
        save_file(contiguous, tmp, metadata={"format": "pt"})
