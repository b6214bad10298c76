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
to be loaded) their variables start at zeros instead of random draws.
"""

from __future__ import annotations

import keras
from keras import ops

from kerasemote.models import skip_init


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
    """``keras.layers.Conv2D``; with LoRA enabled, ``conv(x, W) + s conv(x, A) B`` (channels last)."""

    def add_weight(self, *args, initializer=None, **kwargs):
        return super().add_weight(*args, initializer=skip_init.initializer(initializer), **kwargs)

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
