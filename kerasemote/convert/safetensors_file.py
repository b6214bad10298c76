"""Read ``.safetensors`` files by hand: the header is checked against the bytes present first.

The format: 8 bytes (little-endian u64) giving the header length, a UTF-8 JSON object
``{key: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``, then
the raw tensor bytes. The ``safetensors`` package would read it too, but it reports a
malformed file as a ``SafetensorError`` without the file's name; here every size is checked
(header length, dtype x shape against the byte range, ranges that overlap) and a bad file
is refused in one line naming it, the key, what was expected and what was found.
"""

from __future__ import annotations

import itertools
import json
import os
import struct
from typing import Any

import numpy as np

from kerasemote import storage
from kerasemote.lazy import LazyArray, read_aligned
from kerasemote.weights import WeightFileError

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


def bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    """Widen raw bfloat16 bits (uint16) to float32: they are a float32's top 16 bits."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


_SAFETENSORS_ITEMSIZE = {"BF16": 2, **{k: np.dtype(v).itemsize for k, v in _SAFETENSORS_DTYPES.items()}}
# A header is JSON text naming each tensor; real ones are a few hundred KB. The cap keeps a file
# that claims an 8 EB header (or a 1 GB one) from being read into memory as text.
MAX_SAFETENSORS_HEADER = 100 * 2**20


def _header_entry(source: str, key: str, entry: Any, data_size: int) -> tuple[int, int]:
    """Check one tensor's header entry against the bytes present; its (begin, end) offsets."""
    if not isinstance(entry, dict):
        raise WeightFileError(f"{source}: header key {key!r} expected an object, found {type(entry).__name__}.")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in _SAFETENSORS_ITEMSIZE:
        expected = sorted(_SAFETENSORS_ITEMSIZE)
        raise WeightFileError(f"{source}: key {key!r} dtype expected one of {expected}, found {dtype!r}.")
    if not _int_list(shape) or any(n < 0 for n in shape):
        raise WeightFileError(f"{source}: key {key!r} shape expected a list of sizes >= 0, found {shape!r}.")
    if not _int_list(offsets) or len(offsets) != 2 or not 0 <= offsets[0] <= offsets[1] <= data_size:
        raise WeightFileError(
            f"{source}: key {key!r} data_offsets expected [begin, end] within the {data_size} data bytes "
            f"present, found {offsets!r}."
        )
    needed = int(np.prod(shape, dtype=object)) * _SAFETENSORS_ITEMSIZE[dtype]
    if needed != offsets[1] - offsets[0]:
        raise WeightFileError(
            f"{source}: key {key!r} ({dtype} {tuple(shape)}) needs {needed} bytes but its data_offsets "
            f"span {offsets[1] - offsets[0]}."
        )
    return offsets[0], offsets[1]


def _int_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(n, int) and not isinstance(n, bool) for n in value)


def safetensors_header(filename: str, source: str | None = None) -> tuple[dict[str, Any], int]:
    """The checked JSON header of a local ``.safetensors`` file and where its data starts.

    Every size is checked against the bytes present before anything is allocated: the
    header length, each tensor's dtype x shape against its ``data_offsets``, and ranges
    that overlap. Nothing is trusted from the file until then.

    Args:
        filename: local path.
        source: the name used in errors (the user's path; default ``filename``).

    Returns:
        ``(header, data_start)``: key -> ``{"dtype", "shape", "data_offsets"}`` (plus
        ``"__metadata__"`` when present) and the byte offset of the data.

    Raises:
        WeightFileError: one line naming the file, the key, what was expected and what was found.
    """
    source = source or filename
    size = os.path.getsize(filename)
    with open(filename, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise WeightFileError(f"{source}: expected an 8-byte safetensors header length, found {size} bytes.")
        (length,) = struct.unpack("<Q", prefix)
        if length > min(size - 8, MAX_SAFETENSORS_HEADER):
            raise WeightFileError(
                f"{source}: header length {length} exceeds the {size - 8} bytes after it "
                f"(limit {MAX_SAFETENSORS_HEADER})."
            )
        raw = f.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WeightFileError(f"{source}: header expected UTF-8 JSON, found {type(err).__name__} ({err}).") from None
    if not isinstance(header, dict):
        raise WeightFileError(f"{source}: header expected a JSON object, found {type(header).__name__}.")
    metadata = header.get("__metadata__", {})
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise WeightFileError(f"{source}: __metadata__ expected an object of strings, found {metadata!r:.80}.")
    data_start = 8 + length
    spans = sorted(
        (_header_entry(source, key, entry, size - data_start), key)
        for key, entry in header.items()
        if key != "__metadata__"
    )
    for ((_, end), key), ((begin, _), next_key) in itertools.pairwise(spans):
        if begin < end:
            raise WeightFileError(
                f"{source}: keys {key!r} and {next_key!r} expected disjoint data, found overlapping byte ranges."
            )
    return header, data_start


def safetensors_metadata(path: storage.PathLike) -> dict[str, str]:
    """The ``__metadata__`` strings of a ``.safetensors`` file (``{}`` if none); tensors are not read."""
    source = storage._fspath(path)
    with storage.local_copy(source) as filename:
        return dict(safetensors_header(filename, source)[0].get("__metadata__", {}))


def read_safetensors(filename: str, source: str | None = None, lazy: bool = False) -> dict[str, Any]:
    """Every tensor of a local ``.safetensors`` file, after ``safetensors_header`` checked it.

    BF16 tensors, which NumPy has no dtype for, are widened to float32 from their raw bits.

    Args:
        filename: a local file.
        source: the name used in errors (the ``gs://`` object it was downloaded from).
        lazy: return ``LazyArray``s that read their tensor when NumPy asks for it (the
            file must stay in place until then), so a converter holds one tensor at a time.
    """
    header, data_start = safetensors_header(filename, source)
    arrays: dict[str, Any] = {}
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        bf16 = entry["dtype"] == "BF16"
        dtype = np.dtype("<u2" if bf16 else _SAFETENSORS_DTYPES[entry["dtype"]]).newbyteorder("<")

        def read(begin=begin, end=end, bf16=bf16, dtype=dtype, shape=entry["shape"], key=key) -> np.ndarray:
            with open(filename, "rb") as f:
                f.seek(data_start + begin)
                try:
                    flat = read_aligned(f, ((end - begin) // dtype.itemsize,), dtype)
                except EOFError as err:
                    raise WeightFileError(f"{source or filename}: key {key!r} is truncated ({err}).") from None
            return (bfloat16_to_float32(flat) if bf16 else flat).reshape(shape)

        arrays[key] = LazyArray(entry["shape"], np.float32 if bf16 else dtype, read) if lazy else read()
    return arrays
