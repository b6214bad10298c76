"""Textual-inversion embeddings <-> diffusers and AUTOMATIC1111 files.

What the other tools read and write (checked against diffusers 0.42's
``load_textual_inversion`` and A1111's embedding loader):

* diffusers ``learned_embeds.safetensors`` (or ``.bin``): one key, the token string,
  holding float (num_vectors, dim) or (dim,). A multi-vector token ``<t>`` becomes the
  tokenizer entries ``<t>``, ``<t>_1``, ... in diffusers; prompts name only ``<t>``.
* A1111 ``.safetensors``: one key, by convention ``emb_params``, holding (num_vectors, dim);
  the trigger word is the **file name** without extension. A1111's own ``.pt`` files hold
  ``{"string_to_param": {"*": tensor}, "name": ..., "step": ..., "string_to_token": ...}``.

We write ``.safetensors`` only (safetensors cannot carry code). ``.pt`` / ``.bin`` files are
read through ``kerasemote.convert.torchfile``'s restricted unpickler, which runs nothing.

Imported files become our format (``embeddings.npz`` + ``embeddings.json`` + one ``.npy`` per
token, see ``kerasemote.embeddings``), ready for ``load_embeddings`` and ``--embeddings``.

Example:
    >>> export_embeddings("runs/emotions", "exported/", "a1111")  # doctest: +SKIP
    ['exported/happy.safetensors', 'exported/sad.safetensors']   # A1111 triggers: happy, sad
    >>> import_embeddings("learned_embeds.safetensors", "imported/")  # doctest: +SKIP
    ['imported/embeddings.npz', 'imported/embeddings.json', 'imported/cat-toy.npy']
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

import numpy as np

from kerasemote import embeddings, storage, weights
from kerasemote.config import LIMITS
from kerasemote.convert import torchfile

EMBEDDING_FORMATS = ("diffusers", "a1111")
A1111_KEY = "emb_params"
SAFETENSORS = ".safetensors"
_TORCH_SUFFIXES = (".pt", ".bin", ".pth", ".ckpt")


# ---------------------------------------------------------------------- export


def to_diffusers(token: str, rows: np.ndarray) -> dict[str, np.ndarray]:
    """``{token: rows}``: diffusers' ``learned_embeds`` state dict, rows (num_vectors, dim)."""
    return {token: np.asarray(rows, "float32")}


def to_a1111(rows: np.ndarray) -> dict[str, np.ndarray]:
    """``{"emb_params": rows}``: A1111's safetensors embedding, rows (num_vectors, dim)."""
    return {A1111_KEY: np.asarray(rows, "float32")}


def a1111_trigger(token: str) -> str:
    """The file stem (A1111's trigger word) for one of our tokens: ``"<in-love>"`` -> ``"in-love"``."""
    return embeddings.token_file_name(token)[: -len(".npy")]


def export_embeddings(
    source: str, out: str, format: str = "diffusers", tokens: Sequence[str] | None = None,
    dtype: str = "float32",
) -> list[str]:
    """Write our textual-inversion rows as diffusers or A1111 ``.safetensors`` files.

    Both tools hold one token per file. ``out`` ending in ``.safetensors`` is one file (exactly
    one token selected); any other ``out`` is a folder receiving ``<stem>.safetensors`` per token,
    the stem being the token without ``<>`` (A1111 uses the file stem as the trigger word).

    Args:
        source: our ``embeddings.npz`` / ``.npy`` / ``embeddings.json`` or a run folder.
        out: a ``.safetensors`` file or a folder (local, Drive or gs://).
        format: ``diffusers`` (key = the token) or ``a1111`` (key ``emb_params``).
        tokens: the tokens to export; default all of the source's.
        dtype: ``float32`` or ``float16``.

    Returns:
        The files written.

    Raises:
        ValueError: unknown format or dtype, a token not in the source, several tokens for one file.
    """
    _check_choice("format", format, EMBEDDING_FORMATS)
    _check_choice("dtype", dtype, weights.SAVE_DTYPES)
    vectors, _ = embeddings.read_embeddings(source)
    chosen = list(tokens or vectors)
    missing = [t for t in chosen if t not in vectors]
    if missing:
        raise ValueError(f"{source}: tokens {missing} expected, found only {sorted(vectors)}.")
    if out.endswith(SAFETENSORS):
        if len(chosen) != 1:
            raise ValueError(
                f"{out}: one file holds one token but {chosen} are selected; pass one token "
                "(--token) or a folder as --out."
            )
        targets = {chosen[0]: out}
    else:
        storage.makedirs(out)
        targets = {t: storage.join(out, a1111_trigger(t) + SAFETENSORS) for t in chosen}
    for token, path in targets.items():
        state = to_diffusers(token, vectors[token]) if format == "diffusers" else to_a1111(vectors[token])
        torchfile.save_safetensors(path, {k: v.astype(dtype) for k, v in state.items()})
    return list(targets.values())


