"""The optimizer of a run: learning-rate schedule, AdamW / Adafactor, EMA and loss scaling."""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from kerasemote.training.config import TrainConfig


class LearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to ``peak`` over ``warmup`` steps, then constant or cosine to zero at ``total``.

    ``start`` is the optimizer step the schedule begins at: a warm start that continues a
    model's step count (the optimizer's iterations start there) still gets its warm-up and
    its whole cosine, from ``start`` to ``total``.

    Example:
        >>> lr = LearningRate(1e-4, total=3000, warmup=100, kind="cosine", start=2000)
        >>> round(float(lr(2000)), 8), round(float(lr(2100)), 8), float(lr(3000))
        (1e-06, 0.0001, 0.0)
    """

    def __init__(self, peak: float, total: int, warmup: int = 0, kind: str = "constant", start: int = 0):
        self.peak, self.total, self.warmup, self.kind = float(peak), int(total), int(warmup), kind
        self.start = int(start)

    def __call__(self, step):
        step = tf.cast(step, tf.float32) - float(self.start)
        warm = tf.clip_by_value((step + 1.0) / float(max(1, self.warmup)), 0.0, 1.0) if self.warmup else 1.0
        if self.kind == "constant":
            return self.peak * warm
        span = float(max(1, self.total - self.start - self.warmup))
        progress = tf.clip_by_value((step - self.warmup) / span, 0.0, 1.0)
        return self.peak * warm * 0.5 * (1.0 + tf.cos(math.pi * progress))

    def get_config(self) -> dict[str, Any]:
        return {"peak": self.peak, "total": self.total, "warmup": self.warmup, "kind": self.kind,
                "start": self.start}


def make_optimizer(config: TrainConfig, learning_rate: float, mixed_float16: bool,
                   start: int = 0) -> keras.optimizers.Optimizer:
    """AdamW or Adafactor with the config's schedule (begun at step ``start``), EMA and (float16) loss scaling."""
    schedule = LearningRate(learning_rate, config.steps, config.warmup_steps, config.lr_schedule, start)
    kwargs = dict(
        learning_rate=schedule,
        weight_decay=config.weight_decay or None,
        use_ema=config.ema_decay is not None,
        ema_momentum=config.ema_decay or 0.99,
        name="optimizer",
    )
    if config.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(**kwargs)
    else:
        optimizer = keras.optimizers.Adafactor(**kwargs)
    return keras.optimizers.LossScaleOptimizer(optimizer, name="loss_scale") if mixed_float16 else optimizer


def ema_arrays(optimizer, variables) -> dict[str, np.ndarray] | None:
    """The optimizer's moving averages of ``variables`` by path, or None without EMA."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    if not inner.use_ema:
        return None
    # Keras keeps one average per trained variable, in the same order.
    averages = inner._model_variables_moving_average
    return {v.path: keras.ops.convert_to_numpy(a) for v, a in zip(variables, averages)}
