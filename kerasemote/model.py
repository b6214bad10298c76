"""``StableDiffusion``: the config, the tokenizer and the four Keras parts, plus the model directory.

A model directory holds ``config.json`` (model config, tokenizer placeholders, the
weight files with their sha256) and one NumPy ``.npz`` per part, keyed by Keras variable path::

    my-model/
      config.json
      text_encoder.npz  unet.npz  vae_encoder.npz  vae_decoder.npz

Every command loads this format; ``kerasemote convert`` writes it from keras-cv,
diffusers and original single-file checkpoints. How a save stays all-old-or-all-new
when interrupted, and how a load checks that the parts belong together, is
``kerasemote.model_dir``.
"""

from __future__ import annotations

from typing import Any, Sequence

import keras
import numpy as np
from keras import ops

from kerasemote import model_dir, pipeline, weights
from kerasemote.config import ModelConfig, get_config
from kerasemote.model_dir import FORMAT, FORMAT_VERSION, PARTS  # noqa: F401  (FORMAT* re-exported)
from kerasemote.models.skip_init import skip_random_init
from kerasemote.models.text_encoder import TextEncoder
from kerasemote.models.unet import UNet
from kerasemote.models.vae import VAEDecoder, VAEEncoder, latent_distribution
from kerasemote.tokenizer import Tokenizer