# ---------------------------------------------------------------------- import


def read_foreign_embeddings(path: str, token: str | None = None) -> tuple[str, np.ndarray, dict[str, Any]]:
    """One token's rows from a diffusers or A1111 file.

    The token is ``token`` when given; else the diffusers key, or ``<file stem>`` for an A1111
    file (A1111's trigger is the stem; the ``<>`` keep it from hijacking a CLIP word).

    Args:
        path: ``.safetensors`` (diffusers or A1111), ``.bin`` (diffusers) or ``.pt`` (A1111),
            local, Drive or gs://.
        token: the placeholder to use in prompts, overriding the file's.

    Returns:
        ``(token, rows float32 (num_vectors, dim), facts)``; facts hold ``format`` and, for
        A1111 ``.pt`` files, ``step`` and ``name``.

    Raises:
        WeightFileError: naming the file, the key, the expected and the found value.
        torchfile.UnsafePickleError: a ``.pt`` whose pickle asks for anything but tensors.
    """
    source = storage._fspath(path)
    if source.endswith(SAFETENSORS):
        state: Any = torchfile.load_state_dict(source)
    elif source.endswith(_TORCH_SUFFIXES):
        state = torchfile.load_torch_zip(source)
    else:
        raise weights.WeightFileError(
            f"{source}: expected a .safetensors, .bin or .pt embedding file, found {storage.basename(source)!r}."
        )
    stem = storage.basename(source).rsplit(".", 1)[0]
    found_token, array, facts = _parse_state(source, state, stem)
    rows = _rows(source, found_token, array)
    return token or found_token, rows, facts


def _parse_state(source: str, state: Any, stem: str) -> tuple[str, Any, dict[str, Any]]:
    """(file's token, array, facts) from a loaded diffusers or A1111 object."""
    if isinstance(state, np.ndarray):
        return f"<{stem}>", state, {"format": "tensor"}
    if not isinstance(state, Mapping):
        raise weights.WeightFileError(f"{source}: expected a dict of tensors, found {type(state).__name__}.")
    if "string_to_param" in state:
        params = state["string_to_param"]
        if not isinstance(params, Mapping) or len(params) != 1:
            found = list(params) if isinstance(params, Mapping) else type(params).__name__
            raise weights.WeightFileError(
                f"{source}: key 'string_to_param' expected one entry ('*'), found {found}."
            )
        facts = {"format": "a1111", "name": state.get("name"), "step": state.get("step")}
        return f"<{stem}>", next(iter(params.values())), facts
    if {"clip_l", "clip_g"} & set(state):
        raise weights.WeightFileError(
            f"{source}: keys 'clip_l'/'clip_g' are an SDXL embedding; expected one SD 1.x key (dim 768)."
        )
    tensors = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    if len(tensors) != 1:
        raise weights.WeightFileError(
            f"{source}: expected one tensor key (diffusers: the token; A1111: {A1111_KEY!r}), "
            f"found {sorted(tensors) or 'none'}."
        )
    key, array = next(iter(tensors.items()))
    if key == A1111_KEY:
        return f"<{stem}>", array, {"format": "a1111"}
    return key, array, {"format": "diffusers"}


