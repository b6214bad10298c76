"""Building blocks shared by the UNet and the VAE.

Layer names follow the module names of the reference PyTorch implementation
(diffusers), so a Keras variable path such as
``unet/down_blocks.0/attentions.0/transformer_blocks.0/attn1/to_q/kernel`` reads
as the checkpoint key ``down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight``.
The converters in ``kerasemote.convert`` rely on that one-to-one naming.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf
from keras import ops

from kerasemote.models import recompute
from kerasemote.models.lora_layers import Conv2D, Dense


def conv(filters: int, kernel_size: int, name: str, strides: int = 1) -> keras.layers.Conv2D:
    """A convolution with no implicit padding: callers pad explicitly (see ``pad``)."""
    return Conv2D(filters, kernel_size, strides=strides, padding="valid", name=name)


def same_conv(filters: int, name: str) -> keras.layers.Conv2D:
    """A 3x3 stride-1 convolution that zero-pads one pixel on every side itself.

    The same result as ``conv(filters, 3, name)(pad(x, 1))``, without the padded copy of the
    input: the convolution kernel pads internally, which saves a full pass over the
    activations per convolution (the largest single cost of the VAE decoder at 512 px).
    """
    return Conv2D(filters, 3, padding="same", name=name)


def pad(x, before: int, after: int | None = None):
    """Zero-pad the two spatial axes of a (B, H, W, C) tensor."""
    after = before if after is None else after
    return ops.pad(x, [[0, 0], [before, after], [before, after], [0, 0]])


def group_norm(groups: int, epsilon: float, name: str) -> keras.layers.GroupNormalization:
    return keras.layers.GroupNormalization(groups=groups, epsilon=epsilon, name=name)


class Composite(keras.layers.Layer):
    """A layer made only of sublayers, which build on its first call, inside its name scope.

    Keras builds a layer without a ``build`` method by tracing its ``call`` symbolically, and
    traces every such layer nested in it once more inside that trace, which costs several times
    an eager call. A composite's sublayers are Keras layers that build themselves from the first
    shapes they see, so one eager call on small zeros (``build_with_dummy``) creates every
    variable, with the same paths, shapes and order as a traced build.
    """

    def build(self, *args, **kwargs):
        self.built = True


class ResnetBlock(Composite):
    """GroupNorm-SiLU-Conv twice, with an optional timestep embedding added in between.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output; a 1x1 ``conv_shortcut`` projects the
            residual when they differ.
        groups: GroupNorm groups.
        epsilon: GroupNorm epsilon.
        use_time_embedding: add a projected timestep embedding (UNet) or not (VAE).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        groups: int,
        epsilon: float,
        use_time_embedding: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.norm1 = group_norm(groups, epsilon, "norm1")
        self.conv1 = same_conv(out_channels, "conv1")
        self.time_emb_proj = (
            Dense(out_channels, name="time_emb_proj") if use_time_embedding else None
        )
        self.norm2 = group_norm(groups, epsilon, "norm2")
        self.conv2 = same_conv(out_channels, "conv2")
        self.conv_shortcut = (
            conv(out_channels, 1, "conv_shortcut") if in_channels != out_channels else None
        )

    def call(self, x, temb=None):
        h = self.conv1(ops.silu(self.norm1(x)))  # (B, H, W, out)
        if self.time_emb_proj is not None:
            h = h + self.time_emb_proj(ops.silu(temb))[:, None, None, :]
        h = self.conv2(ops.silu(self.norm2(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


ATTENTION_SCORES_BYTES = 2**30
"""Above this size of one attention's score tensor (batch x heads x queries x keys), the scores are
made one batch item at a time, so a 512 px batch of four with guidance holds 0.5 GiB of float32
scores at once instead of 4 GiB."""

LEAN_ATTENTION_BYTES = 2**24
"""In a training forward pass (``recompute.training()``), an attention whose score tensor is larger
than this keeps only q, k, v, its output and each query's log-sum-exp for the backward pass, which
recomputes the scores (``_attend_lean``): a 512 px sd-v1 self-attention keeps 10 MiB, not 512 MiB."""

QUERY_CHUNK_BYTES = 2**26
"""``_attend_lean`` makes the scores of this many bytes' worth of queries at a time."""


def multi_head_attention(q, k, v, num_heads: int):
    """Scaled dot-product attention.

    Args:
        q: (B, N, C) queries.
        k: (B, M, C) keys.
        v: (B, M, C) values.
        num_heads: heads; C must divide evenly.

    Returns:
        (B, N, C) attended values.
    """
    channels = q.shape[-1]
    head_dim = channels // num_heads
    batch, n, m = ops.shape(q)[0], ops.shape(q)[1], ops.shape(k)[1]
    # The scale goes on q (N x d values) rather than on the scores (N x M), and k stays
    # (B, h, M, d): the matmul reads it transposed, which saves a transposed copy of the keys.
    q = ops.transpose(ops.reshape(q * (1.0 / math.sqrt(head_dim)), (batch, n, num_heads, head_dim)), (0, 2, 1, 3))
    k = ops.transpose(ops.reshape(k, (batch, m, num_heads, head_dim)), (0, 2, 1, 3))  # (B, h, M, d)
    v = ops.transpose(ops.reshape(v, (batch, m, num_heads, head_dim)), (0, 2, 1, 3))  # (B, h, M, d)
    score_bytes = _product(batch, num_heads, n, m) * q.dtype.size
    if recompute.training():
        rows = _query_rows(batch, num_heads, m)
        out = _choose(score_bytes > LEAN_ATTENTION_BYTES, lambda: _attend_lean(q, k, v, rows), lambda: _attend(q, k, v))
    else:
        out = _choose(score_bytes > ATTENTION_SCORES_BYTES, lambda: _attend_per_item(q, k, v),
                      lambda: _attend(q, k, v))
    return ops.reshape(ops.transpose(out, (0, 2, 1, 3)), (batch, n, channels))  # (B, N, C)


def _choose(condition, if_true, if_false):
    """``if_true()`` or ``if_false()``: decided now when every size is known while tracing, else in the graph."""
    if isinstance(condition, bool):
        return if_true() if condition else if_false()
    return tf.cond(condition, if_true, if_false)


def _product(*sizes):
    """The product of sizes, a Python int when all are known, else an int64 tensor."""
    if all(isinstance(s, int) for s in sizes):
        return math.prod(sizes)
    return math.prod(tf.cast(s, tf.int64) for s in sizes)


def _query_rows(batch, heads: int, keys) -> int:
    """Queries per chunk of ``_attend_lean``: float32 scores (whatever q's type) of about ``QUERY_CHUNK_BYTES``."""
    if isinstance(batch, int) and isinstance(keys, int):
        return max(1, QUERY_CHUNK_BYTES // (batch * heads * keys * 4))
    return 512


def _attend(q, k, v):
    """softmax(q k^T) v over the last two axes; (..., N, d), (..., M, d) -> (..., N, d)."""
    scores = tf.linalg.matmul(q, k, transpose_b=True)  # (..., N, M)
    if q.dtype == tf.bfloat16:
        # bfloat16 has float32's range, so the softmax stays in it: a float32 copy of the scores (1 GiB for a
        # 512 px self-attention with guidance) took 0.9 of the 4.3 s of an sd-v1 UNet call on a CPU.
        return tf.linalg.matmul(tf.nn.softmax(scores, axis=-1), v)
    # float16 scores may round large logits coarsely: its softmax runs in float32.
    weights = ops.cast(ops.softmax(ops.cast(scores, "float32"), axis=-1), q.dtype)
    return tf.linalg.matmul(weights, v)


def _attend_per_item(q, k, v):
    """``_attend`` one batch item at a time (one item's scores in memory at once)."""
    return tf.map_fn(lambda qkv: _attend(*qkv), (q, k, v), fn_output_signature=q.dtype, parallel_iterations=1)


def _attend_lean(q, k, v, rows: int):
    """``_attend`` of (B, h, N, d) queries that keeps no (N, M) tensor for the backward pass.

    The forward pass runs ``rows`` queries at a time and keeps its output and each query's
    log-sum-exp of scores; the backward pass remakes each chunk's softmax from them
    (``p = exp(s - lse)``) and uses ``ds = p * (dp - rowsum(do * out))``, the softmax gradient.
    """
    n = q.shape[2] if q.shape[2] is not None else tf.shape(q)[2]  # static where known: the output keeps its shape

    def chunked(x):  # (B, h, N, d) -> (C, B, h, rows, d), N zero-padded to C * rows
        shape = tf.shape(x)
        chunks = (shape[2] + rows - 1) // rows
        x = tf.pad(x, [[0, 0], [0, 0], [0, chunks * rows - shape[2]], [0, 0]])
        return tf.transpose(tf.reshape(x, [shape[0], shape[1], chunks, rows, shape[3]]), (2, 0, 1, 3, 4))

    def unchunked(x):  # (C, B, h, rows, d) -> (B, h, N, d)
        shape = tf.shape(x)
        x = tf.reshape(tf.transpose(x, (1, 2, 0, 3, 4)), [shape[1], shape[2], shape[0] * rows, shape[4]])
        return x[:, :, :n]

    def sequential(fn, elems, dtypes):
        return tf.map_fn(fn, elems, fn_output_signature=dtypes, parallel_iterations=1)

    @tf.custom_gradient
    def attend(q, k, v):
        q_chunks = chunked(q)

        def forward(q_chunk):
            scores = tf.cast(tf.linalg.matmul(q_chunk, k, transpose_b=True), tf.float32)  # (B, h, rows, M)
            lse = tf.reduce_logsumexp(scores, axis=-1, keepdims=True)
            return tf.linalg.matmul(tf.cast(tf.exp(scores - lse), q.dtype), v), lse

        out, lse = sequential(forward, q_chunks, (q.dtype, tf.float32))  # (C, B, h, rows, d), (C, B, h, rows, 1)

        def gradient(d_out):
            do_chunks = chunked(d_out)
            delta = tf.reduce_sum(tf.cast(do_chunks, tf.float32) * tf.cast(out, tf.float32), -1, keepdims=True)

            def backward(chunk):
                q_chunk, do, lse_chunk, delta_chunk = chunk
                p = tf.exp(tf.cast(tf.linalg.matmul(q_chunk, k, transpose_b=True), tf.float32) - lse_chunk)
                dp = tf.cast(tf.linalg.matmul(do, v, transpose_b=True), tf.float32)  # (B, h, rows, M)
                ds = tf.cast(p * (dp - delta_chunk), q.dtype)
                dv = tf.linalg.matmul(tf.cast(p, q.dtype), do, transpose_a=True)  # (B, h, M, d)
                return tf.linalg.matmul(ds, k), tf.linalg.matmul(ds, q_chunk, transpose_a=True), dv

            dq, dk, dv = sequential(backward, (q_chunks, do_chunks, lse, delta), (q.dtype,) * 3)
            return unchunked(dq), tf.reduce_sum(dk, 0), tf.reduce_sum(dv, 0)

        return unchunked(out), gradient

    return attend(q, k, v)


class Attention(Composite):
    """Multi-head (cross-)attention with diffusers' ``to_q/to_k/to_v/to_out.0`` layout."""

    def __init__(self, channels: int, num_heads: int, qkv_bias: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.to_q = Dense(channels, use_bias=qkv_bias, name="to_q")
        self.to_k = Dense(channels, use_bias=qkv_bias, name="to_k")
        self.to_v = Dense(channels, use_bias=qkv_bias, name="to_v")
        self.to_out = Dense(channels, name="to_out.0")

    def call(self, x, context=None):
        context = x if context is None else context
        out = multi_head_attention(self.to_q(x), self.to_k(context), self.to_v(context), self.num_heads)
        return self.to_out(out)


class VAEAttentionBlock(Composite):
    """Single-head spatial self-attention of the VAE mid block (diffusers names)."""

    def __init__(self, channels: int, groups: int, epsilon: float, **kwargs):
        super().__init__(**kwargs)
        self.group_norm = group_norm(groups, epsilon, "group_norm")
        self.to_q = Dense(channels, name="to_q")
        self.to_k = Dense(channels, name="to_k")
        self.to_v = Dense(channels, name="to_v")
        self.to_out = Dense(channels, name="to_out.0")

    def call(self, x):
        batch, height, width, channels = ops.shape(x)[0], ops.shape(x)[1], ops.shape(x)[2], x.shape[-1]
        h = ops.reshape(self.group_norm(x), (batch, height * width, channels))  # (B, HW, C)
        h = multi_head_attention(self.to_q(h), self.to_k(h), self.to_v(h), 1)
        return x + ops.reshape(self.to_out(h), (batch, height, width, channels))


def gelu(x, approximate: bool):
    return ops.gelu(x, approximate=approximate)


class GEGLUFeedForward(Composite):
    """Gated-GELU MLP of the SD transformer block (``ff.net.0.proj`` and ``ff.net.2``)."""

    def __init__(self, channels: int, approximate_gelu: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.inner = 4 * channels
        self.approximate_gelu = approximate_gelu
        self.proj = Dense(2 * self.inner, name="net.0.proj")
        self.out = Dense(channels, name="net.2")

    def call(self, x):
        h = self.proj(x)  # (B, N, 2 * inner)
        hidden, gate = h[..., : self.inner], h[..., self.inner :]
        return self.out(hidden * gelu(gate, self.approximate_gelu))


class BasicTransformerBlock(Composite):
    """Self-attention, cross-attention to the prompt, GEGLU MLP; pre-LayerNorm residuals."""

    def __init__(self, channels: int, num_heads: int, approximate_gelu: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.norm1 = keras.layers.LayerNormalization(epsilon=1e-5, name="norm1")
        self.attn1 = Attention(channels, num_heads, name="attn1")
        self.norm2 = keras.layers.LayerNormalization(epsilon=1e-5, name="norm2")
        self.attn2 = Attention(channels, num_heads, name="attn2")
        self.norm3 = keras.layers.LayerNormalization(epsilon=1e-5, name="norm3")
        self.ff = GEGLUFeedForward(channels, approximate_gelu, name="ff")

    def call(self, x, context):
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(Composite):
    """GroupNorm, 1x1 conv in, transformer blocks over H*W tokens, 1x1 conv out, residual."""

    def __init__(
        self,
        channels: int,
        num_heads: int,
        depth: int,
        groups: int,
        epsilon: float,
        approximate_gelu: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.norm = group_norm(groups, epsilon, "norm")
        self.proj_in = conv(channels, 1, "proj_in")
        self.transformer_blocks = [
            BasicTransformerBlock(channels, num_heads, approximate_gelu, name=f"transformer_blocks.{i}")
            for i in range(depth)
        ]
        self.proj_out = conv(channels, 1, "proj_out")

    def call(self, x, context):
        batch, height, width, channels = ops.shape(x)[0], ops.shape(x)[1], ops.shape(x)[2], x.shape[-1]
        h = self.proj_in(self.norm(x))
        h = ops.reshape(h, (batch, height * width, channels))  # (B, HW, C)
        for block in self.transformer_blocks:
            h = block(h, context)
        h = ops.reshape(h, (batch, height, width, channels))
        return x + self.proj_out(h)


class Downsample(Composite):
    """Stride-2 3x3 convolution.

    Args:
        channels: output channels.
        asymmetric: pad only bottom/right by one (VAE), instead of one on every side (UNet).
    """

    def __init__(self, channels: int, asymmetric: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.asymmetric = asymmetric
        self.conv = conv(channels, 3, "conv", strides=2)

    def call(self, x):
        return self.conv(pad(x, 0, 1) if self.asymmetric else pad(x, 1))


class Upsample(Composite):
    """Nearest-neighbour 2x upsampling followed by a 3x3 convolution."""

    def __init__(self, channels: int, **kwargs):
        super().__init__(**kwargs)
        self.conv = same_conv(channels, "conv")

    def call(self, x):
        return self.conv(nearest_upsample(x))


def nearest_upsample(x):
    """(B, H, W, C) -> (B, 2H, 2W, C), each pixel repeated 2x2.

    One broadcast writes the output once (two ``repeat``s would write it twice).
    """
    batch, height, width, channels = ops.shape(x)[0], ops.shape(x)[1], ops.shape(x)[2], x.shape[-1]
    x = ops.broadcast_to(x[:, :, None, :, None, :], (batch, height, 2, width, 2, channels))
    return ops.reshape(x, (batch, 2 * height, 2 * width, channels))
