"""Mix two learned concepts: in token-embedding space or in encoded-prompt (context) space.

``alpha`` is the share of the second concept: ``mix = (1 - alpha) * A + alpha * B``, so
``alpha=0`` is A, ``alpha=1`` is B and ``alpha=0.3`` is "30% B, 70% A".

Example:
    >>> rows = slerp(model.placeholder_rows("<broccoli>"), model.placeholder_rows("<happy>"), 0.3)
    >>> model.add_placeholder("<mix>", len(rows), init=rows)
    >>> model.generate("a <mix> sticker", seed=0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from kerasemote import images as image_io
from kerasemote import storage

if TYPE_CHECKING:
    from kerasemote.model import StableDiffusion

METHODS = ("lerp", "slerp")
SPACES = ("token", "context")


def lerp(a: np.ndarray, b: np.ndarray, alpha: float) -> np.ndarray:
    """Linear mix ``(1 - alpha) * a + alpha * b`` (exact at both ends)."""
    a, b = np.asarray(a, "float32"), np.asarray(b, "float32")
    _check_pair(a, b)
    if alpha == 0:
        return a.copy()
    if alpha == 1:
        return b.copy()
    return ((1.0 - alpha) * a + alpha * b).astype("float32")


def slerp(a: np.ndarray, b: np.ndarray, alpha: float) -> np.ndarray:
    """Spherical mix along the last axis: the direction turns on the great circle from
    ``a`` to ``b`` and the norm moves linearly between theirs, so it stays between the
    endpoints' norms (a plain lerp shrinks it in between). Exact at both ends.

    Args:
        a, b: arrays of the same shape, e.g. (num_vectors, width) embedding rows or
            (77, width) encoded prompts; each vector along the last axis is mixed.
        alpha: share of ``b`` in [0, 1].
    """
    a, b = np.asarray(a, "float64"), np.asarray(b, "float64")
    _check_pair(a, b)
    if alpha == 0:
        return a.astype("float32")
    if alpha == 1:
        return b.astype("float32")
    norm_a = np.linalg.norm(a, axis=-1, keepdims=True)
    norm_b = np.linalg.norm(b, axis=-1, keepdims=True)
    unit_a = a / np.maximum(norm_a, 1e-12)
    unit_b = b / np.maximum(norm_b, 1e-12)
    cos = np.clip(np.sum(unit_a * unit_b, axis=-1, keepdims=True), -1.0, 1.0)
    theta = np.arccos(cos)
    sin = np.sin(theta)
    # Nearly parallel vectors: the great-circle weights tend to the linear ones.
    safe = sin > 1e-6
    w_a = np.where(safe, np.sin((1.0 - alpha) * theta) / np.where(safe, sin, 1.0), 1.0 - alpha)
    w_b = np.where(safe, np.sin(alpha * theta) / np.where(safe, sin, 1.0), alpha)
    direction = w_a * unit_a + w_b * unit_b
    direction /= np.maximum(np.linalg.norm(direction, axis=-1, keepdims=True), 1e-12)
    return (direction * ((1.0 - alpha) * norm_a + alpha * norm_b)).astype("float32")


def mix(a: np.ndarray, b: np.ndarray, alpha: float, method: str = "slerp") -> np.ndarray:
    """``lerp`` or ``slerp`` by name."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    return lerp(a, b, alpha) if method == "lerp" else slerp(a, b, alpha)


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"Cannot mix arrays of shapes {a.shape} and {b.shape}; they must match.")


def fractions(num: int) -> list[float]:
    """``num`` evenly spaced shares of the second concept, from 0 to 1."""
    if num < 2:
        raise ValueError(f"A sweep needs at least 2 fractions, got {num}.")
    return [round(float(x), 4) for x in np.linspace(0.0, 1.0, num)]


def add_mixed_token(
    model: "StableDiffusion", token_a: str, token_b: str, alpha: float, method: str = "slerp",
    name: str | None = None,
) -> str:
    """Add a placeholder token whose rows mix two learned tokens; returns its name.

    Both tokens must have the same number of vectors.
    """
    rows_a, rows_b = model.placeholder_rows(token_a), model.placeholder_rows(token_b)
    if rows_a.shape != rows_b.shape:
        raise ValueError(
            f"{token_a} has {len(rows_a)} vectors and {token_b} has {len(rows_b)}; token-space mixing needs "
            "the same count (use --space context instead)."
        )
    name = name or f"<mix-{_bare(token_a)}-{_bare(token_b)}-{alpha:g}>"
    if name not in model.tokenizer.placeholders:
        model.add_placeholder(name, len(rows_a), init=mix(rows_a, rows_b, alpha, method))
    else:
        model.set_placeholder_rows(name, mix(rows_a, rows_b, alpha, method))
    return name


def _bare(token: str) -> str:
    return token.strip("<>")