def _rows(source: str, token: str, array: Any) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.kind != "f":
        raise weights.WeightFileError(f"{source}: key {token!r} expected a float dtype, found {array.dtype}.")
    if array.ndim == 1:
        array = array[None]  # (dim,) -> (1, dim)
    if array.ndim != 2 or 0 in array.shape:
        raise weights.WeightFileError(
            f"{source}: key {token!r} expected shape (num_vectors, dim), found {array.shape}."
        )
    # A token's rows go into a prompt of at most max_length tokens, each row text_width wide.
    most_vectors, widest = LIMITS["max_length"], LIMITS["text_width"]
    if array.shape[0] > most_vectors or array.shape[1] > widest:
        raise weights.WeightFileError(
            f"{source}: key {token!r} expected at most {most_vectors} vectors of width at most {widest}, "
            f"found shape {array.shape}."
        )
    return array.astype("float32")


def import_embeddings(sources: str | Sequence[str], out_dir: str, tokens: Sequence[str] | None = None) -> list[str]:
    """Convert diffusers / A1111 embedding files into one folder of our format.

    Args:
        sources: one or more files (see ``read_foreign_embeddings``).
        out_dir: folder receiving ``embeddings.npz``, ``embeddings.json`` and a ``.npy`` per token.
        tokens: one token per source overriding the files' own (``None`` entries keep them).

    Returns:
        The files written (what ``save_embeddings`` writes).

    Raises:
        ValueError: two sources giving the same token, or ``tokens`` of the wrong length.
    """
    sources = [sources] if isinstance(sources, str) else list(sources)
    tokens = list(tokens) if tokens is not None else [None] * len(sources)
    if len(tokens) != len(sources):
        raise ValueError(f"{len(sources)} sources but {len(tokens)} tokens; give one token per source.")
    rows: dict[str, np.ndarray] = {}
    entries = []
    for source, token in zip(sources, tokens):
        name, array, facts = read_foreign_embeddings(source, token)
        if name in rows:
            raise ValueError(f"{source}: token {name!r} also comes from an earlier file; pass distinct tokens.")
        rows[name] = array
        entries.append({"token": name, "source": source, **{k: v for k, v in facts.items() if v is not None}})
    return write_embeddings(out_dir, rows, {"imported_from": entries}, steps=_steps(entries))


def _steps(entries: Sequence[Mapping[str, Any]]) -> int:
    steps = [e["step"] for e in entries if isinstance(e.get("step"), int)]
    return max(steps, default=0)


def write_embeddings(out_dir: str, rows: Mapping[str, np.ndarray], extra: Mapping[str, Any] | None = None,
                     steps: int = 0) -> list[str]:
    """Our embeddings folder from rows alone (no model): what ``save_embeddings`` writes.

    The manifest has no ``base_model`` (unknown for a foreign file); the width is checked
    when the rows are loaded into a model.
    """
    widths = {r.shape[1] for r in rows.values()}
    if len(widths) != 1:
        raise ValueError(f"Embeddings of one folder must share a width; found {sorted(widths)}.")
    names = {t: embeddings.token_file_name(t) for t in rows}
    if len(set(names.values())) != len(names):
        raise ValueError(f"Tokens {list(rows)} give clashing file names {list(names.values())}; rename them.")
    manifest = {
        "format": embeddings.FORMAT, "version": embeddings.VERSION, "dims": widths.pop(), "steps": int(steps),
        "tokens": [{"token": t, "file": names[t], "num_vectors": len(r), "initializer": None} for t, r in rows.items()],
        **dict(extra or {}),
    }
    storage.makedirs(out_dir)
    paths = []
    for token, array in rows.items():
        paths.append(storage.join(out_dir, names[token]))
        weights.save_npy(paths[-1], np.asarray(array, "float32"))
    bundle = storage.join(out_dir, embeddings.BUNDLE_FILE)
    weights.save_arrays(bundle, {t: np.asarray(r, "float32") for t, r in rows.items()}, manifest)
    manifest_path = storage.join(out_dir, embeddings.MANIFEST_FILE)
    storage.write_bytes(manifest_path, (json.dumps(manifest, indent=2) + "\n").encode())
    return [bundle, manifest_path, *paths]


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}.")
