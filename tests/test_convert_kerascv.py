"""keras-cv's legacy .h5 weights -> our parts.

Fast tests use tiny models and hand-written legacy files (the reader, the layouts,
the errors). Parity tests build keras-cv 0.9.0's own models with random weights,
save them in the published files' legacy layout, convert them and compare outputs.
The full-size UNet and the end-to-end DDIM run are ``slow``.
"""

from __future__ import annotations

import gc
import inspect
import time

import h5py
import numpy as np
import pytest
from gcs_fixture import gcs_bucket, gcs_emulator  # noqa: F401  (pytest fixtures)

from kerasemote import storage, weights
from kerasemote.config import TINY
from kerasemote.convert.kerascv import convert_kerascv_file, load_kerascv_weights, read_legacy_h5
from kerasemote.convert.kerascv_layout import KERASCV_CONFIG, KERASCV_FILES, PARTS, kerascv_layout
from kerasemote.models.text_encoder import TextEncoder
from kerasemote.models.unet import UNet
from kerasemote.models.vae import VAEDecoder, VAEEncoder
from kerasemote.weights import WeightFileError

BUILDERS = {"text_encoder": TextEncoder, "unet": UNet, "vae_encoder": VAEEncoder, "vae_decoder": VAEDecoder}
SCALING = 0.18215


# ---------------------------------------------------------------------- helpers


def _write_legacy_h5(path, layers, chunks: int = 1) -> None:
    """Write ``[(layer name, [(weight name, array)])]`` as a Keras-2 legacy weight file.

    Weightless layers are written too (with an empty ``weight_names``), as Keras does.
    ``chunks > 1`` splits ``layer_names`` into ``layer_names0``... like Keras does for
    long attributes.
    """
    with h5py.File(path, "w") as f:
        names = np.array([name.encode() for name, _ in layers])
        if chunks == 1:
            f.attrs["layer_names"] = names
        else:
            for i, part in enumerate(np.array_split(names, chunks)):
                f.attrs[f"layer_names{i}"] = part
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.10.0"
        for name, arrays in layers:
            group = f.create_group(name)
            group.attrs["weight_names"] = np.array([w.encode() for w, _ in arrays], dtype="S")
            for weight_name, array in arrays:
                group.create_dataset(weight_name, data=array)


def _kerascv_style_layers(model, part: str, config) -> list:
    """Our model's values in keras-cv's file order and layout, with keras-cv-like names."""
    values = weights.model_arrays(model)
    layers = [("input_1", [])]  # a weightless layer, as in keras-cv's files
    for i, spec in enumerate(kerascv_layout(part, config)):
        arrays = []
        for j, (path, _) in enumerate(spec.weights):
            value = values[path]
            if spec.kind == "AttentionBlock" and value.ndim == 2:
                value = value[None, None]  # keras-cv's VAE attention uses 1x1 convs
            arrays.append((f"layer_{i}/weight_{j}:0", value))
        layers.append((f"layer_{i}", arrays))
    return layers


