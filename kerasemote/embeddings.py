"""Textual-inversion embeddings as NumPy files: save, read (checked, no pickle), apply to a model.

A textual-inversion run writes, in its output folder::

    embeddings.npz     every token: key "<happy>" -> float32 (num_vectors, dim); manifest inside
    embeddings.json    the manifest (below), also readable without NumPy
    happy.npy          one file per token: float32 (num_vectors, dim)
    sad.npy ...

The manifest::

    {"format": "kerasemote-embeddings", "version": 1, "dims": 768, "steps": 3000,
     "tokens": [{"token": "<happy>", "file": "happy.npy", "num_vectors": 1, "initializer": "face"}],
     "base_model": {"config": "sd-v1", "source": "sd-v1-5", "text_width": 768, ...}}

``load_embeddings(model, path)`` takes any of the three (the ``.npz``, one ``.npy``, the
``.json``) or the folder. A bare ``.npy`` with no manifest beside it is a "seed-style" file:
its token is ``<file stem>``. Rows must be floating point with ``dim == text_width``.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from kerasemote import storage, weights

logger = logging.getLogger(__name__)

FORMAT = "kerasemote-embeddings"
VERSION = 1
BUNDLE_FILE = "embeddings.npz"
MANIFEST_FILE = "embeddings.json"
# A learned token more than this many times its starting word's norm has usually wandered rather than
# learned (see word_norm); nearer ratios are ordinary training movement and get no warning. On
# kerasemote-tiny, three images at batch 8 and 2e-3 end near 1.55x and draw their concept; at batch 4
# and 5e-3 they end at 1.6-1.9x and draw plain blobs, so the line sits above the former.
WANDERED_RATIO = 1.75
# The largest magnitude a value of a concept file (embedding rows, LoRA factors) may have. CLIP's rows
# sit near 0.1 and trained ones stay below a few; 1e38 is finite in float32 yet overflows the text
# encoder's layer norm into NaN, and the images come out black.
MAX_ABS_VALUE = 1e3


def token_file_name(token: str) -> str:
    """``"<in-love>"`` -> ``"in-love.npy"`` (characters unsafe in file names become ``_``)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", token.strip("<>")).strip("._") or "token"
    return f"{stem}.npy"


