"""keras-cv's published SD 1.4 weights (legacy Keras ``.h5`` files) -> our variable paths.

keras-cv 0.9.0 publishes Stable Diffusion 1.4 as four files, one per part (see
``KERASCV_FILES``). They are Keras-2 style HDF5 weight files: the root attribute
``layer_names`` lists the model's top-level layers, and each layer's group lists its
arrays in the attribute ``weight_names``. Keras' loader for that format matches
layers *by order*, never by name, so this converter does the same: for each part,
``kerascv_layout`` (in ``kerasemote.convert.kerascv_layout``) lists keras-cv's weighted
layers in model order, and for each the paths and shapes of our variables that receive
its arrays, in that layer's weight order. The order was derived from keras-cv 0.9.0's source (``text_encoder.py``,
``diffusion_model.py``, ``decoder.py``, ``image_encoder.py``):

* a layer's weights are its own variables, then its sublayers' in the order they are
  assigned as attributes; ``ResBlock`` / ``ResnetBlock`` create their 1x1
  ``residual_projection`` in ``build()``, so it comes last, and only when the input
  and output widths differ;
* the functional ``DiffusionModel`` orders its layers by graph depth: the first
  timestep Dense, then ``conv_in``, then the second timestep Dense, then the blocks
  in creation order;
* the VAE attention's q/k/v/out projections are 1x1 convolutions there and Dense
  layers here (the same linear map; the kernel is reshaped).

Every array is shape-checked; errors name the file, the layer (index, name in the
file, keras-cv class, our path) and the expected and found shapes. Files are read with
h5py only (keras-cv is never imported) through ``storage.local_copy``, so ``gs://``
paths work.

A model loaded from these weights must use ``KERASCV_CONFIG``: keras-cv computes GEGLU
with the tanh-approximate GELU and uses GroupNorm epsilon 1e-5 in the VAE and in front
of the spatial transformers (the original SD uses erf GELU and 1e-6).

Example:
    >>> arrays = load_kerascv_weights("/content/drive/MyDrive/kcv")  # doctest: +SKIP
    >>> unet = UNet(KERASCV_CONFIG).build_with_dummy()  # doctest: +SKIP
    >>> weights.assign_arrays(unet, arrays["unet"], "kcv_diffusion_model.h5")  # doctest: +SKIP
"""

from __future__ import annotations

import os
from typing import Mapping, NamedTuple, Sequence

import numpy as np

from kerasemote import storage
from kerasemote.config import ModelConfig
from kerasemote.convert.kerascv_layout import KERASCV_CONFIG, KERASCV_FILES, PARTS, Shape, kerascv_layout
from kerasemote.weights import WeightFileError


class LegacyLayer(NamedTuple):
    """One layer group of a legacy ``.h5`` file that holds weights."""

    name: str
    weight_names: list[str]
    arrays: list[np.ndarray]



# ---------------------------------------------------------------------- reading


def _attr_strings(group, name: str) -> list[str]:
    """A list-of-strings attribute, joined when Keras split it into ``name0``, ``name1``..."""
    if name in group.attrs:
        values = list(group.attrs[name])
    else:
        values, chunk = [], 0
        while f"{name}{chunk}" in group.attrs:
            values += list(group.attrs[f"{name}{chunk}"])
            chunk += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def _read_layer(group, source: str, name: str) -> LegacyLayer | None:
    import h5py

    if name not in group:
        raise WeightFileError(f"{source}: layer {name!r} is listed in 'layer_names' but has no group.")
    layer = group[name]
    weight_names = _attr_strings(layer, "weight_names")
    arrays = []
    for weight_name in weight_names:
        dataset = layer.get(weight_name)
        if not isinstance(dataset, h5py.Dataset):
            raise WeightFileError(
                f"{source}: layer {name!r} lists weight {weight_name!r} in 'weight_names' "
                "but holds no such dataset."
            )
        _check_stored(dataset, source, name, weight_name)
        try:
            array = np.asarray(dataset[()])
        except OSError as err:  # a damaged chunk
            raise WeightFileError(f"{source}: layer {name!r} weight {weight_name!r} is unreadable ({err}).") from None
        if array.dtype.kind != "f":
            raise WeightFileError(
                f"{source}: layer {name!r} weight {weight_name!r} expected a float array, "
                f"found dtype {array.dtype}."
            )
        arrays.append(array)
    return LegacyLayer(name, weight_names, arrays) if arrays else None


