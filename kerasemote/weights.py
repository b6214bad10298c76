"""NumPy weight files: ``.npz`` bundles with a JSON manifest, single-array ``.npy``.

These are the files users keep and share (a learned ``<broccoli>`` embedding, LoRA
weights, a converted UNet), so reading them treats them as untrusted: no pickle,
and every key, shape and dtype is checked with an error naming the file, the key,
the expected and the found value.

Format of the ``.npz`` (a plain zip, readable with ``np.load(path)``):

* one member per array, named by its key; keys are Keras variable paths such as
  ``"unet/down_blocks.0/attn/to_q/kernel"``. ``/`` is kept as is in the member name
  and ``np.load`` gives the key back unchanged;
* the manifest (a JSON object: model config, tokenizer placeholders, step...) is
  stored **inside** the file as UTF-8 bytes in a ``uint8`` array under the reserved
  key ``"__manifest__"``. One file means one atomic write: the manifest can never
  disagree with the arrays beside it.

All reads and writes go through :mod:`kerasemote.storage`, so local, Drive and
``gs://`` paths work and writes are atomic.
"""

from __future__ import annotations

import contextlib
import json
import os
import zipfile
from typing import Any, Iterable, Iterator, Mapping, NamedTuple, Sequence

import numpy as np

from kerasemote import storage
from kerasemote.lazy import LazyArray, read_aligned, release_memory, to_tensor

MANIFEST_KEY = "__manifest__"
# The dtypes a saved model, LoRA or embedding file may store; float16 halves the file and loads back as float32.
SAVE_DTYPES = ("float32", "float16")
_MAX_LISTED = 10
# bool, signed/unsigned int, float, complex: everything a weight can be, nothing pickled.
_NUMERIC_KINDS = "biufc"
# Assigning a tensor of at least this many elements hands the freed old storage back to the system at once.
_TRIM_ELEMENTS = 2**18

Shape = Sequence[int | None]


class WeightFileError(ValueError):
    """A weight file is unreadable or does not hold what the caller expects."""


class AssignResult(NamedTuple):
    """What ``assign_arrays`` did: keys assigned, model keys left alone, file keys ignored."""

    assigned: list[str]
    missing: list[str]
    unexpected: list[str]


# ---------------------------------------------------------------------- .npz


def save_arrays(
    path: storage.PathLike,
    arrays: Mapping[str, Any],
    manifest: Mapping[str, Any] | None = None,
) -> None:
    """Write ``arrays`` (and a JSON manifest) to an ``.npz``, atomically.

    Args:
        path: local, Drive or ``gs://`` path; ``.npz`` is conventional, not enforced.
        arrays: key (e.g. a Keras variable path) -> array-like of a numeric dtype.
        manifest: JSON-able dict stored in the file under ``"__manifest__"``.

    Raises:
        ValueError: empty or reserved key, non-numeric (object, string) array,
            or a manifest that JSON cannot encode.
    """
    target = storage._fspath(path)
    checked = {key: _numeric_array(value, target, key) for key, value in arrays.items()}
    for key in checked:
        if not isinstance(key, str) or not key:
            raise ValueError(f"{target}: array keys must be non-empty strings, got {key!r}.")
        if key == MANIFEST_KEY:
            raise ValueError(f"{target}: key {MANIFEST_KEY!r} is reserved for the manifest.")
    if manifest is not None:
        checked[MANIFEST_KEY] = _manifest_array(manifest, target)
    with storage.local_output(target) as tmp:
        # Written member by member (what np.savez does) so huge weights are never
        # duplicated in memory, and allow_pickle=False refuses object arrays.
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for key, array in checked.items():
                with zf.open(key + ".npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)


def _manifest_array(manifest: Mapping[str, Any], target: str) -> np.ndarray:
    try:
        text = json.dumps(dict(manifest), sort_keys=True)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{target}: manifest is not JSON-serializable ({err}).") from None
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)


def _numeric_array(value: Any, source: str, key: str) -> np.ndarray:
    array = value if isinstance(value, LazyArray) else np.asarray(value)  # a LazyArray is read when written
    if array.dtype.kind not in _NUMERIC_KINDS:
        raise WeightFileError(
            f"{source}: key {key!r} expected a numeric dtype (bool/int/float), found {array.dtype}."
        )
    return array


