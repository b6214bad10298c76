"""Memory: gradient checkpointing gives the plain gradients; models load tensor by tensor."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf
from small_model import SMALL

from kerasemote.model import StableDiffusion
from kerasemote.models import recompute
from kerasemote.training import LoRA, TextualInversion, TrainConfig
from kerasemote.training.step import TrainStep

SIZE = 16  # the small model's VAE downsamples 2x: 8x8 latents


def step_gradients(model, strategy, checkpointing: bool) -> tuple[float, list[np.ndarray]]:
    """Loss and gradients of one micro-batch of two images, as the training loop computes them."""
    import keras

    variables = strategy.trainable_variables(model)
    config = TrainConfig(steps=1, batch_size=2, gradient_checkpointing=checkpointing, progress=False)
    ids = model.tokenize(["a photo of <e>" if isinstance(strategy, TextualInversion) else "a happy face"] * 2)
    size = SIZE // model.config.vae_downsample
    tables = {"latent_shape": [size, size, model.config.latent_channels]}
    if strategy.trains_text_encoder:
        tables["ids"] = tf.constant(ids)
    else:
        tables["contexts"] = tf.constant(model.text_encoder(ids).numpy())
    pixels = np.random.default_rng(1).uniform(-1, 1, (2, SIZE, SIZE, 3)).astype("float32")
    stepper = TrainStep(model, strategy, keras.optimizers.SGD(), variables, config, tf.distribute.get_strategy(),
                        tables)
    plan = stepper.with_draws({"step": tf.constant(3, tf.int64), "pixels": tf.constant(pixels),
                               "caption": tf.constant([0, 1])})
    loss, grads = stepper.grads(plan, tf.range(2), 2.0)
    return float(loss), [g.numpy() for g in grads]


def assert_same_gradients(plain, checkpointed) -> None:
    (loss, grads), (loss_ckpt, grads_ckpt) = plain, checkpointed
    assert loss_ckpt == pytest.approx(loss, rel=1e-6)
    assert sum(float(np.abs(g).max()) > 0 for g in grads) == len(grads)  # every trained variable gets a gradient
    for g, g_ckpt in zip(grads, grads_ckpt):
        np.testing.assert_allclose(g_ckpt, g, rtol=1e-5, atol=1e-5 * float(np.abs(g).max()))


def test_gradient_checkpointing_gives_the_lora_gradients_of_the_plain_step():
    model = StableDiffusion.random(SMALL, seed=0)
    strategy = LoRA(rank=2, targets=["attention", "convs", "text"])
    strategy.prepare(model)
    rng = np.random.default_rng(2)
    for variable in strategy.trainable_variables(model):  # B starts at zero, which would zero A's gradient
        variable.assign(rng.normal(0, 0.1, variable.shape).astype("float32"))
    assert strategy.trains_text_encoder
    assert_same_gradients(step_gradients(model, strategy, False), step_gradients(model, strategy, True))


@pytest.mark.slow  # ~20 s; the LoRA test above covers the same paths (text-encoder and UNet inputs) in the fast suite
def test_gradient_checkpointing_gives_the_textual_inversion_gradients_of_the_plain_step():
    model = StableDiffusion.random(SMALL, seed=0)
    strategy = TextualInversion({"emoji": "<e>"}, init="face")
    strategy.prepare(model)
    assert_same_gradients(step_gradients(model, strategy, False), step_gradients(model, strategy, True))


def test_recomputed_blocks_run_again_in_the_backward_pass_and_only_there():
    calls = []

    def block(x):
        calls.append(tf.executing_eagerly())
        return tf.sin(x) * 3.0

    x = tf.constant([0.5, 1.0])
    with recompute.recompute_scope([]):
        assert recompute.active()
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = recompute.checkpointed(block, x)
        assert len(calls) == 1
        grad = tape.gradient(y, x)
    assert len(calls) == 2
    np.testing.assert_allclose(grad.numpy(), 3.0 * np.cos(x.numpy()), rtol=1e-6)
    assert not recompute.active()
    recompute.checkpointed(block, x)
    assert len(calls) == 3  # outside a scope: one plain call


# ---------------------------------------------------------------------- lean attention and factored LoRA


def attention_and_gradients(q, k, v, heads: int, lean: bool, monkeypatch) -> list[np.ndarray]:
    """Output of ``multi_head_attention`` in a training forward pass and the gradients of q, k, v."""
    from kerasemote.models import layers

    calls = []
    monkeypatch.setattr(layers, "LEAN_ATTENTION_BYTES", 0 if lean else 2**62)
    monkeypatch.setattr(layers, "QUERY_CHUNK_BYTES", 3 * 2 * heads * k.shape[1] * 4)  # 3 queries per chunk
    monkeypatch.setattr(layers, "_attend_lean", lambda *a, f=layers._attend_lean: calls.append(1) or f(*a))
    q, k, v = (tf.constant(x) for x in (q, k, v))
    with tf.GradientTape() as tape:
        tape.watch([q, k, v])
        with recompute.recompute_scope(None):
            out = layers.multi_head_attention(q, k, v, heads)
        loss = tf.reduce_sum(out * tf.sin(out))  # a gradient that differs per output element
    assert len(calls) == int(lean)
    return [out.numpy()] + [g.numpy() for g in tape.gradient(loss, [q, k, v])]


def test_lean_training_attention_gives_the_plain_outputs_and_gradients(monkeypatch):
    rng = np.random.default_rng(0)
    # 7 queries: three chunks of three, the last one padded.
    q, k, v = (rng.standard_normal(shape).astype("float32") for shape in [(2, 7, 8), (2, 5, 8), (2, 5, 8)])
    plain = attention_and_gradients(q, k, v, 2, False, monkeypatch)
    lean = attention_and_gradients(q, k, v, 2, True, monkeypatch)
    for a, b in zip(plain, lean):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5)


def test_lean_training_attention_in_float16_follows_the_float32_result(monkeypatch):
    """Mixed precision (a GPU's float16 compute): the lean path keeps its scores in float32 and returns
    float16 outputs and gradients close to the float32 ones."""
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal(shape).astype("float32") for shape in [(2, 7, 8), (2, 5, 8), (2, 5, 8)])
    reference = attention_and_gradients(q, k, v, 2, False, monkeypatch)
    half = attention_and_gradients(*(x.astype("float16") for x in (q, k, v)), 2, True, monkeypatch)
    for a, b in zip(reference, half):
        assert b.dtype == np.float16
        np.testing.assert_allclose(b.astype("float32"), a, rtol=2e-2, atol=2e-2)


def lora_model(targets) -> tuple[StableDiffusion, list]:
    """A small model with LoRA on ``targets`` and non-zero A and B (B starts at zero)."""
    model = StableDiffusion.random(SMALL, seed=0)
    strategy = LoRA(rank=2, alpha=3.0, targets=targets)
    strategy.prepare(model)
    rng = np.random.default_rng(2)
    for variable in strategy.trainable_variables(model):
        variable.assign(rng.normal(0, 0.2, variable.shape).astype("float32"))
    return model, strategy.trainable_variables(model)


def test_lora_layers_multiply_by_the_factors_with_keras_merged_outputs_and_gradients():
    import keras

    from kerasemote.lora_files import lora_layers

    model, _ = lora_model(["attention", "convs", "text"])
    layers = lora_layers(model, ["attention", "convs", "text"])
    dense = layers["unet/down_blocks.0/attentions.0/transformer_blocks.0/attn1/to_q"]
    conv = next(layer for path, layer in layers.items() if path.endswith("resnets.0/conv1"))
    text = next(layer for path, layer in layers.items() if path.endswith("self_attn/q_proj"))
    rng = np.random.default_rng(3)
    for layer, x, base in ((dense, rng.standard_normal((2, 5, dense._kernel.shape[0])), keras.layers.Dense),
                           (conv, rng.standard_normal((2, 6, 6, conv._kernel.shape[2])), keras.layers.Conv2D),
                           (text, rng.standard_normal((2, 5, text._kernel.shape[0])), keras.layers.Dense)):
        x = tf.constant(x.astype("float32"))
        results = []
        for call in (layer.call, lambda x, layer=layer, base=base: base.call(layer, x)):  # ours, Keras' merged kernel
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = call(x)
                loss = tf.reduce_sum(y * tf.cos(y))
            grads = tape.gradient(loss, [x, layer._kernel.value, layer.lora_kernel_a.value, layer.lora_kernel_b.value])
            results.append([y.numpy()] + [g.numpy() for g in grads])
        for ours, merged in zip(*results):
            np.testing.assert_allclose(ours, merged, rtol=1e-5, atol=1e-5 * float(np.abs(merged).max()))


@pytest.mark.slow  # ~20 s; tests/test_training.py checks the same on the LoRA file a training run writes
def test_a_saved_lora_file_applied_to_a_fresh_model_gives_the_training_models_outputs(tmp_path):
    from kerasemote.lora_files import apply_lora, lora_from_model, read_lora, save_lora

    model, variables = lora_model(["attention", "convs"])
    lora = read_lora(save_lora(str(tmp_path / "lora.npz"), lora_from_model(model, ["attention", "convs"])))
    assert sorted(lora.arrays) == sorted(v.path for v in variables)  # keyed by Keras' variable paths
    assert all(p.endswith(("/lora_kernel_a", "/lora_kernel_b")) for p in lora.arrays)
    merged = StableDiffusion.random(SMALL, seed=0)
    apply_lora(merged, lora)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 8, 8, model.config.latent_channels)).astype("float32")
    context = rng.standard_normal((1, 77, model.config.text_width)).astype("float32")
    t = tf.constant([500])
    np.testing.assert_allclose(model.unet(x, t, context), merged.unet(x, t, context), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------- loading tensor by tensor


class Tracked(dict):
    """``arrays`` wrapped so that each array read stays counted while it is alive; ``most`` is the peak count."""

    def __init__(self, arrays):
        import weakref

        from kerasemote.lazy import LazyArray

        self.alive, self.most = 0, 0

        def read(lazy):
            array = np.asarray(lazy)
            self.alive += 1
            self.most = max(self.most, self.alive)
            weakref.finalize(array, self._release)
            return array

        super().__init__({key: LazyArray(a.shape, a.dtype, lambda a=a: read(a)) for key, a in arrays.items()})

    def _release(self):
        self.alive -= 1


@pytest.fixture(scope="module")
def saved():
    return StableDiffusion.random("tiny", seed=0)


def assert_same_unet(unet, saved) -> None:
    from kerasemote.weights import model_arrays

    loaded = model_arrays(unet)
    for path, value in model_arrays(saved.unet).items():
        np.testing.assert_array_equal(loaded[path], value)


def test_a_model_directory_part_loads_one_tensor_at_a_time(saved, tmp_path):
    from kerasemote.model_dir import ModelFiles
    from kerasemote.models.unet import UNet
    from kerasemote.weights import assign_arrays

    saved.save(str(tmp_path / "m"))
    unet = UNet(saved.config).build_with_dummy()
    with ModelFiles(str(tmp_path / "m")).lazy("unet") as arrays:
        tracked = Tracked(arrays)
        assign_arrays(unet, tracked, "unet.npz")
    assert len(tracked) > 50 and tracked.most == 1
    assert_same_unet(unet, saved)


def test_a_single_file_converts_one_tensor_at_a_time(saved, tmp_path):
    from kerasemote.convert.original import convert_single_file, export_single_file
    from kerasemote.lazy import LazyArray
    from kerasemote.models.unet import UNet
    from kerasemote.weights import assign_arrays

    export_single_file({"unet": saved.unet}, saved.config, str(tmp_path / "unet.safetensors"))
    _, arrays = convert_single_file(str(tmp_path / "unet.safetensors"), config=saved.config, parts=["unet"], lazy=True)
    assert all(isinstance(a, LazyArray) for a in arrays["unet"].values())  # nothing read yet
    unet = UNet(saved.config).build_with_dummy()
    tracked = Tracked(arrays["unet"])
    assign_arrays(unet, tracked, "unet.safetensors")
    assert len(tracked) > 50 and tracked.most == 1
    assert_same_unet(unet, saved)


def test_a_run_resumes_with_gradient_checkpointing_switched_and_from_before_the_setting_existed():
    from kerasemote.training import TextualInversion, TrainConfig
    from kerasemote.training.resume import _check_resumable

    strategy = TextualInversion({"happy": "<h>"})
    saved = json.loads(json.dumps(TrainConfig(steps=4).to_dict()))
    manifest = {"strategy": strategy.name, "settings": json.loads(json.dumps(strategy.settings())),
                "train_config": saved}
    _check_resumable("run", manifest, strategy, TrainConfig(steps=8, gradient_checkpointing=True))
    del saved["gradient_checkpointing"]  # a checkpoint written before the option existed
    _check_resumable("run", manifest, strategy, TrainConfig(steps=8, gradient_checkpointing=True))
    with pytest.raises(ValueError, match="train_config.learning_rate"):  # other settings still must match
        _check_resumable("run", manifest, strategy, TrainConfig(steps=8, learning_rate=0.5))
