"""Original single-file SD checkpoints (LDM layout) -> our parts and back."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from kerasemote.config import SD_V1, TINY
from kerasemote.convert import naming
from kerasemote.convert.original import (
    config_from_single_file,
    convert_single_file,
    export_single_file,
    single_file_layout,
)
from kerasemote.weights import WeightFileError

VARIANT = TINY.replace(
    name="variant",
    unet_attention=(False, True, True),
    unet_channels=(32, 64, 64),
    unet_layers_per_block=2,
    unet_transformer_depth=2,
    vae_layers_per_block=2,
)


def random_arrays(config, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for part in naming.PARTS:
        shapes = naming.variable_shapes(config, part)
        arrays[part] = {path: rng.standard_normal(shape).astype("float32") for path, shape in shapes.items()}
    return arrays


def assert_same_arrays(got, want):
    assert set(got) == set(want)
    for part in want:
        assert set(got[part]) == set(want[part]), part
        for path, value in want[part].items():
            np.testing.assert_array_equal(got[part][path], value, err_msg=path)


def load(path):
    from safetensors.numpy import load_file

    return load_file(str(path))


def save(path, state):
    from safetensors.numpy import save_file

    save_file(state, str(path), metadata={"format": "pt"})


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    arrays = random_arrays(TINY)
    path = tmp_path_factory.mktemp("single") / "tiny.safetensors"
    export_single_file(arrays, TINY, path)
    return path, arrays


# ---------------------------------------------------------------------- layout


def test_sd_v1_layout_has_the_keys_of_the_original_checkpoints():
    layout = single_file_layout(SD_V1)
    assert len(layout) == 686 + 248 + 196  # UNet, VAE, CLIP tensors of v1-5-pruned-emaonly
    unet = "model.diffusion_model."
    vae = "first_stage_model."
    expected = {
        unet + "input_blocks.0.0.weight": ("unet", "unet/conv_in/kernel"),
        unet + "time_embed.2.weight": ("unet", "unet/time_embedding/linear_2/kernel"),
        unet + "input_blocks.3.0.op.weight": ("unet", "unet/down_blocks.0/downsamplers.0/conv/kernel"),
        unet + "input_blocks.4.0.skip_connection.weight": ("unet", "unet/down_blocks.1/resnets.0/conv_shortcut/kernel"),
        unet + "input_blocks.11.0.out_layers.3.bias": ("unet", "unet/down_blocks.3/resnets.1/conv2/bias"),
        unet + "middle_block.1.transformer_blocks.0.attn2.to_k.weight": (
            "unet",
            "unet/mid_block/attentions.0/transformer_blocks.0/attn2/to_k/kernel",
        ),
        unet + "middle_block.2.emb_layers.1.weight": ("unet", "unet/mid_block/resnets.1/time_emb_proj/kernel"),
        # The level without attention upsamples in block 1, the others in block 2.
        unet + "output_blocks.2.1.conv.weight": ("unet", "unet/up_blocks.0/upsamplers.0/conv/kernel"),
        unet + "output_blocks.5.2.conv.weight": ("unet", "unet/up_blocks.1/upsamplers.0/conv/kernel"),
        unet + "output_blocks.8.2.conv.bias": ("unet", "unet/up_blocks.2/upsamplers.0/conv/bias"),
        unet + "output_blocks.11.1.proj_out.weight": ("unet", "unet/up_blocks.3/attentions.2/proj_out/kernel"),
        unet + "out.0.weight": ("unet", "unet/conv_norm_out/gamma"),
        unet + "out.2.bias": ("unet", "unet/conv_out/bias"),
        vae + "encoder.down.1.block.0.nin_shortcut.weight": (
            "vae_encoder",
            "vae_encoder/encoder/down_blocks.1/resnets.0/conv_shortcut/kernel",
        ),
        vae + "encoder.mid.attn_1.proj_out.weight": ("vae_encoder", "vae_encoder/encoder/mid_block/attentions.0/to_out.0/kernel"),
        vae + "encoder.norm_out.bias": ("vae_encoder", "vae_encoder/encoder/conv_norm_out/beta"),
        vae + "quant_conv.weight": ("vae_encoder", "vae_encoder/quant_conv/kernel"),
        # The LDM decoder counts levels from the latent side: its up.3 is diffusers' up_blocks.0.
        vae + "decoder.up.3.upsample.conv.weight": ("vae_decoder", "vae_decoder/decoder/up_blocks.0/upsamplers.0/conv/kernel"),
        vae + "decoder.up.0.block.2.conv2.weight": ("vae_decoder", "vae_decoder/decoder/up_blocks.3/resnets.2/conv2/kernel"),
        vae + "decoder.mid.block_2.norm1.weight": ("vae_decoder", "vae_decoder/decoder/mid_block/resnets.1/norm1/gamma"),
        "cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.weight": (
            "text_encoder",
            "text_encoder/text_model/encoder.layers.11/mlp/fc2/kernel",
        ),
    }
    for key, (part, path) in expected.items():
        assert key in layout, key
        assert (layout[key].part, layout[key].path) == (part, path)
    assert unet + "output_blocks.11.1.conv.weight" not in layout  # no upsampler after the last level
    assert vae + "decoder.up.0.upsample.conv.weight" not in layout
    assert vae + "encoder.down.3.downsample.conv.weight" not in layout


# ---------------------------------------------------------------------- round trips, no torch


@pytest.mark.parametrize("config", [TINY, VARIANT], ids=["tiny", "variant"])
def test_export_then_convert_gives_back_the_arrays_and_the_config(tmp_path, config):
    arrays = random_arrays(config)
    path = tmp_path / "model.safetensors"
    export_single_file(arrays, config, path)
    got_config, back = convert_single_file(path, base=TINY)
    assert_same_arrays(back, arrays)
    assert got_config == config.replace(name="model")


def test_vae_attention_is_written_as_1x1_convolutions(tiny_file):
    path, _ = tiny_file
    state = load(path)
    assert state["first_stage_model.encoder.mid.attn_1.q.weight"].shape == (64, 64, 1, 1)
    assert state["first_stage_model.decoder.mid.attn_1.proj_out.weight"].shape == (64, 64, 1, 1)


def test_ema_copies_and_schedule_buffers_are_ignored_and_betas_give_the_schedule(tiny_file, tmp_path):
    path, arrays = tiny_file
    state = load(path)
    state["model_ema.diffusion_modelinput_blocks00weight"] = np.ones((2, 2), "float32")
    state["model_ema.decay"] = np.array(0.9999, "float32")
    state["alphas_cumprod"] = np.ones(500, "float32")
    state["cond_stage_model.transformer.text_model.embeddings.position_ids"] = np.arange(77)[None]
    state["betas"] = np.linspace(1e-4, 0.02, 500).astype("float32")  # a linear schedule
    save(tmp_path / "full.safetensors", state)
    config, back = convert_single_file(tmp_path / "full.safetensors", base=TINY)
    assert_same_arrays(back, arrays)
    assert (config.beta_schedule, config.beta_start, config.beta_end, config.num_train_timesteps) == (
        "linear",
        1e-4,
        0.02,
        500,
    )


def test_betas_of_sd_are_read_as_scaled_linear():
    betas = (np.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2).astype("float32")
    state = _shape_only_state(TINY)
    state["betas"] = betas
    config = config_from_single_file(state, base=TINY)
    assert (config.beta_schedule, config.beta_start, config.beta_end) == ("scaled_linear", 0.00085, 0.012)


def _shape_only_state(config):
    return {key: np.zeros(naming.torch_shape(e.path, e.shape), "float32") for key, e in single_file_layout(config).items()}


def test_given_config_that_disagrees_with_the_file_is_reported_key_by_key(tiny_file):
    path, _ = tiny_file
    with pytest.raises(WeightFileError) as err:
        convert_single_file(path, config=TINY.replace(text_intermediate=256))
    assert str(path) in str(err.value)
    assert "mlp.fc1.weight' expected shape (256, 64), found (128, 64)" in str(err.value)


def test_missing_and_unexpected_keys_under_the_model_prefixes_are_errors(tiny_file, tmp_path):
    path, _ = tiny_file
    state = load(path)
    del state["model.diffusion_model.out.2.bias"]
    state["first_stage_model.encoder.extra.weight"] = np.zeros(1, "float32")
    save(tmp_path / "bad.safetensors", state)
    with pytest.raises(WeightFileError) as err:
        convert_single_file(tmp_path / "bad.safetensors", config=TINY)
    assert "bad.safetensors: missing keys 'model.diffusion_model.out.2.bias'" in str(err.value)
    assert "unexpected keys 'first_stage_model.encoder.extra.weight'" in str(err.value)


def test_only_the_requested_parts_are_read(tiny_file, tmp_path):
    path, arrays = tiny_file
    state = {k: v for k, v in load(path).items() if k.startswith("model.diffusion_model.")}
    save(tmp_path / "unet_only.safetensors", state)
    _, back = convert_single_file(tmp_path / "unet_only.safetensors", config=TINY, parts=["unet"])
    assert_same_arrays(back, {"unet": arrays["unet"]})


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.update({"cond_stage_model.model.ln_final.weight": np.ones(4, "float32")}), "OpenCLIP"),
        (lambda s: s.update({"conditioner.embedders.0.transformer.x": np.ones(4, "float32")}), "SDXL"),
        (
            lambda s: s.update(
                {"model.diffusion_model.input_blocks.1.1.proj_in.weight": np.ones((32, 32), "float32")}
            ),
            "use_linear_projection",
        ),
        (
            lambda s: s.update({"model.diffusion_model.input_blocks.0.0.weight": np.ones((32, 5, 3, 3), "float32")}),
            r"unet_in_channels: expected 4 \(latent_channels\) or 9",
        ),
    ],
    ids=["sd2-text", "sdxl", "sd2-linear-proj", "5-channel-unet"],
)
def test_non_sd1_checkpoints_are_refused_saying_what_was_found(tiny_file, tmp_path, edit, message):
    path, _ = tiny_file
    state = load(path)
    edit(state)
    save(tmp_path / "other.safetensors", state)
    with pytest.raises(ValueError, match=message) as err:
        convert_single_file(tmp_path / "other.safetensors")
    assert "other.safetensors" in str(err.value)


def test_export_writes_safetensors_only(tmp_path):
    with pytest.raises(ValueError, match="safetensors only"):
        export_single_file(random_arrays(TINY), TINY, tmp_path / "model.ckpt")


def test_export_needs_both_vae_halves(tmp_path):
    arrays = random_arrays(TINY)
    with pytest.raises(ValueError, match="vae_decoder"):
        export_single_file({"vae_encoder": arrays["vae_encoder"]}, TINY, tmp_path / "v.safetensors")


# ---------------------------------------------------------------------- parity with diffusers


def _diffusers_reference(config, folder):
    """diffusers / transformers models for ``config`` with all parameters randomized, saved to ``folder``."""
    from test_convert_diffusers import _randomized_reference

    return _randomized_reference(config, folder)


@pytest.mark.parity
def test_diffusers_own_single_file_converter_reads_our_export(tmp_path):
    pytest.importorskip("diffusers")
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
    )
    from safetensors.torch import load_file

    from kerasemote.convert.diffusers import convert_diffusers_folder

    folder = str(tmp_path / "sd")
    ref = _diffusers_reference(TINY, folder)
    config, arrays = convert_diffusers_folder(folder)
    export_single_file(arrays, config, tmp_path / "single.safetensors")
    checkpoint = load_file(str(tmp_path / "single.safetensors"))
    converted = {
        "unet": convert_ldm_unet_checkpoint(checkpoint, config=ref["unet"].config),
        "vae": convert_ldm_vae_checkpoint(checkpoint, config=ref["vae"].config),
        # transformers >= 5 names CLIPTextModel's keys without "text_model.".
        "text_encoder": {k.removeprefix("text_model."): v for k, v in convert_ldm_clip_checkpoint(checkpoint).items()},
    }
    for name, state in converted.items():
        want = {k.removeprefix("text_model."): v for k, v in ref[name].state_dict().items()}
        assert set(state) == set(want), name
        for key in want:
            assert (state[key] == want[key]).all(), key
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for cls, sub in ((UNet2DConditionModel, "unet"), (AutoencoderKL, "vae")):
        model = cls.from_single_file(
            str(tmp_path / "single.safetensors"), config=folder, subfolder=sub, local_files_only=True
        )
        want, got = ref[sub].state_dict(), model.state_dict()
        assert set(got) == set(want)
        assert all((got[k] == want[k]).all() for k in want), sub


@pytest.mark.parity
def test_torch_saved_ckpt_converts_without_unpickling_code(tiny_file, tmp_path):
    torch = pytest.importorskip("torch")
    path, arrays = tiny_file
    state = {k: torch.from_numpy(v).half() for k, v in load(path).items()}
    torch.save({"state_dict": state, "global_step": 10}, tmp_path / "tiny.ckpt")
    _, back = convert_single_file(tmp_path / "tiny.ckpt", config=TINY)
    half = {p: {k: v.astype("float16").astype("float32") for k, v in a.items()} for p, a in arrays.items()}
    assert_same_arrays(back, half)


# ---------------------------------------------------------------------- full size


@pytest.mark.slow
@pytest.mark.parity
def test_sd_v1_full_size_converts_exports_and_matches_diffusers(tmp_path):
    """Full-size SD 1.x: diffusers folder -> ours (outputs match) -> single file -> diffusers' converter."""
    torch = pytest.importorskip("torch")
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
    from safetensors.torch import load_file

    from kerasemote.convert.diffusers import convert_diffusers_folder
    from kerasemote.models.unet import UNet
    from kerasemote.weights import assign_arrays

    timings = {}
    start = time.perf_counter()
    folder = str(tmp_path / "sd")
    ref = _diffusers_reference(SD_V1, folder)
    timings["reference"] = time.perf_counter() - start

    start = time.perf_counter()
    config, arrays = convert_diffusers_folder(folder)
    timings["convert_diffusers_folder"] = time.perf_counter() - start
    assert config == SD_V1.replace(name="sd")

    start = time.perf_counter()
    export_single_file(arrays, config, tmp_path / "single.safetensors")
    timings["export_single_file"] = time.perf_counter() - start
    start = time.perf_counter()
    _, back = convert_single_file(tmp_path / "single.safetensors")
    timings["convert_single_file"] = time.perf_counter() - start
    assert_same_arrays(back, arrays)
    del back

    unet_state = convert_ldm_unet_checkpoint(load_file(str(tmp_path / "single.safetensors")), config=ref["unet"].config)
    want = ref["unet"].state_dict()
    assert set(unet_state) == set(want)
    assert all((unet_state[k] == want[k]).all() for k in want)
    del unet_state, want

    start = time.perf_counter()
    unet = UNet(config).build_with_dummy()
    assign_arrays(unet, arrays["unet"], folder)
    timings["build_and_assign_unet"] = time.perf_counter() - start
    rng = np.random.default_rng(0)
    latents = rng.standard_normal((1, 8, 8, 4)).astype("float32")
    timesteps = np.array([500.0], "float32")
    context = rng.standard_normal((1, 77, 768)).astype("float32")
    with torch.no_grad():
        expected = ref["unet"](
            torch.from_numpy(latents.transpose(0, 3, 1, 2).copy()), torch.from_numpy(timesteps), torch.from_numpy(context)
        ).sample.numpy().transpose(0, 2, 3, 1)
    got = np.asarray(unet(latents, timesteps, context))
    max_diff = float(np.abs(got - expected).max())
    print(f"\nsd-v1 UNet max |ours - diffusers| = {max_diff:.2e} (output max {np.abs(expected).max():.2f}); {timings}")
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
