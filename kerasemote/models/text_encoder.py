"""The CLIP text encoder of SD 1.x (causal self-attention, quick-GELU, 77 tokens).

Names mirror transformers' ``CLIPTextModel`` (``text_model.embeddings...``,
``text_model.encoder.layers.i...``, ``text_model.final_layer_norm``).

Placeholder tokens (textual inversion) live in a separate ``extra_embeddings``
variable appended after the 49,408 CLIP rows, so training them never touches the
original rows and saving them is saving one small array.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from kerasemote.config import ModelConfig
from kerasemote.lazy import release_memory
from kerasemote.models import skip_init
from kerasemote.models.layers import Composite
from kerasemote.models.lora_layers import Dense
from kerasemote.models.recompute import checkpointed


class TokenEmbedding(keras.layers.Layer):
    """Token lookup over ``concat(embeddings, extra_embeddings)``.

    Args:
        vocab_size: rows of the base vocabulary.
        width: embedding width.
        num_extra: placeholder rows appended after the base rows.
    """

    def __init__(self, vocab_size: int, width: int, num_extra: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.width = width
        self.num_extra = num_extra

    def build(self, input_shape=None):
        self.embeddings = self.add_weight(
            shape=(self.vocab_size, self.width),
            initializer=skip_init.initializer(keras.initializers.RandomNormal(stddev=0.02)),
            name="embeddings",
        )
        self.extra_embeddings = None
        if self.num_extra:
            self.extra_embeddings = self.add_weight(
                shape=(self.num_extra, self.width),
                initializer=keras.initializers.RandomNormal(stddev=0.02),
                name="extra_embeddings",
            )

    def table(self):
        """The full (vocab_size + num_extra, width) lookup table."""
        if self.extra_embeddings is None:
            return self.embeddings
        return ops.concatenate([self.embeddings, self.extra_embeddings], axis=0)

    def call(self, token_ids):
        ids = ops.cast(token_ids, "int32")
        if self.extra_embeddings is None:
            return ops.take(self.embeddings, ids, axis=0)
        # Two lookups and a select instead of a lookup in ``table()``: no copy of the
        # (vocab_size, width) rows per call, and none of its gradient when the placeholders train.
        base = ops.take(self.embeddings, ops.minimum(ids, self.vocab_size - 1), axis=0)  # (B, L, width)
        extra = ops.take(self.extra_embeddings, ops.clip(ids - self.vocab_size, 0, self.num_extra - 1), axis=0)
        return ops.where((ids >= self.vocab_size)[..., None], extra, base)


class _Embeddings(Composite):
    def __init__(self, config: ModelConfig, num_extra: int, **kwargs):
        super().__init__(**kwargs)
        self.token_embedding = TokenEmbedding(
            config.vocab_size, config.text_width, num_extra, name="token_embedding"
        )
        self.position_embedding = keras.layers.Embedding(
            config.max_length,
            config.text_width,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=0.01),
            name="position_embedding",
        )

    def call(self, token_ids):
        positions = ops.arange(ops.shape(token_ids)[1])
        return self.token_embedding(token_ids) + self.position_embedding(positions)[None]


def quick_gelu(x):
    return x * ops.sigmoid(1.702 * x)


class CLIPAttention(Composite):
    def __init__(self, width: int, num_heads: int, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.q_proj = Dense(width, name="q_proj")
        self.k_proj = Dense(width, name="k_proj")
        self.v_proj = Dense(width, name="v_proj")
        self.out_proj = Dense(width, name="out_proj")

    def call(self, x, mask):
        batch, length, width = ops.shape(x)[0], ops.shape(x)[1], x.shape[-1]
        head_dim = width // self.num_heads

        def heads(t):  # (B, L, C) -> (B, h, L, d)
            return ops.transpose(ops.reshape(t, (batch, length, self.num_heads, head_dim)), (0, 2, 1, 3))

        q = heads(self.q_proj(x) * (head_dim**-0.5))
        k, v = heads(self.k_proj(x)), heads(self.v_proj(x))
        scores = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) + ops.cast(mask, q.dtype)  # (B, h, L, L)
        weights = ops.cast(ops.softmax(ops.cast(scores, "float32"), axis=-1), q.dtype)
        out = ops.transpose(ops.matmul(weights, v), (0, 2, 1, 3))  # (B, L, h, d)
        return self.out_proj(ops.reshape(out, (batch, length, width)))


class CLIPMLP(Composite):
    def __init__(self, config: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        self.fc1 = Dense(config.text_intermediate, name="fc1")
        self.fc2 = Dense(config.text_width, name="fc2")

    def call(self, x):
        return self.fc2(quick_gelu(self.fc1(x)))


class CLIPEncoderLayer(Composite):
    def __init__(self, config: ModelConfig, **kwargs):
        super().__init__(**kwargs)
        self.layer_norm1 = keras.layers.LayerNormalization(epsilon=1e-5, name="layer_norm1")
        self.self_attn = CLIPAttention(config.text_width, config.text_heads, name="self_attn")
        self.layer_norm2 = keras.layers.LayerNormalization(epsilon=1e-5, name="layer_norm2")
        self.mlp = CLIPMLP(config, name="mlp")

    def call(self, x, mask):
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class _TextModel(Composite):
    def __init__(self, config: ModelConfig, num_extra: int, **kwargs):
        super().__init__(**kwargs)
        self.embeddings = _Embeddings(config, num_extra, name="embeddings")
        self.encoder_layers = [
            CLIPEncoderLayer(config, name=f"encoder.layers.{i}") for i in range(config.text_layers)
        ]
        self.final_layer_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="final_layer_norm")

    def call(self, token_ids):
        length = ops.shape(token_ids)[1]
        # Causal mask: position i sees positions <= i.
        mask = ops.triu(ops.full((length, length), -1e9, dtype="float32"), k=1)[None, None]
        x = self.embeddings(token_ids)
        for layer in self.encoder_layers:
            x = checkpointed(layer, x, mask)
        return self.final_layer_norm(x)


class TextEncoder(keras.Model):
    """Token ids (B, 77) -> encoded prompt (B, 77, text_width).

    Args:
        config: the model configuration.
        num_extra_tokens: placeholder rows after the CLIP vocabulary.
    """

    def __init__(
        self, config: ModelConfig, num_extra_tokens: int = 0, name: str = "text_encoder", **kwargs
    ):
        super().__init__(name=name, **kwargs)
        self.config = config
        self.num_extra_tokens = num_extra_tokens
        self.built = True  # sublayers build on the first call, eagerly (see build_with_dummy)
        self.text_model = _TextModel(config, num_extra_tokens, name="text_model")

    @property
    def token_embedding(self) -> TokenEmbedding:
        return self.text_model.embeddings.token_embedding

    def call(self, token_ids):
        return ops.cast(self.text_model(token_ids), "float32")

    def build_with_dummy(self) -> "TextEncoder":
        self(ops.zeros((1, self.config.max_length), dtype="int32"))
        return self

    def with_extra_tokens(self, extra_rows: np.ndarray) -> "TextEncoder":
        """A new encoder sharing this one's weights, with ``extra_rows`` as placeholder rows.

        Args:
            extra_rows: (num_extra, text_width) float array.

        Returns:
            A built TextEncoder whose base variables hold this encoder's values.
        """
        extra_rows = np.asarray(extra_rows, dtype="float32")
        if extra_rows.ndim != 2 or extra_rows.shape[1] != self.config.text_width:
            raise ValueError(
                f"extra token rows must have shape (N, {self.config.text_width}), got {extra_rows.shape}."
            )
        with skip_init.skip_random_init():  # every variable is assigned below
            new = TextEncoder(self.config, len(extra_rows), name=self.name).build_with_dummy()
        old = {v.path: v for v in self.weights}
        for var in new.weights:
            if var.path in old and old[var.path].shape == var.shape:
                var.assign(old[var.path])
        if len(extra_rows):
            new.token_embedding.extra_embeddings.assign(extra_rows)
        # Each assign above shares the old variable's storage and frees the new one's starting zeros
        # (the encoder's size): hand those pages back instead of keeping them resident.
        release_memory()
        return new
