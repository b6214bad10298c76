"""Which device computes: the one place that asks TensorFlow whether a GPU or TPU is there."""

from __future__ import annotations

import functools

import tensorflow as tf


@functools.lru_cache(maxsize=1)
def accelerator_visible() -> bool:
    """A GPU or TPU is visible to TensorFlow (checked once per process).

    GPUs are counted as physical devices, which does not start the GPU runtime (memory growth can
    still be set after this), so a GPU hidden with ``tf.config.set_visible_devices`` still counts;
    TPUs only appear as logical devices once their system is initialised.
    """
    return bool(tf.config.list_physical_devices("GPU") or tf.config.list_logical_devices("TPU"))