def load_arrays(
    path: storage.PathLike,
    expected: Mapping[str, Shape] | None = None,
    dtype_check: bool = True,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read an ``.npz`` written by ``save_arrays`` (or ``np.savez``), without pickle.

    Args:
        path: local, Drive or ``gs://`` path.
        expected: key -> shape; when given, the file must hold exactly these keys
            with these shapes (``None`` on an axis accepts any size).
        dtype_check: reject arrays whose dtype is not bool/int/float/complex.

    Returns:
        ``(arrays, manifest)``; the manifest is ``{}`` when the file has none.

    Raises:
        FileNotFoundError: no file at ``path``.
        WeightFileError: not an ``.npz``, pickled/object arrays, unreadable manifest,
            missing or unexpected keys, wrong shapes; the message lists every problem.
    """
    source = storage._fspath(path)
    with storage.local_copy(source) as filename:
        npz = _open_npz(filename, source)
        with npz:
            arrays = {key: _read_member(npz, key, source) for key in npz.files}
    manifest = _parse_manifest(arrays.pop(MANIFEST_KEY, None), source)
    if dtype_check:
        for key, array in arrays.items():
            _numeric_array(array, source, key)
    if expected is not None:
        problems = _key_problems(source, expected.keys(), arrays.keys())
        problems += _shape_problems(source, expected, arrays)
        if problems:
            raise WeightFileError("\n".join(problems))
    return arrays, manifest


def read_manifest(path: storage.PathLike) -> dict[str, Any]:
    """Only the manifest of an ``.npz`` (``{}`` if it has none); arrays are not loaded."""
    source = storage._fspath(path)
    with storage.local_copy(source) as filename, _open_npz(filename, source) as npz:
        raw = _read_member(npz, MANIFEST_KEY, source) if MANIFEST_KEY in npz.files else None
    return _parse_manifest(raw, source)


# What numpy's readers raise on a damaged, empty or truncated file (EOFError for zero bytes).
_UNREADABLE = (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError, UnicodeDecodeError, SyntaxError)


def _open_npz(filename: str, source: str) -> Any:
    try:
        npz = np.load(filename, allow_pickle=False)
    except _UNREADABLE as err:
        raise WeightFileError(f"{source}: not a readable .npz file ({type(err).__name__}: {err}).") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise WeightFileError(f"{source}: expected an .npz archive, found a single .npy array.")
    return npz


def _check_npy_header(f: Any, present: int, source: str, key: str) -> tuple[tuple[int, ...], np.dtype, bool]:
    """Refuse an array whose header asks for more bytes than follow it, before numpy allocates them.

    ``f`` is at the start of a ``.npy`` stream (a file or an ``.npz`` member) of ``present`` bytes.

    Returns:
        The array's shape, dtype and whether it is stored in Fortran order, as its header gives them.
    """
    try:
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0
        if version != (1, 0):
            read_header = np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(f)
    except _UNREADABLE as err:
        raise WeightFileError(f"{source}: key {key!r} has no readable .npy header ({err}).") from None
    if dtype.hasobject:
        return shape, dtype, fortran_order  # refused by np.load(allow_pickle=False), with its own message
    needed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if needed > present - f.tell():
        raise WeightFileError(
            f"{source}: key {key!r} (shape {shape}, {dtype}) needs {needed} bytes but the file holds "
            f"{max(present - f.tell(), 0)}."
        )
    return shape, dtype, fortran_order


@contextlib.contextmanager
def lazy_arrays(path: storage.PathLike) -> Iterator[tuple[dict[str, LazyArray], dict[str, Any]]]:
    """``load_arrays`` as ``LazyArray``s, readable inside the block: ``assign_arrays`` then holds one at a time.

    Every member's header (shape, dtype, byte count) is checked on entry; its data when read.
    """
    source = storage._fspath(path)
    with storage.local_copy(source) as filename, _open_npz(filename, source) as npz:
        arrays = {}
        for key in npz.files:
            if key == MANIFEST_KEY:
                continue
            member = key if key in npz.zip.NameToInfo else key + ".npy"
            with npz.zip.open(member) as f:
                shape, dtype, _ = _check_npy_header(f, npz.zip.getinfo(member).file_size, source, key)
            if dtype.kind not in _NUMERIC_KINDS:
                raise WeightFileError(f"{source}: key {key!r} expected a numeric dtype (bool/int/float), found {dtype}.")
            arrays[key] = LazyArray(shape, dtype, lambda key=key: _read_member(npz, key, source))
        raw = _read_member(npz, MANIFEST_KEY, source) if MANIFEST_KEY in npz.files else None
        yield arrays, _parse_manifest(raw, source)


def _read_member(npz: Any, key: str, source: str) -> np.ndarray:
    member = key if key in npz.zip.NameToInfo else key + ".npy"
    try:
        with npz.zip.open(member) as f:
            shape, dtype, fortran_order = _check_npy_header(f, npz.zip.getinfo(member).file_size, source, key)
            if not dtype.hasobject and not fortran_order:
                return read_aligned(f, shape, dtype)  # what TensorFlow takes without a copy
        return npz[key]
    except WeightFileError:
        raise
    except _UNREADABLE as err:  # e.g. "Object arrays cannot be loaded when allow_pickle=False"
        message = f"{source}: key {key!r} cannot be loaded without pickle ({type(err).__name__}: {err})."
        raise WeightFileError(message) from None


def _parse_manifest(raw: np.ndarray | None, source: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise WeightFileError(
            f"{source}: key {MANIFEST_KEY!r} expected a 1-D uint8 array of JSON, "
            f"found {raw.dtype} with shape {raw.shape}."
        )
    try:
        manifest = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WeightFileError(f"{source}: manifest is not valid UTF-8 JSON ({err}).") from None
    if not isinstance(manifest, dict):
        found = type(manifest).__name__
        raise WeightFileError(f"{source}: manifest expected a JSON object, found {found}.")
    return manifest


def _listed(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(repr(k) for k in keys[:_MAX_LISTED])
    more = f" ... and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else ""
    return f"{len(keys)}: {shown}{more}"


def _key_problems(source: str, wanted: Iterable[str], found: Iterable[str]) -> list[str]:
    wanted, found = set(wanted), set(found)
    problems = []
    if wanted - found:
        problems.append(f"{source}: missing keys ({_listed(wanted - found)}).")
    if found - wanted:
        problems.append(f"{source}: unexpected keys ({_listed(found - wanted)}).")
    return problems


def _shape_matches(expected: Shape, found: tuple[int, ...]) -> bool:
    return len(expected) == len(found) and all(e is None or e == f for e, f in zip(expected, found))


def _shape_problems(
    source: str, expected: Mapping[str, Shape], arrays: Mapping[str, np.ndarray]
) -> list[str]:
    bad = [
        f"{source}: key {key!r} expected shape {tuple(shape)}, found {arrays[key].shape}."
        for key, shape in expected.items()
        if key in arrays and not _shape_matches(tuple(shape), arrays[key].shape)
    ]
    if len(bad) > _MAX_LISTED:
        bad = bad[:_MAX_LISTED] + [f"{source}: ... and {len(bad) - _MAX_LISTED} more wrong shapes."]
    return bad


# ---------------------------------------------------------------------- .npy


def save_npy(path: storage.PathLike, array: Any) -> None:
    """Write one numeric array to a ``.npy`` file, atomically and without pickle."""
    target = storage._fspath(path)
    checked = _numeric_array(array, target, "<array>")
    with storage.local_output(target) as tmp, open(tmp, "wb") as f:
        np.lib.format.write_array(f, checked, allow_pickle=False)


def load_npy(path: storage.PathLike, expected_shape: Shape | None = None) -> np.ndarray:
    """Read one ``.npy`` array without pickle.

    Args:
        path: local, Drive or ``gs://`` path.
        expected_shape: required shape; ``None`` on an axis accepts any size.

    Raises:
        WeightFileError: not a ``.npy``, object/non-numeric dtype or wrong shape.
    """
    source = storage._fspath(path)
    with storage.local_copy(source) as filename:
        with open(filename, "rb") as f:
            if f.read(6) == b"\x93NUMPY":
                f.seek(0)
                _check_npy_header(f, os.path.getsize(filename), source, "<array>")
        try:
            loaded = np.load(filename, allow_pickle=False)
        except _UNREADABLE as err:
            message = f"{source}: not a readable .npy file without pickle ({type(err).__name__}: {err})."
            raise WeightFileError(message) from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        loaded.close()
        raise WeightFileError(f"{source}: expected a single .npy array, found an .npz archive.")
    array = _numeric_array(loaded, source, "<array>")
    if expected_shape is not None and not _shape_matches(tuple(expected_shape), array.shape):
        raise WeightFileError(f"{source}: expected shape {tuple(expected_shape)}, found {array.shape}.")
    return array


# ---------------------------------------------------------------------- Keras models


def _variables_by_path(model: Any) -> dict[str, Any]:
    variables = list(model.weights)
    if not variables:
        raise ValueError(
            f"{getattr(model, 'name', model)!r} has no variables yet; "
            "build it (call it on a batch) first."
        )
    by_path: dict[str, Any] = {}
    duplicates = set()
    for variable in variables:
        if variable.path in by_path and by_path[variable.path] is not variable:
            duplicates.add(variable.path)
        by_path[variable.path] = variable
    if duplicates:
        raise ValueError(
            f"{model.name!r} has several variables with the same path ({_listed(duplicates)}); "
            "give its sublayers unique names."
        )
    return by_path


def model_arrays(model: Any) -> dict[str, np.ndarray]:
    """Every variable of a built Keras model or layer as NumPy, keyed by ``variable.path``.

    Trainable and non-trainable variables (e.g. BatchNorm statistics) are included.
    """
    import keras

    return {path: keras.ops.convert_to_numpy(v) for path, v in _variables_by_path(model).items()}


def lazy_model_arrays(model: Any, dtype: str) -> dict[str, LazyArray]:
    """``model_arrays`` as ``dtype``, each read from its variable when written (``save_arrays``)."""
    import keras

    return {path: LazyArray(v.shape, dtype, lambda v=v: keras.ops.convert_to_numpy(v).astype(dtype))
            for path, v in _variables_by_path(model).items()}


def assign_arrays(
    model: Any,
    arrays: Mapping[str, Any],
    source_name: str,
    strict: bool = True,
) -> AssignResult:
    """Check every key and shape, then assign ``arrays`` to the model's variables.

    Nothing is assigned unless every check passes. Floating arrays are cast to the
    variable's dtype (a float16 file loads into float32 variables); other dtype
    kinds must match.

    Args:
        model: a built Keras model or layer.
        arrays: ``variable.path`` -> array (e.g. from ``load_arrays``).
        source_name: the file the arrays came from, named in errors.
        strict: if True, missing and unexpected keys are errors; if False, only the
            keys present in both are assigned (shapes are always checked).

    Returns:
        ``AssignResult(assigned, missing, unexpected)``, each a sorted key list.

    Raises:
        WeightFileError: naming ``source_name``, listing up to 10 missing keys,
            unexpected keys and wrong shapes/dtypes.
    """
    variables = _variables_by_path(model)
    missing = sorted(set(variables) - set(arrays))
    unexpected = sorted(set(arrays) - set(variables))
    problems = _key_problems(source_name, variables, arrays) if strict else []
    common = sorted(set(variables) & set(arrays))
    expected_shapes = {key: tuple(variables[key].shape) for key in common}
    # Shapes and dtypes are checked without reading a LazyArray: its data is read when assigned.
    found = {key: _shaped(arrays[key]) for key in common}
    problems += _shape_problems(source_name, expected_shapes, found)
    problems += _dtype_problems(source_name, variables, found)
    if problems:
        raise WeightFileError("\n".join(problems))
    for key in common:
        value = found.pop(key)
        variables[key].assign(to_tensor(value, variables[key].dtype))  # one array in memory at a time
        if int(np.prod(value.shape, dtype=np.int64)) >= _TRIM_ELEMENTS:
            release_memory()  # the variable's old storage, freed by the assign
    return AssignResult(assigned=common, missing=missing, unexpected=unexpected)


def _shaped(value: Any) -> Any:
    """``value`` if it has a shape and a dtype (an array, a tensor, a ``LazyArray``), else as a NumPy array."""
    return value if hasattr(value, "shape") and hasattr(value, "dtype") else np.asarray(value)


def _dtype_kind(dtype: Any) -> str:
    name = str(getattr(dtype, "name", dtype))
    return "f" if "float" in name else np.dtype(name).kind  # bfloat16 is no NumPy name


def _dtype_problems(
    source: str, variables: Mapping[str, Any], found: Mapping[str, np.ndarray]
) -> list[str]:
    problems = []
    for key, array in found.items():
        want = variables[key].dtype
        if _dtype_kind(array.dtype) != _dtype_kind(want):
            problems.append(f"{source}: key {key!r} expected dtype {want}, found {array.dtype}.")
    return problems[:_MAX_LISTED]
