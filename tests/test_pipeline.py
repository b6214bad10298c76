"""Text to image on the tiny config: seeds, batching, guidance, samplers, image to image, saving."""

import json

import numpy as np
import pytest

from kerasemote import weights
from kerasemote.model import StableDiffusion

FAST = dict(steps=3, height=32, width=32, progress=False)


@pytest.fixture(scope="module")
def model():
    return StableDiffusion.random("tiny", seed=0)


def test_same_seed_same_image_and_other_seed_other_image(model):
    a = model.generate("a happy emoji", seed=7, **FAST)
    b = model.generate("a happy emoji", seed=7, **FAST)
    c = model.generate("a happy emoji", seed=8, **FAST)
    assert a.dtype == np.uint8 and a.shape == (1, 32, 32, 3)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).max() > 0


def test_batch_of_images_matches_images_made_one_by_one(model):
    latents = np.random.default_rng(0).standard_normal((2, 8, 8, 4)).astype("float32")
    both = model.generate(["a cat", "a dog"], init_latents=latents, return_latents=True, **FAST)
    first = model.generate("a cat", init_latents=latents[:1], return_latents=True, **FAST)
    np.testing.assert_allclose(both[:1], first, atol=1e-4)


@pytest.mark.parametrize("sampler", ["ddim", "euler", "dpm++"])
def test_every_sampler_generates(model, sampler):
    images = model.generate("a sad emoji", num_images=2, sampler=sampler, seed=1, **FAST)
    assert images.shape == (2, 32, 32, 3)


def test_negative_prompt_and_guidance_change_the_result(model):
    base = model.generate("a face", seed=3, return_latents=True, **FAST)
    negative = model.generate("a face", negative_prompt="angry", seed=3, return_latents=True, **FAST)
    unguided = model.generate("a face", guidance=1.0, seed=3, return_latents=True, **FAST)
    assert np.abs(base - negative).max() > 1e-5
    assert np.abs(base - unguided).max() > 1e-5


def test_context_input_equals_prompt_input(model):
    context = model.encode_text(["a broccoli"])
    assert context.shape == (1, 77, 64)
    a = model.generate("a broccoli", seed=2, return_latents=True, **FAST)
    b = model.generate(context=context, seed=2, return_latents=True, **FAST)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_image_to_image_keeps_more_of_the_image_at_low_strength(model):
    image = np.zeros((1, 32, 32, 3), np.uint8)
    image[:, 8:24, 8:24] = 255
    encoded = model.encode_images(image, sample=False)
    low = model.generate("x", init_image=image, strength=0.3, seed=0, return_latents=True, steps=10,
                         progress=False)
    high = model.generate("x", init_image=image, strength=1.0, seed=0, return_latents=True, steps=10,
                          progress=False)
    assert np.abs(low - encoded).mean() < np.abs(high - encoded).mean()


def test_bad_sizes_and_shapes_are_clear_errors(model):
    with pytest.raises(ValueError, match="multiples of 4"):
        model.generate("x", height=34, width=32, steps=1, progress=False)
    with pytest.raises(ValueError, match="init_latents: expected shape"):
        model.generate("x", init_latents=np.zeros((1, 3, 3, 4), "float32"), **FAST)
    with pytest.raises(ValueError, match="Unknown sampler"):
        model.generate("x", sampler="plms", **FAST)


def test_jit_compile_gives_the_same_latents(model):
    a = model.generate("a smile", seed=4, return_latents=True, **FAST)
    b = model.generate("a smile", seed=4, return_latents=True, jit_compile=True, **FAST)
    np.testing.assert_allclose(a, b, atol=1e-3)


def test_jit_compile_decodes_with_xla_to_the_same_images(model):
    a = model.generate("a smile", seed=4, **FAST)
    b = model.generate("a smile", seed=4, jit_compile=True, **FAST)
    compiled = model.vae_decoder.__dict__["_kerasemote_compiled"]
    assert {jit for _, jit in compiled} == {False, True}
    assert all(f._jit_compile == jit for (_, jit), f in compiled.items())
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 2


def test_model_directory_round_trip_keeps_outputs_and_placeholders(model, tmp_path):
    model.add_placeholder("<broccoli>", num_vectors=2, init="broccoli")
    model.save(str(tmp_path / "m"))
    manifest = json.loads((tmp_path / "m" / "config.json").read_text())
    assert manifest["format"] == "kerasemote-model" and manifest["config"]["name"] == "tiny"
    loaded = StableDiffusion.load(str(tmp_path / "m"))
    assert loaded.tokenizer.placeholders == model.tokenizer.placeholders
    np.testing.assert_array_equal(
        loaded.generate("a <broccoli>", seed=1, **FAST), model.generate("a <broccoli>", seed=1, **FAST)
    )