def _inputs(part: str, config, batch: int = 2, size: int = 16):
    rng = np.random.default_rng(1)
    if part == "text_encoder":
        return (rng.integers(0, config.vocab_size, (batch, config.max_length)).astype("int32"),)
    if part == "unet":
        latents = rng.standard_normal((batch, size // 8, size // 8, 4)).astype("float32")
        context = rng.standard_normal((batch, config.max_length, config.context_dim)).astype("float32")
        return latents, np.array([10.0, 700.0], "float32")[:batch], context
    if part == "vae_encoder":
        return (rng.uniform(-1, 1, (batch, size, size, 3)).astype("float32"),)
    return (rng.standard_normal((batch, size // 8, size // 8, 4)).astype("float32"),)


def _tiny_file(tmp_path, part: str, filename: str | None = None):
    model = BUILDERS[part](TINY).build_with_dummy()
    path = tmp_path / (filename or KERASCV_FILES[part][0])
    _write_legacy_h5(path, _kerascv_style_layers(model, part, TINY))
    return model, path


def _relative_error(ours, reference) -> float:
    ours, reference = np.asarray(ours, "float64"), np.asarray(reference, "float64")
    return float(np.max(np.abs(ours - reference)) / np.max(np.abs(reference)))


# ---------------------------------------------------------------------- fast tests


@pytest.mark.parametrize("part", PARTS)
def test_layout_maps_every_variable_of_our_model_exactly_once(part):
    model = BUILDERS[part](TINY).build_with_dummy()
    specs = [w for layer in kerascv_layout(part, TINY) for w in layer.weights]
    assert len({path for path, _ in specs}) == len(specs)
    assert dict(specs) == {v.path: tuple(v.shape) for v in model.weights}


@pytest.mark.parametrize("part", PARTS)
def test_tiny_kerascv_style_file_loads_into_an_equal_model(tmp_path, part):
    source, path = _tiny_file(tmp_path, part)
    arrays = load_kerascv_weights(tmp_path, config=TINY)
    assert list(arrays) == [part]
    target = BUILDERS[part](TINY).build_with_dummy()
    result = weights.assign_arrays(target, arrays[part], str(path))
    assert not result.missing and not result.unexpected
    inputs = _inputs(part, TINY)
    np.testing.assert_array_equal(np.asarray(target(*inputs)), np.asarray(source(*inputs)))


def test_layer_names_split_over_several_attributes_are_all_read(tmp_path):
    layers = [("input_1", [])]
    layers += [(f"d{i}", [(f"d{i}/kernel:0", np.full((2, 2), i, "float32"))]) for i in range(5)]
    _write_legacy_h5(tmp_path / "w.h5", layers, chunks=3)
    read = read_legacy_h5(tmp_path / "w.h5")
    assert [layer.name for layer in read] == [f"d{i}" for i in range(5)]
    assert [float(layer.arrays[0][0, 0]) for layer in read] == [0, 1, 2, 3, 4]


def test_wrong_shape_error_names_file_layer_expected_and_found(tmp_path):
    model = VAEDecoder(TINY).build_with_dummy()
    layers = _kerascv_style_layers(model, "vae_decoder", TINY)
    name, arrays = layers[2]  # conv_in: kernel (3, 3, 4, 64)
    arrays[0] = (arrays[0][0], np.zeros((3, 3, 4, 65), "float32"))
    path = tmp_path / "kcv_decoder.h5"
    _write_legacy_h5(path, layers)
    with pytest.raises(WeightFileError) as info:
        convert_kerascv_file(path, "vae_decoder", TINY)
    message = str(info.value)
    for text in ("kcv_decoder.h5", "layer #1", repr(name), "vae_decoder/decoder/conv_in/kernel",
                 "expected shape (3, 3, 4, 64)", "found (3, 3, 4, 65)"):
        assert text in message


def test_file_for_another_part_is_rejected_by_layer_count(tmp_path):
    _, path = _tiny_file(tmp_path, "vae_encoder", filename="kcv_decoder.h5")
    pattern = r"kcv_decoder.h5: expected \d+ layers with weights .*found \d+"
    with pytest.raises(WeightFileError, match=pattern):
        load_kerascv_weights(tmp_path, config=TINY)


def test_non_keras_h5_file_is_rejected(tmp_path):
    with h5py.File(tmp_path / "kcv_encoder.h5", "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(WeightFileError, match="layer_names"):
        load_kerascv_weights(tmp_path, config=TINY)


def test_folder_converts_present_files_and_require_all_names_the_missing(tmp_path):
    _tiny_file(tmp_path, "vae_decoder")
    assert list(load_kerascv_weights(tmp_path, config=TINY)) == ["vae_decoder"]
    with pytest.raises(FileNotFoundError) as info:
        load_kerascv_weights(tmp_path, require_all=True, config=TINY)
    message = str(info.value)
    for part in ("text_encoder", "unet", "vae_encoder"):
        filename, url, _ = KERASCV_FILES[part]
        assert filename in message and url in message
    assert "kcv_decoder.h5" not in message
    with pytest.raises(FileNotFoundError, match="kcv_encoder.h5"):
        load_kerascv_weights(tmp_path, parts=["text_encoder"], config=TINY)


def test_empty_folder_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="none of keras-cv's files"):
        load_kerascv_weights(tmp_path, config=TINY)


def test_gcs_file_converts_like_a_local_one(tmp_path, gcs_bucket):  # noqa: F811
    _, path = _tiny_file(tmp_path, "vae_encoder")
    remote = storage.join(gcs_bucket, "kcv", "vae_encoder.h5")
    storage.write_bytes(remote, path.read_bytes())
    local = load_kerascv_weights({"vae_encoder": path}, config=TINY)["vae_encoder"]
    remote_arrays = load_kerascv_weights(storage.join(gcs_bucket, "kcv"), config=TINY)["vae_encoder"]
    assert sorted(local) == sorted(remote_arrays)
    for key in local:
        np.testing.assert_array_equal(local[key], remote_arrays[key])


# ---------------------------------------------------------------------- keras-cv parity


def _kerascv():
    return pytest.importorskip("keras_cv")


def _save_like_published(model, path) -> None:
    """Write a keras-cv model's weights in the published files' legacy layout, and check
    that keras-cv's own ``load_weights`` reads that file back into the model."""
    import keras
    from keras.src.legacy.saving.legacy_h5_format import save_weights_to_hdf5_group

    with h5py.File(path, "w") as f:
        save_weights_to_hdf5_group(f, model)
    # Fingerprints (a slice and a sum per variable), not copies: the UNet alone is 3.4 GB.
    def fingerprints():
        for variable in model.weights:
            value = keras.ops.convert_to_numpy(variable).ravel()
            yield value[:256].copy(), float(np.sum(value, dtype="float64"))

    saved = list(fingerprints())
    for variable in model.weights:
        variable.assign(keras.ops.zeros(variable.shape, variable.dtype))
    model.load_weights(str(path))
    for (head, total), (saved_head, saved_total) in zip(fingerprints(), saved):
        np.testing.assert_array_equal(head, saved_head)
        assert total == saved_total


def _ours_from_file(folder, part: str):
    model = BUILDERS[part](KERASCV_CONFIG).build_with_dummy()
    arrays = load_kerascv_weights(folder, parts=[part])[part]
    result = weights.assign_arrays(model, arrays, f"{folder} [{part}]")
    assert not result.missing and not result.unexpected
    return model


def _kerascv_timestep_embedding(timestep: int, batch: int) -> np.ndarray:
    from keras_cv.models import StableDiffusion

    # keras-cv computes it outside the UNet; the method does not use ``self``.
    return np.asarray(StableDiffusion._get_timestep_embedding(None, timestep, batch))


@pytest.mark.parity
def test_kerascv_files_table_matches_kerascv_source():
    _kerascv()
    from keras_cv.src.models.stable_diffusion import decoder, diffusion_model, image_encoder, text_encoder

    sources = {"text_encoder": text_encoder, "unet": diffusion_model, "vae_decoder": decoder,
               "vae_encoder": image_encoder}
    for part, module in sources.items():
        filename, url, sha256 = KERASCV_FILES[part]
        text = inspect.getsource(module)
        assert url in text and sha256 in text and url.endswith("/" + filename)


@pytest.mark.parity
def test_text_encoder_matches_kerascv(tmp_path):
    kcv = _kerascv()
    reference_model = kcv.models.stable_diffusion.TextEncoder(77, download_weights=False)
    _save_like_published(reference_model, tmp_path / "kcv_encoder.h5")
    (tokens,) = _inputs("text_encoder", KERASCV_CONFIG)
    positions = np.repeat(np.arange(77, dtype="int32")[None], len(tokens), axis=0)
    reference = reference_model.predict_on_batch({"tokens": tokens, "positions": positions})
    del reference_model
    ours = _ours_from_file(tmp_path, "text_encoder")(tokens)
    assert _relative_error(ours, reference) < 1e-5


@pytest.mark.parity
def test_vae_decoder_matches_kerascv(tmp_path):
    kcv = _kerascv()
    reference_model = kcv.models.stable_diffusion.Decoder(64, 64, download_weights=False)
    _save_like_published(reference_model, tmp_path / "kcv_decoder.h5")
    (latents,) = _inputs("vae_decoder", KERASCV_CONFIG, size=64)
    reference = reference_model.predict_on_batch(latents)
    del reference_model
    ours = _ours_from_file(tmp_path, "vae_decoder")(latents / SCALING)  # keras-cv rescales inside
    # Measured 4.8e-6; with the original VAE epsilon (1e-6 instead of keras-cv's 1e-5), 1.6e-5.
    assert _relative_error(ours, reference) < 1e-5


@pytest.mark.parity
def test_image_encoder_matches_kerascv(tmp_path):
    kcv = _kerascv()
    reference_model = kcv.models.stable_diffusion.ImageEncoder(download_weights=False)
    _save_like_published(reference_model, tmp_path / "vae_encoder.h5")
    (images,) = _inputs("vae_encoder", KERASCV_CONFIG, size=64)
    reference = reference_model.predict_on_batch(images)  # mean * 0.18215
    del reference_model
    moments = _ours_from_file(tmp_path, "vae_encoder")(images)
    # Measured 3.9e-6; with the original VAE epsilon (1e-6 instead of keras-cv's 1e-5), 1.3e-4.
    assert _relative_error(np.asarray(moments)[..., :4] * SCALING, reference) < 1e-5


@pytest.mark.parity
@pytest.mark.slow
def test_full_size_unet_matches_kerascv(tmp_path):
    kcv = _kerascv()
    start = time.perf_counter()
    reference_model = kcv.models.stable_diffusion.DiffusionModel(64, 64, 77, download_weights=False)
    _save_like_published(reference_model, tmp_path / "kcv_diffusion_model.h5")
    latents, _, context = _inputs("unet", KERASCV_CONFIG, size=64)
    errors, references = {}, {}
    for timestep in (10, 700):
        embedding = _kerascv_timestep_embedding(timestep, 2)
        references[timestep] = reference_model.predict_on_batch(
            {"latent": latents, "timestep_embedding": embedding, "context": context}
        )
    del reference_model
    gc.collect()
    ours = _ours_from_file(tmp_path, "unet")
    for timestep, reference in references.items():
        prediction = ours(latents, np.full((2,), timestep, "float32"), context)
        errors[timestep] = _relative_error(prediction, reference)
    print(f"full-size UNet: relative max abs error {errors}, {time.perf_counter() - start:.0f} s")
    assert max(errors.values()) < 1e-4


@pytest.mark.parity
@pytest.mark.slow
def test_ddim_generation_matches_kerascv_generate_image(tmp_path):
    """A few guided DDIM steps of keras-cv's ``generate_image`` vs. our parts and sampler."""
    kcv = _kerascv()
    from keras_cv.src.models.stable_diffusion.constants import _UNCONDITIONAL_TOKENS

    from kerasemote.schedulers import DDIMSampler, NoiseSchedule

    stable_diffusion = kcv.models.StableDiffusion(img_height=128, img_width=128, jit_compile=False)
    sd = kcv.models.stable_diffusion
    stable_diffusion._text_encoder = sd.TextEncoder(77, download_weights=False)
    stable_diffusion._diffusion_model = sd.DiffusionModel(64, 64, 77, download_weights=False)
    stable_diffusion._decoder = sd.Decoder(64, 64, download_weights=False)
    kerascv_parts = {
        "text_encoder": stable_diffusion._text_encoder,
        "unet": stable_diffusion._diffusion_model,
        "vae_decoder": stable_diffusion._decoder,
    }
    for part, model in kerascv_parts.items():
        _save_like_published(model, tmp_path / KERASCV_FILES[part][0])

    steps, guidance = 3, 7.5
    (tokens,) = _inputs("text_encoder", KERASCV_CONFIG, batch=1)
    noise = np.random.default_rng(2).standard_normal((1, 8, 8, 4)).astype("float32")
    positions = np.arange(77, dtype="int32")[None]
    context = stable_diffusion._text_encoder.predict_on_batch({"tokens": tokens, "positions": positions})
    final_latents = []
    decode = stable_diffusion._decoder.predict_on_batch
    stable_diffusion._decoder.predict_on_batch = lambda x: final_latents.append(np.asarray(x)) or decode(x)
    reference_images = stable_diffusion.generate_image(
        context, num_steps=steps, unconditional_guidance_scale=guidance, diffusion_noise=noise
    )
    del stable_diffusion, model, kerascv_parts
    gc.collect()

    arrays = load_kerascv_weights(tmp_path)
    models = {}
    for part in ("text_encoder", "unet", "vae_decoder"):
        models[part] = BUILDERS[part](KERASCV_CONFIG).build_with_dummy()
        weights.assign_arrays(models[part], arrays.pop(part), part)
    ours_context = models["text_encoder"](tokens)
    unconditional = models["text_encoder"](np.array([_UNCONDITIONAL_TOKENS], "int32"))
    assert _relative_error(ours_context, context) < 1e-5
    sampler = DDIMSampler(
        NoiseSchedule.from_config(KERASCV_CONFIG), timestep_spacing="linspace", set_alpha_to_one=True,
        prev_timestep="sequence",
    )
    sampler.set_timesteps(steps)
    latents = noise
    for t in sampler.timesteps:
        timesteps = np.full((1,), t, "float32")
        eps_uncond = models["unet"](latents, timesteps, unconditional)
        eps_text = models["unet"](latents, timesteps, ours_context)
        latents = sampler.step(eps_uncond + guidance * (eps_text - eps_uncond), t, latents)
    images = np.asarray(models["vae_decoder"](np.asarray(latents) / SCALING))
    images = np.clip((images + 1) / 2 * 255, 0, 255).astype("uint8")
    latent_error = _relative_error(latents, final_latents[0])
    pixel_error = int(np.max(np.abs(images.astype(int) - reference_images.astype(int))))
    print(f"DDIM {steps} steps: latent relative max abs error {latent_error:.2e}, "
          f"max pixel diff {pixel_error}")
    assert latent_error < 1e-4
    assert pixel_error <= 1  # uint8 truncation can flip a level where values sit on a boundary