@dataclass
class Sweep:
    """Images of an interpolation sweep and where they were written."""

    alphas: list[float]
    images: np.ndarray  # uint8 (N, H, W, 3)
    paths: list[str]
    grid: str | None = None
    gif: str | None = None


def token_sweep(
    model: "StableDiffusion", token_a: str, token_b: str, prompt: str, alphas: Sequence[float],
    method: str = "slerp", seed: int = 0, **generate_kwargs,
) -> np.ndarray:
    """One image per alpha: ``prompt`` (with ``{}``) filled with the mixed token; same noise for all."""
    _check_template(prompt)
    progress = generate_kwargs.pop("progress", True)
    noise = _fixed_noise(model, 1, seed, generate_kwargs)
    # One placeholder for the whole sweep whose rows change per alpha: a new token per alpha
    # would rebuild (and retrace) the text encoder for every image.
    name = f"<mix-{_bare(token_a)}-{_bare(token_b)}>"
    return _one_by_one(
        lambda a: model.generate(
            prompt.format(add_mixed_token(model, token_a, token_b, a, method, name=name)),
            init_latents=noise, seed=seed, progress=False, **generate_kwargs,
        ),
        alphas, progress,
    )


def context_sweep(
    model: "StableDiffusion", prompt_a: str, prompt_b: str, alphas: Sequence[float], method: str = "slerp",
    seed: int = 0, **generate_kwargs,
) -> np.ndarray:
    """One image per alpha, mixing the two encoded prompts; same initial noise for all."""
    # Each prompt encoded alone, exactly as ``generate(prompt)`` would encode it.
    context_a, context_b = model.encode_text([prompt_a]), model.encode_text([prompt_b])
    progress = generate_kwargs.pop("progress", True)
    noise = _fixed_noise(model, 1, seed, generate_kwargs)
    return _one_by_one(
        lambda a: model.generate(
            context=mix(context_a, context_b, a, method), init_latents=noise, seed=seed, progress=False,
            **generate_kwargs,
        ),
        alphas, progress,
    )


def context_grid(
    model: "StableDiffusion", prompts: Sequence[str], num: int, method: str = "lerp", seed: int = 0,
    **generate_kwargs,
) -> np.ndarray:
    """A ``num`` x ``num`` grid over four prompts at the corners (top-left, top-right,
    bottom-left, bottom-right): bilinear mixing of the encoded prompts, same noise everywhere.

    Returns:
        uint8 images (num * num, H, W, 3) in row-major order.
    """
    if len(prompts) != 4:
        raise ValueError(f"A 2-D grid needs four prompts (the corners), got {len(prompts)}.")
    tl, tr, bl, br = (model.encode_text([p]) for p in prompts)
    contexts = []
    for row in fractions(num):
        left, right = mix(tl, bl, row, method), mix(tr, br, row, method)
        contexts.extend(mix(left, right, col, method) for col in fractions(num))
    progress = generate_kwargs.pop("progress", True)
    noise = _fixed_noise(model, 1, seed, generate_kwargs)
    return _one_by_one(
        lambda context: model.generate(context=context, init_latents=noise, seed=seed, progress=False,
                                       **generate_kwargs),
        contexts, progress,
    )


def _one_by_one(make, items, progress: bool = True) -> np.ndarray:
    """One ``generate`` call per item (batch of one), so each image is exactly what the same
    call alone would give: batching changes float rounding in the last bits. One bar over the
    items (``progress=False``: none), none per image."""
    from tqdm.auto import tqdm

    items = list(items)
    bar = tqdm(items, desc="interpolating", leave=False, disable=not progress)
    return np.concatenate([make(item) for item in bar], axis=0)


def _fixed_noise(model: "StableDiffusion", n: int, seed: int, kwargs: dict) -> np.ndarray:
    from kerasemote.pipeline import initial_noise

    factor = model.config.vae_downsample
    height = kwargs.get("height") or model.config.image_size
    width = kwargs.get("width") or model.config.image_size
    one = initial_noise((1, height // factor, width // factor, model.config.latent_channels), seed)
    return np.repeat(one, n, axis=0)


def _check_template(prompt: str) -> None:
    if "{}" not in prompt:
        raise ValueError(f"The prompt {prompt!r} needs a {{}} where the mixed concept goes, e.g. 'a {{}} sticker'.")


def save_sweep(images: np.ndarray, alphas: Sequence[float], out_dir: str, label: str = "alpha") -> Sweep:
    """Write one PNG per image, a grid labelled with the fractions and an animated GIF."""
    storage.makedirs(out_dir)
    paths = image_io.save_images(images, out_dir, prefix="mix")
    labels = [f"{label}={a:g}" for a in alphas]
    grid = image_io.save_grid(images, storage.join(out_dir, "grid.png"), cols=len(images), labels=labels)
    gif = image_io.save_gif(images, storage.join(out_dir, "sweep.gif")) if len(images) > 1 else None
    return Sweep(list(alphas), images, paths, grid, gif)