def test_float16_model_directory_is_smaller_and_close(model, tmp_path):
    model.save(str(tmp_path / "f32"))
    model.save(str(tmp_path / "f16"), dtype="float16")
    assert (tmp_path / "f16" / "unet.npz").stat().st_size < 0.6 * (tmp_path / "f32" / "unet.npz").stat().st_size
    half = StableDiffusion.load(str(tmp_path / "f16"))
    a = model.generate("x", seed=1, return_latents=True, **FAST)
    b = half.generate("x", seed=1, return_latents=True, **FAST)
    assert np.abs(a - b).max() < 0.05


def test_a_tampered_weight_file_is_refused_naming_file_and_key(model, tmp_path):
    model.save(str(tmp_path / "m"))
    path = str(tmp_path / "m" / "unet.npz")
    arrays, manifest = weights.load_arrays(path)
    key = "unet/conv_in/kernel"
    arrays[key] = arrays[key][..., :2]
    weights.save_arrays(path, arrays, manifest)
    with pytest.raises(ValueError, match=r"unet\.npz: not the unet that .*config\.json names"):
        StableDiffusion.load(str(tmp_path / "m"))  # its checksum no longer matches config.json
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    for field in ("model_id", "part_bytes", "part_sha256"):
        del config[field]  # a folder saved without checksums: the key and shape checks still refuse it
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"unet\.npz.*conv_in/kernel|conv_in/kernel.*unet\.npz"):
        StableDiffusion.load(str(tmp_path / "m"))


def test_initializer_word_must_be_one_clip_token(model):
    with pytest.raises(ValueError, match="exactly one token"):
        model.add_placeholder("<x>", init="supercalifragilistic")


def test_placeholder_rows_start_from_the_initializer_word(model):
    model.add_placeholder("<smile-init>", num_vectors=3, init="smile")
    table = np.asarray(model.text_encoder.token_embedding.table())
    row = table[model.tokenizer.token_ids("smile")[0]]
    np.testing.assert_array_equal(model.placeholder_rows("<smile-init>"), np.tile(row, (3, 1)))


# bfloat16 keeps 8 bits of mantissa (float16: 11): close to float32, not equal.
@pytest.mark.parametrize("policy, tolerance", [("mixed_float16", 0.05), ("mixed_bfloat16", 0.1)])
def test_mixed_precision_generates_close_to_float32(model, policy, tolerance):
    import keras

    keras.mixed_precision.set_global_policy(policy)
    try:
        low = StableDiffusion(model.config, model.tokenizer)
        for part, full in model.parts.items():
            weights.assign_arrays(low.parts[part], weights.model_arrays(full), "float32 model")
        assert low.unet.compute_dtype == policy.split("_")[1] and low.unet.variable_dtype == "float32"
        a = model.generate("a face", seed=1, return_latents=True, **FAST)
        b = low.generate("a face", seed=1, return_latents=True, **FAST)
        image = low.generate("a face", seed=1, **FAST)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert b.dtype == np.float32 and image.dtype == np.uint8
    assert np.isfinite(b).all() and 0 < np.abs(a - b).max() < tolerance * np.abs(a).max()


def test_graphs_traced_before_enable_lora_are_not_reused_after_it():
    from kerasemote.lora_files import enable_lora, lora_variables

    m = StableDiffusion.random("tiny", seed=0)
    context = m.encode_text(["a face"])
    uncond = m.encode_text([""])
    latents = m.generate(context=context, negative_context=uncond, seed=1, return_latents=True, **FAST)
    enable_lora(m, 2, 2.0, targets=["attention", "text"])
    rng = np.random.default_rng(0)
    for var in lora_variables(m):  # random non-zero A and B: the adapters change outputs
        var.assign(rng.normal(0.0, 0.1, var.shape).astype("float32"))
    assert np.abs(m.encode_text(["a face"]) - context).max() > 1e-4
    # Same encoded prompts in: only the UNet's adapters can change the result.
    after = m.generate(context=context, negative_context=uncond, seed=1, return_latents=True, **FAST)
    assert np.abs(after - latents).max() > 1e-4
