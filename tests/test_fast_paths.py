"""The faster forms of the building blocks compute what the plain forms compute."""

import numpy as np
import tensorflow as tf

from kerasemote.model import StableDiffusion
from kerasemote.models import layers
from kerasemote.models.layers import conv, multi_head_attention, nearest_upsample, pad, same_conv


def _random(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype("float32")


def test_same_conv_equals_explicit_padding_then_valid_conv():
    x = _random(2, 5, 7, 3)
    padded, same = conv(4, 3, "a"), same_conv(4, "b")
    padded.build((None, None, None, 3))
    same.build((None, None, None, 3))
    same.set_weights([_random(3, 3, 3, 4, seed=1), _random(4, seed=2)])
    padded.set_weights(same.get_weights())
    np.testing.assert_allclose(same(x), padded(pad(x, 1)), atol=1e-5)


def test_small_convolutions_run_as_a_patch_matmul_with_the_convolutions_result(monkeypatch):
    from kerasemote.models import lora_layers

    monkeypatch.setattr(lora_layers, "accelerator_visible", lambda: False)  # as on a machine without a GPU
    original = lora_layers.patch_matmul
    for kernel, stride, padding, shape in ((3, 1, "same", (2, 4, 4, 6)), (3, 1, "valid", (1, 6, 5, 6)),
                                           (3, 2, "valid", (2, 9, 9, 6)), (1, 1, "valid", (2, 3, 3, 6))):
        layer = lora_layers.Conv2D(5, kernel, strides=stride, padding=padding)
        layer.build(shape)
        layer.kernel.assign(_random(kernel, kernel, 6, 5, seed=1))
        x = _random(*shape, seed=2)
        expected = tf.nn.conv2d(x, layer.kernel, stride, padding.upper()) + layer.bias
        calls = []
        monkeypatch.setattr(lora_layers, "patch_matmul", lambda *a: calls.append(1) or original(*a))
        np.testing.assert_allclose(layer(x), expected, atol=1e-5)
        assert calls, (kernel, stride, padding)
        # A graph traced for any batch size decides when it runs: 2 images a matmul, 40 a convolution.
        traced = tf.function(layer, input_signature=[tf.TensorSpec((None, *shape[1:]))])
        for batch in (2, 40):
            np.testing.assert_allclose(traced(np.concatenate([x] * batch)[:batch]),
                                       np.concatenate([expected] * batch)[:batch], atol=1e-5)
    big = lora_layers.Conv2D(5, 3, padding="same")
    calls = []
    monkeypatch.setattr(lora_layers, "patch_matmul", lambda *a: calls.append(1))
    big(_random(2, 16, 16, 6))  # 512 output positions: a convolution
    assert not calls


def test_small_convolutions_stay_convolutions_in_a_training_pass(monkeypatch):
    from kerasemote.models import lora_layers, recompute

    monkeypatch.setattr(lora_layers, "accelerator_visible", lambda: False)
    layer = lora_layers.Conv2D(5, 3, padding="same")
    layer.build((2, 4, 4, 6))
    calls = []
    monkeypatch.setattr(lora_layers, "patch_matmul", lambda *a: calls.append(1))
    monkeypatch.setattr(recompute, "training", lambda: True)
    layer(_random(2, 4, 4, 6))
    assert not calls


def test_nearest_upsample_repeats_each_pixel_two_by_two_in_a_traced_graph():
    x = _random(2, 3, 5, 4)
    traced = tf.function(nearest_upsample, input_signature=[tf.TensorSpec((None, None, None, 4))])
    expected = np.repeat(np.repeat(x, 2, axis=1), 2, axis=2)
    np.testing.assert_array_equal(traced(x), expected)


def test_multi_head_attention_equals_per_head_softmax_attention():
    q, k, v = _random(2, 6, 8, seed=1), _random(2, 5, 8, seed=2), _random(2, 5, 8, seed=3)
    heads, d = 2, 4
    expected = np.zeros_like(q)
    for h in range(heads):
        cols = slice(h * d, (h + 1) * d)
        scores = q[..., cols] @ k[..., cols].transpose(0, 2, 1) / np.sqrt(d)
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        expected[..., cols] = (weights / weights.sum(-1, keepdims=True)) @ v[..., cols]
    np.testing.assert_allclose(multi_head_attention(q, k, v, heads), expected, atol=1e-5)


def test_bfloat16_attention_keeps_its_scores_in_bfloat16_and_follows_float32():
    q, k, v = _random(2, 64, 8, seed=1), _random(2, 64, 8, seed=2), _random(2, 64, 8, seed=3)
    expected = multi_head_attention(q, k, v, 2)
    traced = tf.function(lambda q, k, v: multi_head_attention(q, k, v, 2))
    low = [tf.cast(x, tf.bfloat16) for x in (q, k, v)]
    got = traced(*low)
    # No float32 copy of the (B, h, N, M) scores: at 512 px those are 1 GiB that a cast writes and reads back.
    graph = traced.get_concrete_function(*low).graph
    assert not [op for op in graph.get_operations() if op.outputs and op.outputs[0].dtype == tf.float32]
    assert got.dtype == tf.bfloat16
    np.testing.assert_allclose(tf.cast(got, tf.float32), expected, atol=0.05)


def test_attention_one_batch_item_at_a_time_equals_all_at_once(monkeypatch):
    q, k, v = _random(3, 6, 8, seed=1), _random(3, 5, 8, seed=2), _random(3, 5, 8, seed=3)
    whole = multi_head_attention(q, k, v, 2)
    monkeypatch.setattr(layers, "ATTENTION_SCORES_BYTES", 0)
    calls = []
    monkeypatch.setattr(layers, "_attend_per_item", lambda *a, f=layers._attend_per_item: calls.append(1) or f(*a))
    np.testing.assert_allclose(multi_head_attention(q, k, v, 2), whole, atol=1e-6)
    unknown = tf.TensorSpec((None, None, 8))  # sizes unknown while tracing: decided in the graph
    traced = tf.function(lambda q, k, v: multi_head_attention(q, k, v, 2), input_signature=[unknown] * 3)
    np.testing.assert_allclose(traced(q, k, v), whole, atol=1e-6)
    assert len(calls) == 2


def test_encode_text_encodes_repeated_prompts_once_and_keeps_their_order(monkeypatch):
    model = StableDiffusion.random("tiny", seed=0)
    rows = []
    monkeypatch.setattr(StableDiffusion, "_compiled",
                        staticmethod(lambda part: lambda ids: rows.append(len(ids)) or part(ids)))
    batch = model.encode_text(["a cat", "a dog", "a cat", "a cat"])
    assert rows == [2]
    np.testing.assert_array_equal(batch[0], batch[2])
    np.testing.assert_array_equal(batch[0], batch[3])
    np.testing.assert_allclose(batch[1], model.encode_text(["a dog"])[0], atol=1e-6)
    assert not np.allclose(batch[0], batch[1])