# An HDF5 dataset may declare any shape and store nothing (its fill value stands in), or store
# compressed chunks; one that inflates more than this over its stored bytes is refused unread.
_MAX_INFLATE = 16
_SMALL_DATASET = 2**20


def _check_stored(dataset, source: str, name: str, weight_name: str) -> None:
    stored = dataset.id.get_storage_size()
    if dataset.nbytes > max(_MAX_INFLATE * stored, _SMALL_DATASET):
        raise WeightFileError(
            f"{source}: layer {name!r} weight {weight_name!r} (shape {dataset.shape}) needs {dataset.nbytes} "
            f"bytes but the file stores {stored} for it."
        )


def read_legacy_h5(path: storage.PathLike) -> list[LegacyLayer]:
    """The weighted layers of a legacy Keras ``.h5`` weight file, in file order.

    Layers without weights (inputs, rescaling, activations) are skipped, as Keras'
    order-based loader skips them. A full-model file's ``model_weights`` group is used.

    Args:
        path: local, Drive or ``gs://`` path of the ``.h5`` file.

    Returns:
        ``LegacyLayer(name, weight_names, arrays)`` for each layer with weights.

    Raises:
        WeightFileError: the file is not a legacy Keras weight file, or lists missing data.
    """
    import h5py

    source = os.fspath(path)
    with storage.local_copy(path) as filename:
        try:
            handle = h5py.File(filename, "r")
        except OSError as err:
            raise WeightFileError(f"{source}: not a readable HDF5 file ({err}).") from None
        with handle as f:
            group = f
            if "layer_names" not in f.attrs and "layer_names0" not in f.attrs and "model_weights" in f:
                group = f["model_weights"]
            names = _attr_strings(group, "layer_names")
            if not names:
                raise WeightFileError(
                    f"{source}: expected a legacy Keras weight file (root attribute 'layer_names'), "
                    f"found attributes {sorted(group.attrs)} and groups {sorted(group)[:10]}."
                )
            layers = [_read_layer(group, source, name) for name in names]
    return [layer for layer in layers if layer is not None]


def _fit(array: np.ndarray, shape: Shape) -> np.ndarray | None:
    """``array`` in our variable's shape, or None if it cannot be (a 1x1 conv kernel fits a Dense)."""
    if array.shape == shape:
        return array
    if array.ndim == 4 and array.shape[:2] == (1, 1) and array.shape[2:] == shape:
        return array.reshape(shape)  # (1, 1, in, out) -> (in, out)
    return None


def convert_kerascv_file(
    path: storage.PathLike, part: str, config: ModelConfig = KERASCV_CONFIG
) -> dict[str, np.ndarray]:
    """Read one keras-cv ``.h5`` file into arrays keyed by our variable paths.

    Args:
        path: the file (e.g. ``kcv_diffusion_model.h5``); local, Drive or ``gs://``.
        part: which part it holds: ``text_encoder``, ``unet``, ``vae_encoder``, ``vae_decoder``.
        config: sizes of the part (``KERASCV_CONFIG`` for keras-cv's published files).

    Returns:
        ``{our variable path: float array in our layout}``, every variable of the part.

    Raises:
        WeightFileError: a layer count, weight count or shape differs from keras-cv's
            architecture; the message names the file, the layer and both values.
    """
    source = os.fspath(path)
    layout = kerascv_layout(part, config)
    layers = read_legacy_h5(path)
    if len(layers) != len(layout):
        raise WeightFileError(
            f"{source}: expected {len(layout)} layers with weights (keras-cv's {part}), found {len(layers)} "
            f"(first: {[layer.name for layer in layers[:3]]}). Is this the right file for the {part}?"
        )
    arrays: dict[str, np.ndarray] = {}
    for index, (spec, layer) in enumerate(zip(layout, layers)):
        where = f"{source}: layer #{index} {layer.name!r} (keras-cv {spec.kind} -> {spec.scope})"
        if len(layer.arrays) != len(spec.weights):
            raise WeightFileError(
                f"{where}: expected {len(spec.weights)} weights, "
                f"found {len(layer.arrays)} {layer.weight_names}."
            )
        for (key, shape), weight_name, array in zip(spec.weights, layer.weight_names, layer.arrays):
            fitted = _fit(array, shape)
            if fitted is None:
                raise WeightFileError(
                    f"{where}: weight {weight_name!r} for {key!r} expected shape {shape}, "
                    f"found {array.shape}."
                )
            arrays[key] = fitted
    return arrays