def embeddings_manifest(
    model, tokens: Sequence[str], initializers: Mapping[str, Any] | None = None, steps: int = 0,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest of ``tokens`` as they are in ``model`` (see the module docstring)."""
    initializers = dict(initializers or {})
    names = [token_file_name(t) for t in tokens]
    if len(set(names)) != len(names):
        raise ValueError(f"Tokens {list(tokens)} give clashing file names {names}; rename the tokens.")
    entries = [
        {"token": t, "file": name, "num_vectors": len(model.tokenizer.placeholders[t]),
         "initializer": _jsonable(initializers.get(t)), "norms": row_norms(model.placeholder_rows(t)),
         "initializer_norm": word_norm(model, initializers.get(t))}
        for t, name in zip(tokens, names)
    ]
    return {"format": FORMAT, "version": VERSION, "dims": model.config.text_width, "steps": int(steps),
            "tokens": entries, "base_model": base_model_info(model), **dict(extra or {})}


def row_norms(rows) -> list[float]:
    """The L2 norm of each embedding row, rounded to 4 digits (for manifests and logs)."""
    rows = np.asarray(rows, "float32")
    return [round(float(n), 4) for n in np.linalg.norm(rows.reshape(-1, rows.shape[-1]), axis=-1)]


def word_norm(model, word: Any) -> float | None:
    """The L2 norm of a one-token word's vocabulary row; None for anything else.

    A learned token far above its initializer's norm (``WANDERED_RATIO``) has usually wandered
    rather than learned: with very few images, a small batch at a high learning rate gives Adam
    mostly noise to follow, and such a token tends to draw a plain average of its images.
    """
    if not isinstance(word, str):
        return None
    try:
        return row_norms(initializer_rows(model, word, word, 1))[0]
    except ValueError:  # not exactly one token
        return None


def norm_summary(model, tokens: Sequence[str], initializers: Mapping[str, Any] | None = None) -> str:
    """One log line: each token's row norms beside its starting word's, with a warning where it has wandered.

    A token whose largest row norm is more than ``WANDERED_RATIO`` times its word's gets the
    measured ratio and advice; a token near its word's scale gets none.

    Example:
        ``"<smile> norm 0.45 (from 'smile', 0.42)"``, or for a wandered token
        ``"<broccoli> norm 0.80 (from 'emoji', 0.42) is 1.9x its starting word's norm: it has likely
        wandered (try a larger batch or a lower learning rate)"``; tokens are joined by ``"; "``.
    """
    initializers = dict(initializers or {})
    parts = []
    for token in tokens:
        norms = row_norms(model.placeholder_rows(token))
        text = f"{token} norm {', '.join(f'{n:.2f}' for n in norms)}"
        start = word_norm(model, initializers.get(token))
        if start is not None:
            text += f" (from {initializers[token]!r}, {start:.2f})"
            ratio = max(norms) / start if start > 0 else float("inf")
            if ratio > WANDERED_RATIO:
                text += (f" is {ratio:.1f}x its starting word's norm: it has likely wandered "
                         "(try a larger batch or a lower learning rate)")
        parts.append(text)
    return "; ".join(parts)


def base_model_info(model) -> dict[str, Any]:
    """What a trained file records about its base model: config name, source and dims."""
    c = model.config
    return {"config": c.name, "source": str(getattr(model, "source", "")), "text_width": c.text_width,
            "unet_channels": list(c.unet_channels), "prediction_type": c.prediction_type}


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float)):
        return value
    return "array"


def save_embeddings(
    model, out_dir: str, tokens: Sequence[str], initializers: Mapping[str, Any] | None = None,
    steps: int = 0, extra: Mapping[str, Any] | None = None,
) -> list[str]:
    """Write ``embeddings.npz``, ``embeddings.json`` and one ``.npy`` per token; returns the paths.

    Args:
        model: the ``StableDiffusion`` holding the placeholder rows.
        out_dir: local, Drive or gs:// folder.
        tokens: the placeholders to save (e.g. ``["<happy>", "<sad>"]``).
        initializers: token -> the initializer word, for the record.
        steps: training steps done.
        extra: more JSON facts for the manifest.
    """
    manifest = embeddings_manifest(model, tokens, initializers, steps, extra)
    storage.makedirs(out_dir)
    rows = {t: model.placeholder_rows(t).astype("float32") for t in tokens}  # (n, dim) each
    paths = []
    for entry in manifest["tokens"]:
        path = storage.join(out_dir, entry["file"])
        weights.save_npy(path, rows[entry["token"]])
        paths.append(path)
    bundle = storage.join(out_dir, BUNDLE_FILE)
    weights.save_arrays(bundle, rows, manifest)
    manifest_path = storage.join(out_dir, MANIFEST_FILE)
    storage.write_bytes(manifest_path, (json.dumps(manifest, indent=2) + "\n").encode())
    return [bundle, manifest_path, *paths]


def read_embeddings(path: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Token -> float32 rows (num_vectors, dim), and the manifest (``{}`` for a seed-style file).

    Args:
        path: an ``embeddings.npz``, a token ``.npy``, an ``embeddings.json`` or a run folder.

    Raises:
        WeightFileError / ValueError: naming the file, the key, the expected and the found value.
    """
    if storage.isdir(path):
        path = storage.join(path, BUNDLE_FILE)
    if path.endswith(".json"):
        return _read_from_manifest(path)
    if path.endswith(".npy"):
        return _read_npy(path)
    arrays, manifest = weights.load_arrays(path)
    _check_manifest(path, manifest, arrays.keys())
    return {token: _rows(path, token, array) for token, array in arrays.items()}, manifest


def _read_json(path: str) -> Any:
    try:
        return json.loads(storage.read_bytes(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err}).") from None


def _read_from_manifest(path: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    manifest = _read_json(path)
    _check_manifest(path, manifest, None, required=True)
    folder = path[: -len(storage.basename(path))] or "."
    vectors = {}
    for i, entry in enumerate(manifest["tokens"]):
        # The manifest names its files; they must stay beside it (no absolute path, "..", or link out).
        file = storage.inside(folder, entry.get("file"), path, f"tokens[{i}].file")
        vectors[entry["token"]] = _rows(file, entry["token"], weights.load_npy(file))
    return vectors, manifest


def _read_npy(path: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    name = storage.basename(path)
    manifest_path = storage.join(path[: -len(name)] or ".", MANIFEST_FILE)
    manifest: dict[str, Any] = {}
    token = f"<{name[: -len('.npy')]}>"
    if storage.exists(manifest_path):
        candidate = _read_json(manifest_path)
        _check_manifest(manifest_path, candidate, None, required=True)
        entries = [e for e in candidate["tokens"] if e.get("file") == name]
        if entries:
            manifest, token = candidate, entries[0]["token"]
    rows = _rows(path, token, weights.load_npy(path))
    return {token: rows}, manifest


def _check_manifest(path: str, manifest: Any, keys: Iterable[str] | None, required: bool = False) -> None:
    """One line naming the file and the field for anything a reader below would trip on."""
    if not isinstance(manifest, dict):
        found = type(manifest).__name__
        raise weights.WeightFileError(f"{path}: expected a JSON object (the manifest), found {found}.")
    if not manifest and not required:
        return  # seed-style file: only shapes can be checked
    if manifest.get("format") != FORMAT:
        raise weights.WeightFileError(
            f"{path}: key 'format' expected {FORMAT!r}, found {manifest.get('format')!r}."
        )
    version = manifest.get("version", VERSION)
    if isinstance(version, bool) or not isinstance(version, int):
        raise weights.WeightFileError(f"{path}: key 'version' expected an integer, found {version!r}.")
    if version > VERSION:
        raise weights.WeightFileError(
            f"{path}: key 'version' expected <= {VERSION}, found {version}; upgrade kerasemote."
        )
    tokens = manifest.get("tokens")
    if not isinstance(tokens, list):
        raise weights.WeightFileError(f"{path}: key 'tokens' expected a list of token entries, found {tokens!r}.")
    for i, entry in enumerate(tokens):
        if not isinstance(entry, dict) or not isinstance(entry.get("token"), str) or not entry["token"].strip():
            found = entry.get("token") if isinstance(entry, dict) else entry
            raise weights.WeightFileError(f"{path}: key 'tokens[{i}].token' expected a token such as '<happy>', "
                                          f"found {found!r}.")
    listed = [e["token"] for e in tokens]
    if keys is not None and sorted(listed) != sorted(keys):
        raise weights.WeightFileError(
            f"{path}: manifest 'tokens' expected the file's keys {sorted(keys)}, found {sorted(listed)}."
        )


def check_values(path: str, key: str, array: np.ndarray, limit: float = MAX_ABS_VALUE) -> None:
    """Refuse NaN, inf and values beyond ``limit`` in magnitude.

    Such a value loads without complaint and turns every generated image black, so it is refused
    when the file is read.

    Raises:
        WeightFileError: one line naming the file, the key, the first bad value and its index.
    """
    bad = ~np.isfinite(array) | (np.abs(array) > limit)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise weights.WeightFileError(
            f"{path}: key {key!r} expected finite values within +-{limit:g}, found {float(array[index]):g} at index "
            f"{index}."
        )


def _rows(path: str, token: str, array: np.ndarray) -> np.ndarray:
    if array.dtype.kind != "f":
        raise weights.WeightFileError(f"{path}: key {token!r} expected a float dtype, found {array.dtype}.")
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2 or array.shape[0] < 1:
        raise weights.WeightFileError(
            f"{path}: key {token!r} expected shape (num_vectors >= 1, dim), found {array.shape}."
        )
    check_values(path, token, array)
    return array.astype("float32")


def check_compatible(path: str, vectors: Mapping[str, np.ndarray], manifest: Mapping[str, Any], model) -> None:
    """Every row's width must be the model's text width; another base config is only warned about."""
    width, most = model.config.text_width, model.config.max_length - 2  # a prompt's start and end take two
    for token, rows in vectors.items():
        if rows.shape[0] > most:
            raise weights.WeightFileError(
                f"{path}: key {token!r} expected at most {most} vectors (one prompt of {model.config.name!r}), "
                f"found {rows.shape[0]}."
            )
        if rows.shape[1] != width:
            raise weights.WeightFileError(
                f"{path}: key {token!r} expected shape ({rows.shape[0]}, {width}) for base model "
                f"{model.config.name!r}, found {rows.shape}."
            )
    base = manifest.get("base_model", {})
    if base.get("config") and base["config"] != model.config.name:
        logger.warning("%s was trained on %r; loading it into %r.", path, base["config"], model.config.name)


def add_placeholders(model, rows: Mapping[str, np.ndarray]) -> None:
    """Add several new placeholder tokens with their rows, rebuilding the text encoder once.

    Args:
        model: the ``StableDiffusion``.
        rows: token -> float32 (num_vectors, text_width).
    """
    if not rows:
        return
    current = model.placeholder_rows()
    for token, array in rows.items():
        model.tokenizer.add_placeholder(token, len(array))
    table = np.concatenate([current, *[np.asarray(a, "float32") for a in rows.values()]], axis=0)
    model.text_encoder = model.text_encoder.with_extra_tokens(table)


def initializer_rows(model, token: str, word: str | None, num_vectors: int) -> np.ndarray:
    """(num_vectors, text_width) rows copied from ``word``'s embedding (small noise if None).

    Raises:
        ValueError: ``word`` is not exactly one CLIP token.
    """
    width = model.config.text_width
    if word is None:
        return np.random.default_rng(0).normal(0.0, 0.02, (num_vectors, width)).astype("float32")
    ids = model.tokenizer.token_ids(word)
    if len(ids) != 1:
        raise ValueError(
            f"Initializer word {word!r} for {token!r} is {len(ids)} CLIP tokens {ids}; choose a word "
            "that is exactly one token (e.g. 'face', 'emoji', 'broccoli') with --init-token."
        )
    row = np.asarray(model.text_encoder.token_embedding.table()[ids[0]], "float32")
    return np.tile(row[None], (num_vectors, 1))


def load_embeddings(model, path_or_paths: str | Sequence[str]) -> list[str]:
    """Load textual-inversion files into ``model``; new tokens are added, known ones overwritten.

    Args:
        model: the ``StableDiffusion``.
        path_or_paths: one or more ``.npz`` / ``.npy`` / ``embeddings.json`` files or run folders.

    Returns:
        The tokens loaded, usable in prompts (``"a <happy> emoji"``).

    Example:
        >>> load_embeddings(model, "runs/emotions/embeddings.npz")
        ['<happy>', '<sad>']
    """
    paths = [path_or_paths] if isinstance(path_or_paths, str) else list(path_or_paths)
    loaded: list[str] = []
    for path in paths:
        vectors, manifest = read_embeddings(path)
        check_compatible(path, vectors, manifest, model)
        known = model.tokenizer.placeholders
        for token, rows in vectors.items():
            if token in known and len(known[token]) != len(rows):
                raise weights.WeightFileError(
                    f"{path}: key {token!r} expected {len(known[token])} vectors (the model's "
                    f"{token}), found {len(rows)}."
                )
        for token in [t for t in vectors if t in known]:
            model.set_placeholder_rows(token, vectors[token])
        try:
            add_placeholders(model, {t: r for t, r in vectors.items() if t not in known})
        except ValueError as error:  # the tokenizer refuses the token: name the file it came from
            raise weights.WeightFileError(f"{path}: {error}") from None
        loaded += list(vectors)
    return loaded
