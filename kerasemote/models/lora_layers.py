"""Keras ``Dense`` and ``Conv2D`` whose LoRA forward pass multiplies by the two factors.

Keras' ``enable_lora`` makes a layer's kernel ``W + s * A @ B`` (``s = alpha / rank``) and
multiplies the input by that merged kernel on every call. A training step then keeps a merged
copy of every adapted kernel for the backward pass and makes a kernel-sized gradient for it,
only to reduce that to the rank-r gradients of A and B. These subclasses compute the same
``x W + s * (x A) B`` (a convolution: ``conv(x, W) + s * conv(x, A) B``) and so keep only the
small ``x A`` beyond what the frozen layer keeps.

Everything else is Keras' own: ``enable_lora`` adds the same ``lora_kernel_a`` and
``lora_kernel_b`` variables (their paths, LoRA files and merged saves do not change), and a
layer without LoRA runs Keras' ``call``. Inside ``skip_init.skip_random_init()`` (a part built
to be loaded) their variables start at zeros instead of random draws. A small convolution in an inference pass on
a CPU runs as a matmul over its input patches (``SMALL_CONV_POSITIONS``), with or without LoRA.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from kerasemote.models import recompute, skip_init
from kerasemote.models.devices import accelerator_visible

SMALL_CONV_POSITIONS = 256
"""A convolution with at most this many output positions (batch x height x width), in an inference pass on a
CPU (``recompute.training()`` false: a training step's convolutions stay convolutions), runs as one matmul over
its input patches. oneDNN reorders a convolution's kernel into its blocked layout on every call (TensorFlow keeps
the reordered kernel only for constant kernels); at sd-v1's 4x4 and 8x8 levels that reorder costs more than the
convolution itself (a 3x3 2560 -> 1280 convolution of a guided 256 px batch: 31 ms as a convolution, 7 ms as a
matmul in bfloat16; 61 and 13 ms in float32, on 2 CPU cores). From about 512 positions on, the convolution is
faster."""


class Dense(keras.layers.Dense):
    """``keras.layers.Dense``; with LoRA enabled, ``x W + s (x A) B`` instead of ``x (W + s A B)``."""

    def add_weight(self, *args, initializer=None, **kwargs):
        return super().add_weight(*args, initializer=skip_init.initializer(initializer), **kwargs)

    def call(self, inputs, training=None):
        if not self.lora_enabled or self.quantization_mode is not None:
            return super().call(inputs, training=training)
        scale = self.lora_alpha / self.lora_rank
        low_rank = ops.matmul(ops.matmul(inputs, self.lora_kernel_a), self.lora_kernel_b)  # (..., out)
        x = ops.add(ops.matmul(inputs, self._kernel), ops.multiply(ops.cast(scale, low_rank.dtype), low_rank))
        if self.bias is not None:
            x = ops.add(x, self.bias)
        if self.activation is not None:
            x = self.activation(x)
        return x


class Conv2D(keras.layers.Conv2D):
    """``keras.layers.Conv2D``; with LoRA enabled, ``conv(x, W) + s conv(x, A) B`` (channels last); small ones
    on a CPU as a matmul over patches (``SMALL_CONV_POSITIONS``)."""

    def add_weight(self, *args, initializer=None, **kwargs):
        return super().add_weight(*args, initializer=skip_init.initializer(initializer), **kwargs)

    def convolution_op(self, inputs, kernel):
        positions = self._patch_positions(inputs)
        if positions is None:
            return super().convolution_op(inputs, kernel)

        def as_matmul():
            return patch_matmul(inputs, kernel, self.strides[0], self.padding)

        if isinstance(positions, int):
            return as_matmul() if positions <= SMALL_CONV_POSITIONS else super().convolution_op(inputs, kernel)
        # A batch of unknown size (a graph traced for any batch): decided when it runs.
        return tf.cond(positions <= SMALL_CONV_POSITIONS, as_matmul, lambda: super(Conv2D, self).convolution_op(
            inputs, kernel))

    def _patch_positions(self, inputs):
        """Output positions (batch x height x width; a tensor when the batch is unknown) where a patch matmul may
        replace the convolution, or None where it may not: a training pass, a GPU or TPU, unknown sides."""
        if (self.data_format != "channels_last" or self.groups != 1 or tuple(self.dilation_rate) != (1, 1)
                or self.strides[0] != self.strides[1] or recompute.training() or accelerator_visible()):
            return None
        batch, height, width = inputs.shape[:3]
        if height is None or width is None:
            return None
        if self.padding == "valid":
            height, width = ((n - k) // self.strides[0] + 1 for n, k in zip((height, width), self.kernel_size))
        else:
            height, width = (-(-n // self.strides[0]) for n in (height, width))
        return (batch if batch is not None else tf.shape(inputs)[0]) * height * width

    def call(self, inputs):
        if not self.lora_enabled or self.data_format != "channels_last" or self.groups != 1:
            return super().call(inputs)
        scale = self.lora_alpha / self.lora_rank
        # A is (kh, kw, in, r) and B (r, out): the rank-r convolution, then a 1x1 mix to out.
        low_rank = ops.matmul(self.convolution_op(inputs, self.lora_kernel_a), self.lora_kernel_b)  # (B, H, W, out)
        outputs = ops.add(self.convolution_op(inputs, self._kernel),
                          ops.multiply(ops.cast(scale, low_rank.dtype), low_rank))
        if self.use_bias:
            outputs = ops.add(outputs, ops.reshape(self.bias, (1, 1, 1, self.filters)))
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs


def patch_matmul(inputs, kernel, stride: int, padding: str):
    """``conv2d(inputs, kernel)`` (channels last, no dilation) as one matmul of each output position's input
    patch (kh * kw * in values, in the kernel's own order) with the kernel read as a (kh * kw * in, out) matrix."""
    kh, kw, channels, filters = kernel.shape
    patches = tf.image.extract_patches(inputs, [1, kh, kw, 1], [1, stride, stride, 1], [1, 1, 1, 1],
                                       padding.upper())  # (B, Ho, Wo, kh * kw * in)
    shape = tf.shape(patches)
    out = tf.matmul(tf.reshape(patches, (-1, kh * kw * channels)), tf.reshape(kernel, (kh * kw * channels, filters)))
    return tf.reshape(out, tf.concat([shape[:3], [filters]], 0))  # (B, Ho, Wo, out)