def _file_paths(src: storage.PathLike | Mapping[str, storage.PathLike]) -> tuple[dict[str, str], list[str]]:
    """(part -> existing file, names of published files not found)."""
    if isinstance(src, Mapping):
        unknown = sorted(set(src) - set(PARTS))
        if unknown:
            raise ValueError(f"Unknown parts {unknown}; expected some of {PARTS}.")
        return {part: os.fspath(path) for part, path in src.items()}, []
    folder = os.fspath(src)
    if not storage.isdir(folder):
        raise FileNotFoundError(
            f"{folder}: expected a folder holding keras-cv's files "
            f"({', '.join(name for name, _, _ in KERASCV_FILES.values())})."
        )
    found, missing = {}, []
    for part, (filename, _, _) in KERASCV_FILES.items():
        path = storage.join(folder, filename)
        if storage.exists(path):
            found[part] = path
        else:
            missing.append(filename)
    return found, missing


def load_kerascv_weights(
    src: storage.PathLike | Mapping[str, storage.PathLike],
    parts: Sequence[str] | None = None,
    require_all: bool = False,
    config: ModelConfig = KERASCV_CONFIG,
) -> dict[str, dict[str, np.ndarray]]:
    """Convert keras-cv's published ``.h5`` files into arrays for our parts.

    Args:
        src: a folder (local, Drive or ``gs://``) holding any of the published files
            by their published names (``KERASCV_FILES``), or ``{part: file path}``.
        parts: convert only these parts (default: every part whose file exists).
        require_all: raise if any of the four files (or of ``parts``) is missing.
        config: sizes of the parts (``KERASCV_CONFIG``).

    Returns:
        ``{part: {our variable path: array}}`` for ``text_encoder``, ``unet``,
        ``vae_encoder``, ``vae_decoder`` (those found), ready for
        ``weights.assign_arrays(model, arrays[part], ...)``.

    Raises:
        FileNotFoundError: no file found, or a required file missing (named, with its URL).
        WeightFileError: a file does not match keras-cv's architecture (see
            ``convert_kerascv_file``).
    """
    found, missing = _file_paths(src)
    wanted = PARTS if parts is None else tuple(parts)
    unknown = sorted(set(wanted) - set(PARTS))
    if unknown:
        raise ValueError(f"Unknown parts {unknown}; expected some of {PARTS}.")
    where = "keras-cv files" if isinstance(src, Mapping) else os.fspath(src)
    required = PARTS if require_all else (wanted if parts is not None else ())
    absent = [part for part in required if part not in found]
    if absent:
        listed = "; ".join(f"{KERASCV_FILES[p][0]} for the {p} ({KERASCV_FILES[p][1]})" for p in absent)
        raise FileNotFoundError(f"{where}: missing {listed}.")
    present = [part for part in wanted if part in found]
    if not present:
        raise FileNotFoundError(f"{where}: none of keras-cv's files found; looked for {missing}.")
    return {part: convert_kerascv_file(found[part], part, config) for part in present}