class StableDiffusion:
    """A Stable Diffusion 1.x model: tokenizer, text encoder, UNet, VAE encoder and decoder.

    Args:
        config: sizes of every part.
        tokenizer: CLIP tokenizer (with any placeholder tokens); a fresh one if None.
        text_encoder, unet, vae_encoder, vae_decoder: built parts; new randomly
            initialized ones when None.

    Example:
        >>> model = StableDiffusion.random("tiny", seed=0)
        >>> images = model.generate("a happy emoji", steps=4, seed=1)  # (1, 64, 64, 3) uint8
    """

    def __init__(
        self,
        config: ModelConfig,
        tokenizer: Tokenizer | None = None,
        text_encoder: TextEncoder | None = None,
        unet: UNet | None = None,
        vae_encoder: VAEEncoder | None = None,
        vae_decoder: VAEDecoder | None = None,
    ):
        self.config = config
        self.tokenizer = tokenizer or Tokenizer.from_config(config)
        extra = self.tokenizer.vocab_size - config.vocab_size
        self.text_encoder = text_encoder or TextEncoder(config, extra).build_with_dummy()
        if self.text_encoder.num_extra_tokens != extra:
            raise ValueError(
                f"The tokenizer has {extra} placeholder rows but the text encoder has "
                f"{self.text_encoder.num_extra_tokens}."
            )
        self.unet = unet or UNet(config).build_with_dummy()
        self.vae_encoder = vae_encoder or VAEEncoder(config).build_with_dummy()
        self.vae_decoder = vae_decoder or VAEDecoder(config).build_with_dummy()
        self.source = "random"

    # ------------------------------------------------------------------ construction

    @classmethod
    def random(cls, config: str | ModelConfig = "tiny", seed: int | None = None) -> "StableDiffusion":
        """A randomly initialized model (for tests and for training from scratch)."""
        config = get_config(config) if isinstance(config, str) else config
        if seed is not None:
            keras.utils.set_random_seed(seed)
        return cls(config)

    @property
    def parts(self) -> dict[str, keras.Model]:
        return {
            "text_encoder": self.text_encoder,
            "unet": self.unet,
            "vae_encoder": self.vae_encoder,
            "vae_decoder": self.vae_decoder,
        }

    def load_part_arrays(self, arrays: dict[str, dict[str, np.ndarray]], source: str) -> None:
        """Assign converted arrays, keyed by part then variable path; every key is checked."""
        for part, part_arrays in arrays.items():
            if part not in PARTS:
                raise ValueError(f"{source}: unknown model part {part!r}; expected one of {PARTS}.")
            weights.assign_arrays(self.parts[part], part_arrays, f"{source} [{part}]")

    # ------------------------------------------------------------------ text

    def tokenize(self, prompts: str | Sequence[str]) -> np.ndarray:
        """(B, 77) int32 CLIP ids, placeholders included."""
        return self.tokenizer.encode(prompts)

    def encode_text(self, prompts: str | Sequence[str]) -> np.ndarray:
        """Encoded prompts, (B, 77, text_width) float32: what the UNet attends to.

        Interpolating two encoded prompts and passing the result as ``context`` to
        ``generate`` mixes two concepts in context space.
        """
        ids = self.tokenize(prompts)
        # Each distinct prompt is encoded once: a batch of one prompt repeated costs one row.
        unique, rows = np.unique(ids, axis=0, return_inverse=True)
        encoded = ops.convert_to_numpy(self._compiled(self.text_encoder)(unique))
        return encoded[rows.reshape(-1)]

    def add_placeholder(
        self, token: str, num_vectors: int = 1, init: str | np.ndarray | None = None
    ) -> list[int]:
        """Add a placeholder token (textual inversion) with new embedding rows.

        Args:
            token: e.g. ``"<broccoli>"``.
            num_vectors: rows the token expands to.
            init: a word whose single CLIP token initializes every row, an array of
                shape (num_vectors, width) or (width,), or None for small random rows.

        Returns:
            The new token ids.
        """
        rows = self._initial_rows(token, num_vectors, init)
        ids = self.tokenizer.add_placeholder(token, num_vectors)
        current = self.placeholder_rows()
        self.text_encoder = self.text_encoder.with_extra_tokens(np.concatenate([current, rows], axis=0))
        return ids

    def _initial_rows(self, token: str, num_vectors: int, init) -> np.ndarray:
        width = self.config.text_width
        if init is None:
            return np.random.default_rng(0).normal(0.0, 0.02, (num_vectors, width)).astype("float32")
        if isinstance(init, str):
            ids = self.tokenizer.token_ids(init)
            if len(ids) != 1:
                raise ValueError(
                    f"Initializer word {init!r} for {token!r} is {len(ids)} CLIP tokens {ids}; "
                    "choose a word that is exactly one token (e.g. 'broccoli', 'face', 'emoji')."
                )
            row = ops.convert_to_numpy(self.text_encoder.token_embedding.table()[ids[0]])
            return np.tile(row[None], (num_vectors, 1)).astype("float32")
        rows = np.asarray(init, dtype="float32")
        rows = np.tile(rows[None], (num_vectors, 1)) if rows.ndim == 1 else rows
        if rows.shape != (num_vectors, width):
            raise ValueError(
                f"Initial rows for {token!r}: expected shape ({num_vectors}, {width}), found {rows.shape}."
            )
        return rows

    def placeholder_rows(self, token: str | None = None) -> np.ndarray:
        """Embedding rows of one placeholder token, or of all of them (N, width)."""
        extra = self.text_encoder.token_embedding.extra_embeddings
        width = self.config.text_width
        rows = np.zeros((0, width), "float32") if extra is None else ops.convert_to_numpy(extra)
        if token is None:
            return rows
        if token not in self.tokenizer.placeholders:
            raise KeyError(f"No placeholder {token!r}; known: {list(self.tokenizer.placeholders)}.")
        ids = np.asarray(self.tokenizer.placeholders[token]) - self.config.vocab_size
        return rows[ids]

    def set_placeholder_rows(self, token: str, rows: np.ndarray) -> None:
        """Overwrite the embedding rows of an existing placeholder token."""
        ids = np.asarray(self.tokenizer.placeholders[token]) - self.config.vocab_size
        rows = np.asarray(rows, dtype="float32")
        if rows.shape != (len(ids), self.config.text_width):
            raise ValueError(
                f"Rows for {token!r}: expected shape ({len(ids)}, {self.config.text_width}), found {rows.shape}."
            )
        all_rows = self.placeholder_rows().copy()
        all_rows[ids] = rows
        self.text_encoder.token_embedding.extra_embeddings.assign(all_rows)

    # ------------------------------------------------------------------ images

    def encode_images(self, images, seed: int | None = None, sample: bool = True) -> np.ndarray:
        """Images -> scaled latents (B, H/8, W/8, 4), ready for the UNet.

        Args:
            images: uint8 (B, H, W, 3) in [0, 255] or float in [-1, 1].
            seed: seed of the latent sample (``sample=True``).
            sample: draw from the latent Gaussian; False returns its mean.
        """
        images = np.asarray(images)
        if images.dtype == np.uint8:
            images = images.astype("float32") / 127.5 - 1.0
        mean, std = latent_distribution(self.vae_encoder(images))
        latents = mean
        if sample:
            noise = np.random.default_rng(seed).standard_normal(mean.shape).astype("float32")
            latents = mean + std * noise
        return ops.convert_to_numpy(latents * self.config.scaling_factor)

    def decode_latents(self, latents, jit_compile: bool = False) -> np.ndarray:
        """Scaled latents -> uint8 images (B, H, W, 3); ``jit_compile``: the decoder compiled with XLA."""
        decoder = self._compiled(self.vae_decoder, jit_compile)
        return to_uint8(decoder(ops.convert_to_tensor(latents) / self.config.scaling_factor))

    @staticmethod
    def _compiled(part: keras.Model, jit_compile: bool = False):
        """``part`` as a tf.function kept on the part itself; after a second batch size it traces
        one graph for any batch size (``reduce_retracing``), so batches of changing size (the
        distinct prompts of each batch) do not trace again.

        Keyed by the part's variable count, so adding variables (``enable_lora``) traces
        anew instead of running a graph that lacks them.
        """
        cache = part.__dict__.setdefault("_kerasemote_compiled", {})
        key = (len(part.weights), jit_compile)
        if key not in cache:
            import tensorflow as tf

            for stale in [k for k in cache if k[0] != key[0]]:
                del cache[stale]
            cache[key] = tf.function(part.__call__, reduce_retracing=True, jit_compile=jit_compile)
        return cache[key]

    # ------------------------------------------------------------------ generation

    def generate(self, prompt: str | Sequence[str] | None = None, **kwargs: Any) -> np.ndarray:
        """Text to image (or image to image); see ``kerasemote.pipeline.generate`` for every option."""
        return pipeline.generate(self, prompt, **kwargs)

    # ------------------------------------------------------------------ saving

    def save(self, directory: str, dtype: str = "float32", extra: dict[str, Any] | None = None) -> None:
        """Write the model directory (``config.json`` + one ``.npz`` per part).

        Interrupted at any point (even killed), the directory still loads as the old
        model or as the new one; see ``kerasemote.model_dir``.

        Args:
            directory: local, Drive or ``gs://`` folder.
            dtype: ``float32`` or ``float16`` (halves the files; loads back as float32).
            extra: more JSON-able facts for the manifest (source checkpoint, training steps...).
        """
        if dtype not in weights.SAVE_DTYPES:
            raise ValueError(f"dtype must be {' or '.join(weights.SAVE_DTYPES)}, got {dtype!r}.")

        def writer(part: str) -> model_dir.WritePart:
            def write_part(path: str) -> None:
                # Each variable is copied out as it is written: a part is never held twice.
                weights.save_arrays(path, weights.lazy_model_arrays(self.parts[part], dtype), {"part": part})
            return write_part

        manifest = {
            "config": self.config.to_dict(),
            "tokenizer": self.tokenizer.to_dict(),
            "dtype": dtype,
            **(extra or {}),
        }
        model_dir.write(directory, [(part, writer(part)) for part in PARTS], manifest)

    @classmethod
    def load(cls, directory: str) -> "StableDiffusion":
        """Read a model directory written by ``save``; every key, shape and part checksum is checked."""
        with model_dir.reading(directory) as found:
            config = ModelConfig.from_dict(found.manifest.get("config"), source=found.config_file, field="config")
            tokenizer = Tokenizer.from_dict(found.manifest.get("tokenizer", {}), source=found.config_file)
            with skip_random_init():  # every variable is assigned below (a missing key is an error)
                model = cls(config, tokenizer)
            for part in PARTS:
                with found.lazy(part) as arrays:  # one tensor in memory at a time beside the model
                    weights.assign_arrays(model.parts[part], arrays, found.files[part])
        model.source = str(directory)
        return model


def to_uint8(images) -> np.ndarray:
    """Decoder output in about [-1, 1] -> uint8 [0, 255]."""
    images = ops.convert_to_numpy(images)
    return np.clip(np.round((images + 1.0) * 127.5), 0, 255).astype(np.uint8)

