"""Reference checkpoint keys <-> our variables: the layout table and the checked copy both ways.

A layout maps each diffusers / transformers key of one component to the part, variable
path and Keras shape it fills (computed from the ``ModelConfig`` through
``kerasemote.convert.naming``, so nothing is built). diffusers folders and original
single files both convert through it.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, NamedTuple

import numpy as np

from kerasemote.config import ModelConfig
from kerasemote.convert import naming
from kerasemote.lazy import LazyArray, aligned_copy, is_aligned
from kerasemote.weights import WeightFileError

# diffusers component folder -> our parts that its weights fill.
COMPONENTS: dict[str, tuple[str, ...]] = {
    "unet": ("unet",),
    "vae": ("vae_encoder", "vae_decoder"),
    "text_encoder": ("text_encoder",),
}
_MAX_LISTED = 10


class Entry(NamedTuple):
    """Where one reference tensor goes: our part, variable path and Keras shape."""

    part: str
    path: str
    shape: tuple[int, ...]


def diffusers_layout(config: ModelConfig, component: str) -> dict[str, Entry]:
    """diffusers / transformers key -> ``Entry`` for one component folder.

    Text encoder keys carry the ``text_model.`` prefix of published checkpoints.
    """
    layout = {}
    for part in COMPONENTS[component]:
        for path, shape in naming.variable_shapes(config, part).items():
            layout[naming.torch_key(path)] = Entry(part, path, shape)
    return layout


def listed_keys(keys: Iterable[str]) -> str:
    """The first keys, sorted and quoted, and how many there are in all: for error messages."""
    keys = sorted(keys)
    shown = ", ".join(repr(k) for k in keys[:_MAX_LISTED])
    return shown + (f" ... ({len(keys)} in all)" if len(keys) > _MAX_LISTED else "")


def _fits(shape: tuple[int, ...], want: tuple[int, ...]) -> bool:
    """Whether an array of ``shape`` holds the reference shape ``want``; 1x1 convs stand in for Linear."""
    shape = tuple(shape)
    if shape == want:
        return True
    if len(want) == 2 and len(shape) in (3, 4) and shape[2:] == (1,) * (len(shape) - 2):
        return shape[:2] == want
    return len(want) == 4 and len(shape) == 2 and want[2:] == (1, 1) and shape == want[:2]


def _converted(value: object, want: tuple[int, ...], entry: Entry, dtype: str) -> np.ndarray:
    """One reference tensor in our layout, as an aligned C-ordered array of ``dtype``.

    A ``LazyArray``'s read is fresh, so a tensor whose layout and dtype already match (embeddings,
    biases) is returned as read; anything else is copied once.
    """
    fresh = isinstance(value, LazyArray)
    array = naming.to_keras(entry.path, np.asarray(value).reshape(want), entry.shape)
    if fresh and array.dtype == dtype and is_aligned(array):
        return array
    return aligned_copy(array, dtype)


def arrays_from_state(
    state: dict[str, np.ndarray],
    layout: Mapping[str, Entry],
    source: str,
    dtype: str = "float32",
    release: bool = False,
    lazy: bool = False,
) -> dict[str, dict[str, np.ndarray]]:
    """Check every key and shape of a reference state dict, then convert to our layout.

    Args:
        state: reference key -> array (PyTorch layout).
        layout: reference key -> ``Entry`` (from ``diffusers_layout``...).
        source: the file the state came from, named in errors.
        dtype: dtype of the returned arrays.
        release: pop each array from ``state`` once converted, so a full-size
            checkpoint is never held twice (the caller must own ``state``).
        lazy: return ``LazyArray``s that read and convert their tensor when NumPy asks
            for it; with a lazy ``state`` (``torchfile.load_state_dict(lazy=True)``) a model then
            loads one tensor at a time.

    Returns:
        ``{part: {variable_path: array}}`` in Keras layout.

    Raises:
        WeightFileError: listing missing keys, unexpected keys and wrong shapes;
            nothing is converted unless every check passes.
    """
    problems = []
    missing, unexpected = set(layout) - set(state), set(state) - set(layout)
    if missing:
        problems.append(f"{source}: missing keys {listed_keys(missing)}.")
    if unexpected:
        problems.append(f"{source}: unexpected keys {listed_keys(unexpected)}.")
    wanted = {}
    for key in sorted(set(layout) & set(state)):
        wanted[key] = naming.torch_shape(layout[key].path, layout[key].shape)
        if not _fits(np.shape(state[key]), wanted[key]):  # np.shape reads no LazyArray
            problems.append(f"{source}: key {key!r} expected shape {wanted[key]}, found {tuple(np.shape(state[key]))}.")
    if problems:
        raise WeightFileError("\n".join(problems[: 2 + _MAX_LISTED]))
    out: dict[str, dict[str, np.ndarray]] = {}
    for key, want in wanted.items():
        entry = layout[key]
        value = state.pop(key) if release else state[key]
        if lazy:
            converted = LazyArray(entry.shape, dtype, lambda v=value, w=want, e=entry: _converted(v, w, e, dtype))
        else:
            converted = _converted(value, want, entry, dtype)
        out.setdefault(entry.part, {})[entry.path] = converted
    return out


def state_from_arrays(
    arrays: Mapping[str, Mapping[str, np.ndarray]],
    layout: Mapping[str, Entry],
    source: str,
    dtype: str = "float32",
) -> dict[str, np.ndarray]:
    """Inverse of ``arrays_from_state``: our parts -> reference key -> array (PyTorch layout).

    Every variable the layout names must be present with its shape; any other
    variable of those parts (e.g. placeholder ``extra_embeddings``) is an error,
    since a reference checkpoint has nowhere to keep it.
    """
    parts = {entry.part for entry in layout.values()}
    given = {path: value for part in parts for path, value in arrays.get(part, {}).items()}
    by_path = {entry.path: (key, entry) for key, entry in layout.items()}
    problems = []
    missing, unexpected = set(by_path) - set(given), set(given) - set(by_path)
    if missing:
        problems.append(f"{source}: missing variables {listed_keys(missing)}.")
    if unexpected:
        problems.append(
            f"{source}: variables with no place in the checkpoint {listed_keys(unexpected)} "
            "(placeholder token rows are saved separately, as an embedding file)."
        )
    state = {}
    for path in sorted(set(by_path) & set(given)):
        key, entry = by_path[path]
        value = np.asarray(given[path])
        if tuple(value.shape) != tuple(entry.shape):
            problems.append(f"{source}: variable {path!r} expected shape {entry.shape}, found {value.shape}.")
            continue
        state[key] = np.array(naming.to_torch(path, value), dtype=dtype, order="C")
    if problems:
        raise WeightFileError("\n".join(problems[: 2 + _MAX_LISTED]))
    return state


def part_arrays(parts: Mapping[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    """``{part: arrays or built Keras model}`` -> ``{part: {variable_path: array}}``.

    A model's paths are re-rooted at the part name, so a UNet named ``"my_unet"``
    exports like one named ``"unet"``.
    """
    from kerasemote.weights import model_arrays

    out = {}
    for part, value in parts.items():
        if part not in naming.PARTS:
            raise ValueError(f"Unknown part {part!r}; expected some of {naming.PARTS}.")
        if hasattr(value, "weights"):
            value = {part + "/" + path.split("/", 1)[1]: a for path, a in model_arrays(value).items()}
        out[part] = dict(value)
    return out

