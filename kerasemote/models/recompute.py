"""Gradient checkpointing: blocks that keep only their inputs and recompute their activations in the backward pass.

Inside ``recompute_scope(trained)`` every ``checkpointed(layer, *args)`` call (each UNet resnet and
spatial transformer, each CLIP encoder layer) is wrapped in a ``tf.custom_gradient`` whose forward
pass keeps nothing but the block's inputs; its gradient function runs the block again under a
fresh tape and differentiates it. Outside a scope the call is plain, so inference pays nothing.

Every ``recompute_scope``, recomputing or not, also marks a training forward pass (``training()``):
large attentions then keep only their inputs and recompute their scores in the backward pass
(``kerasemote.models.layers``), a memory saving that costs little time and so is always on.

Why not ``tf.recompute_grad``: its gradient function differentiates the recomputed block with
respect to every variable the block reads. For LoRA and textual inversion almost all of those
are frozen, so it would compute (and hold) a weight gradient for every frozen convolution and
projection of the UNet, the work a frozen model is meant to skip. Here only the variables
named by the scope (what the strategy trains) get gradients; the others get ``None``.

Example:
    >>> with recompute_scope(lora_variables(model)):  # doctest: +SKIP
    ...     prediction = model.unet(x_t, t, context)   # inside a GradientTape
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Callable, Iterable, Iterator

import keras
import tensorflow as tf

_state = threading.local()


def _refs(variables: Iterable[Any]) -> frozenset:
    """References of the ``tf.Variable``s behind ``variables`` (and of each replica's copy)."""
    refs = set()
    for variable in variables:
        if isinstance(variable, keras.Variable):
            variable = variable.value  # the tf.Variable under a Keras variable
        refs.add(variable.ref())
        # A distributed variable is read through its per-replica components inside a replica.
        for component in getattr(variable, "values", None) or ():
            refs.add(component.ref())
    return frozenset(refs)


@contextlib.contextmanager
def recompute_scope(trained: Iterable[Any] | None) -> Iterator[None]:
    """A training forward pass; blocks recompute their activations in the backward pass unless ``trained`` is None.

    Args:
        trained: the variables that get gradients (the strategy's trainable variables); every
            other variable a block reads is treated as frozen. None: blocks run plainly.
    """
    with _training_pass(None if trained is None else _refs(trained)):
        yield


def _recomputing() -> contextlib.AbstractContextManager:
    """A block's recomputation: a training forward pass whose inner blocks run plainly."""
    return _training_pass(None)


@contextlib.contextmanager
def _training_pass(trained: frozenset | None) -> Iterator[None]:
    """This thread's calls are a training forward pass recomputing the blocks of ``trained`` (None: none)."""
    previous = getattr(_state, "trained", None), getattr(_state, "training", False)
    _state.trained, _state.training = trained, True
    try:
        yield
    finally:
        _state.trained, _state.training = previous


def active() -> bool:
    """Whether calls on this thread are inside a ``recompute_scope`` that recomputes."""
    return getattr(_state, "trained", None) is not None


def training() -> bool:
    """Whether calls on this thread are part of a training forward pass (inside any ``recompute_scope``)."""
    return getattr(_state, "training", False)


def checkpointed(layer: Callable, *args: Any) -> Any:
    """``layer(*args)``; inside a ``recompute_scope`` its activations are recomputed for the gradient.

    Args:
        layer: a built layer (or function) of tensors; it must create no variables when called.
        *args: its tensor arguments (their gradients are returned).
    """
    trained = getattr(_state, "trained", None)
    if trained is None:
        return layer(*args)
    return _recomputed(layer, trained)(*args)


def _after(gradient: tf.Tensor, x: tf.Tensor) -> tf.Tensor:
    """``x`` plus a zero computed from ``gradient``.

    The data dependency keeps the recomputation behind the incoming gradient: without it
    the graph executor (or XLA, which ignores control dependencies) may run it straight
    after the forward pass, or merge it with the forward ops, and nothing is saved.
    """
    first = tf.reshape(gradient, [-1])[:1]  # (1,)
    zero = tf.reduce_sum(tf.cast(first, tf.float32)) * 0.0
    return x + tf.cast(zero, x.dtype)


def _recomputed(layer: Callable, trained: frozenset) -> Callable:
    @tf.custom_gradient
    def block(*args):
        outputs = layer(*args)

        def gradient(*output_grads, variables=None):
            variables = list(variables or ())
            watched = [v for v in variables if v.ref() in trained]
            with _recomputing(), tf.GradientTape(watch_accessed_variables=False) as tape:
                again = [_after(output_grads[0], a) if a.dtype.is_floating else a for a in args]
                tape.watch([a for a in again if a.dtype.is_floating])
                tape.watch(watched)
                recomputed = layer(*again)
            grads = tape.gradient(
                recomputed, again + watched, output_gradients=list(output_grads),
                unconnected_gradients=tf.UnconnectedGradients.ZERO,
            )
            input_grads = [g if a.dtype.is_floating else None for a, g in zip(args, grads)]
            by_ref = {v.ref(): g for v, g in zip(watched, grads[len(args):])}
            return input_grads, [by_ref.get(v.ref()) for v in variables]

        return outputs, gradient

    return block
