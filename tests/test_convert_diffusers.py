"""diffusers folders -> our parts and back, and the torch-free reader of .bin / .ckpt files."""

from __future__ import annotations

import json
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest

from kerasemote.config import TINY
from kerasemote.convert import naming, torchfile
from kerasemote.convert.diffusers import convert_diffusers_folder, export_diffusers_folder
from kerasemote.convert.diffusers_config import config_from_diffusers, diffusers_configs
from kerasemote.weights import WeightFileError, assign_arrays

# Mixed attention levels, two resnets and two transformer blocks per level: the
# layout must follow the config, not TINY's shape.
VARIANT = TINY.replace(
    name="variant", unet_attention=(False, True), unet_layers_per_block=2, unet_transformer_depth=2
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


def build_models(config):
    from kerasemote.models.text_encoder import TextEncoder
    from kerasemote.models.unet import UNet
    from kerasemote.models.vae import VAEDecoder, VAEEncoder

    return {
        "unet": UNet(config).build_with_dummy(),
        "vae_encoder": VAEEncoder(config).build_with_dummy(),
        "vae_decoder": VAEDecoder(config).build_with_dummy(),
        "text_encoder": TextEncoder(config).build_with_dummy(),
    }


@pytest.fixture(scope="module")
def tiny_models():
    return build_models(TINY)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A diffusers folder written from random TINY arrays (no torch needed)."""
    arrays = random_arrays(TINY)
    folder = str(tmp_path_factory.mktemp("diffusers") / "tiny-sd")
    export_diffusers_folder(arrays, TINY, folder)
    return folder, arrays


def rewrite(path, edit):
    """Apply ``edit(state) -> state`` to a safetensors file, writing to ``path``."""
    from safetensors.numpy import load_file, save_file

    state = edit(load_file(path))
    save_file(state, path, metadata={"format": "pt"})


# ---------------------------------------------------------------------- layout and configs


def test_variable_shapes_list_exactly_the_built_models_variables(tiny_models):
    for part, model in tiny_models.items():
        built = {v.path: tuple(v.shape) for v in model.weights}
        assert built == naming.variable_shapes(TINY, part), part


def test_variable_shapes_follow_levels_depth_and_attention_flags_of_the_config():
    from kerasemote.models.unet import UNet

    unet = UNet(VARIANT).build_with_dummy()
    built = {v.path: tuple(v.shape) for v in unet.weights}
    assert built == naming.variable_shapes(VARIANT, "unet")


def test_config_round_trips_through_diffusers_config_files(tmp_path):
    for config in (TINY, VARIANT):
        for component, data in diffusers_configs(config).items():
            name = "scheduler_config.json" if component == "scheduler" else "config.json"
            (tmp_path / component).mkdir(exist_ok=True)
            (tmp_path / component / name).write_text(json.dumps(data))
        assert config_from_diffusers(tmp_path, name=config.name) == config


@pytest.mark.parametrize(
    "component, key, value, message",
    [
        ("unet", "use_linear_projection", True, "use_linear_projection = True"),
        ("unet", "class_embed_type", "timestep", "class_embed_type = 'timestep'"),
        ("unet", "down_block_types", ["SimpleCrossAttnDownBlock2D", "CrossAttnDownBlock2D"], "SimpleCrossAttnDownBlock2D"),
        ("unet", "in_channels", 5, "unet_in_channels: expected 4 (latent_channels) or 9"),
        ("unet", "attention_head_dim", [2, 4], "attention_head_dim = [2, 4] differs per level"),
        ("text_encoder", "hidden_act", "gelu", "hidden_act = 'gelu'"),
        ("text_encoder", "hidden_size", 128, "hidden_size is 128"),
        ("vae", "use_quant_conv", False, "use_quant_conv = False"),
    ],
)
def test_config_from_diffusers_refuses_what_sd1_parts_cannot_express(tmp_path, component, key, value, message):
    for name, data in diffusers_configs(TINY).items():
        if name == "scheduler":
            continue
        if name == component:
            data[key] = value
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="config.json") as err:
        config_from_diffusers(tmp_path)
    assert message in str(err.value)


# ---------------------------------------------------------------------- weights, no torch


def test_exported_folder_converts_back_to_the_same_arrays(exported):
    folder, arrays = exported
    config, back = convert_diffusers_folder(folder)
    assert config == TINY.replace(name="tiny-sd")
    assert_same_arrays(back, arrays)


def test_float16_variant_files_are_found_and_widened(tmp_path):
    arrays = random_arrays(TINY, seed=1)
    export_diffusers_folder(arrays, TINY, tmp_path, dtype="float16")
    for component, stem in (("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"), ("text_encoder", "model")):
        os.rename(tmp_path / component / f"{stem}.safetensors", tmp_path / component / f"{stem}.fp16.safetensors")
    _, back = convert_diffusers_folder(tmp_path)
    half = {p: {k: v.astype("float16").astype("float32") for k, v in a.items()} for p, a in arrays.items()}
    assert_same_arrays(back, half)
    assert back["unet"]["unet/conv_in/kernel"].dtype == np.float32


def test_old_vae_attention_names_with_1x1_conv_weights_convert(exported, tmp_path):
    folder, arrays = exported
    renames = {"to_q.": "query.", "to_k.": "key.", "to_v.": "value.", "to_out.0.": "proj_attn."}

    def to_old_names(state):
        out = {}
        for key, value in state.items():
            head, sep, leaf = key.partition("mid_block.attentions.0.")
            for new, old in renames.items():
                if sep and leaf.startswith(new):
                    leaf = old + leaf[len(new):]
                    value = value[:, :, None, None] if value.ndim == 2 else value
            out[head + sep + leaf] = value
        return out

    import shutil

    shutil.copytree(folder, tmp_path / "old")
    rewrite(str(tmp_path / "old/vae/diffusion_pytorch_model.safetensors"), to_old_names)
    _, back = convert_diffusers_folder(tmp_path / "old", parts=["vae_encoder", "vae_decoder"])
    assert_same_arrays(back, {p: arrays[p] for p in ("vae_encoder", "vae_decoder")})


def test_text_encoder_keys_with_or_without_text_model_prefix_convert(exported, tmp_path):
    folder, arrays = exported
    import shutil

    shutil.copytree(folder, tmp_path / "bare")
    rewrite(
        str(tmp_path / "bare/text_encoder/model.safetensors"),
        lambda s: {k.removeprefix("text_model."): v for k, v in s.items()},
    )
    _, back = convert_diffusers_folder(tmp_path / "bare", parts=["text_encoder"])
    assert_same_arrays(back, {"text_encoder": arrays["text_encoder"]})


def test_missing_unexpected_and_misshaped_keys_are_listed_with_the_file(exported, tmp_path):
    folder, _ = exported
    import shutil

    shutil.copytree(folder, tmp_path / "bad")
    weights = str(tmp_path / "bad/unet/diffusion_pytorch_model.safetensors")

    def damage(state):
        del state["conv_in.bias"]
        state["extra.weight"] = np.zeros(3, "float32")
        state["conv_out.weight"] = np.zeros((4, 32, 1, 1), "float32")
        return state

    rewrite(weights, damage)
    with pytest.raises(WeightFileError) as err:
        convert_diffusers_folder(tmp_path / "bad", parts=["unet"])
    text = str(err.value)
    assert weights in text
    assert "missing keys 'conv_in.bias'" in text
    assert "unexpected keys 'extra.weight'" in text
    assert "'conv_out.weight' expected shape (4, 32, 3, 3), found (4, 32, 1, 1)" in text


def test_export_refuses_placeholder_token_rows(tmp_path):
    arrays = random_arrays(TINY)
    arrays["text_encoder"]["text_encoder/text_model/embeddings/token_embedding/extra_embeddings"] = np.zeros((1, 64))
    with pytest.raises(WeightFileError, match="placeholder token rows"):
        export_diffusers_folder({"text_encoder": arrays["text_encoder"]}, TINY, tmp_path)


def test_missing_weight_file_error_lists_the_names_tried(exported, tmp_path):
    folder, _ = exported
    import shutil

    shutil.copytree(folder, tmp_path / "nounet")
    os.remove(tmp_path / "nounet/unet/diffusion_pytorch_model.safetensors")
    with pytest.raises(FileNotFoundError, match="diffusion_pytorch_model.bin"):
        convert_diffusers_folder(tmp_path / "nounet")


# ---------------------------------------------------------------------- torchfile


class _CallsSystem:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_code_and_runs_none(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.bin"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"w": _CallsSystem(marker)}, protocol=2))
    with pytest.raises(torchfile.UnsafePickleError, match=r"refusing to unpickle (posix|nt|os)\.system") as err:
        torchfile.load_state_dict(path)
    assert str(path) in str(err.value) and "safetensors" in str(err.value)
    assert not marker.exists()


def test_legacy_non_zip_torch_file_is_refused_with_a_conversion_hint(tmp_path):
    path = tmp_path / "old.ckpt"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(ValueError, match="legacy") as err:
        torchfile.load_state_dict(path)
    assert "save_file" in str(err.value)


def test_bfloat16_safetensors_are_widened_to_float32(tmp_path):
    values = np.array([1.5, -2.25, 1.5 * 2.0**40, 0.0], np.float32)
    bits = (values.view(np.uint32) >> 16).astype("<u2")  # exact in bfloat16
    header = json.dumps({"w": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]}}).encode()
    path = tmp_path / "bf16.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + bits.tobytes())
    state = torchfile.load_state_dict(path)
    assert state["w"].dtype == np.float32
    np.testing.assert_array_equal(state["w"], values.reshape(2, 2))


# ---------------------------------------------------------------------- parity with diffusers / transformers


def _randomized_reference(config, folder, safe_serialization=True):
    """Tiny diffusers / transformers models with every parameter (norms too) randomized."""
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    configs = diffusers_configs(config)
    drop = ("_class_name", "_diffusers_version", "architectures", "model_type", "torch_dtype")

    def kwargs(name):
        return {k: v for k, v in configs[name].items() if k not in drop}

    models = {
        "unet": diffusers.UNet2DConditionModel(**kwargs("unet")),
        "vae": diffusers.AutoencoderKL(**kwargs("vae")),
        "text_encoder": transformers.CLIPTextModel(transformers.CLIPTextConfig(**kwargs("text_encoder"))),
    }
    for name, model in models.items():
        with torch.no_grad():
            for p in model.parameters():
                # Matrices keep their init's scale (so deep full-size models stay finite);
                # norms and biases, initialized to constants, become random too.
                scale = 0.5 * float(p.std()) if p.ndim >= 2 else 0.05
                p.add_(scale * torch.randn_like(p))
        model.eval()
        model.save_pretrained(os.path.join(folder, name), safe_serialization=safe_serialization)
    return models


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("reference") / "sd")
    return folder, _randomized_reference(TINY, folder)


@pytest.mark.parity
def test_converted_parts_reproduce_diffusers_and_transformers_outputs(reference, tiny_models):
    import torch

    folder, ref = reference
    config, arrays = convert_diffusers_folder(folder)
    for part, model in tiny_models.items():
        assign_arrays(model, arrays[part], f"{folder}/{part}")
    rng = np.random.default_rng(0)
    latents = rng.standard_normal((2, 8, 8, 4)).astype("float32")  # (B, h, w, C)
    timesteps = np.array([10.0, 500.0], "float32")
    context = rng.standard_normal((2, 77, config.context_dim)).astype("float32")
    images = rng.uniform(-1, 1, (2, 16, 16, 3)).astype("float32")
    tokens = rng.integers(0, config.vocab_size, (2, 77)).astype("int32")

    def nchw(x):
        return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))

    with torch.no_grad():
        want = {
            "unet": ref["unet"](nchw(latents), torch.from_numpy(timesteps), torch.from_numpy(context)).sample,
            "vae_encoder": ref["vae"].quant_conv(ref["vae"].encoder(nchw(images))),
            "vae_decoder": ref["vae"].decoder(ref["vae"].post_quant_conv(nchw(latents))),
        }
        want = {k: v.numpy().transpose(0, 2, 3, 1) for k, v in want.items()}
        want["text_encoder"] = ref["text_encoder"](torch.from_numpy(tokens.astype("int64"))).last_hidden_state.numpy()
    got = {
        "unet": tiny_models["unet"](latents, timesteps, context),
        "vae_encoder": tiny_models["vae_encoder"](images),
        "vae_decoder": tiny_models["vae_decoder"](latents),
        "text_encoder": tiny_models["text_encoder"](tokens),
    }
    for part in want:
        assert np.abs(want[part]).max() > 0.1, part  # a dead output would prove nothing
        np.testing.assert_allclose(np.asarray(got[part]), want[part], atol=2e-5, rtol=0, err_msg=part)


@pytest.mark.parity
def test_bin_files_convert_to_the_same_arrays_as_safetensors(reference, tmp_path):
    folder, _ = reference
    _randomized_reference(TINY, str(tmp_path), safe_serialization=False)  # same seed: same weights
    assert any(name.endswith(".bin") for name in os.listdir(tmp_path / "unet"))
    _, from_bin = convert_diffusers_folder(tmp_path)
    _, from_safetensors = convert_diffusers_folder(folder)
    assert_same_arrays(from_bin, from_safetensors)


@pytest.mark.parity
def test_exported_folder_loads_in_diffusers_and_transformers_unchanged(reference, tmp_path):
    diffusers = pytest.importorskip("diffusers")
    transformers = pytest.importorskip("transformers")
    folder, ref = reference
    config, arrays = convert_diffusers_folder(folder)
    export_diffusers_folder(arrays, config, tmp_path)
    loaded = {
        "unet": diffusers.UNet2DConditionModel.from_pretrained(tmp_path, subfolder="unet"),
        "vae": diffusers.AutoencoderKL.from_pretrained(tmp_path, subfolder="vae"),
        "text_encoder": transformers.CLIPTextModel.from_pretrained(tmp_path / "text_encoder"),
    }
    for name, model in loaded.items():
        want, got = ref[name].state_dict(), model.state_dict()
        assert set(got) == set(want), name
        for key in want:
            assert (got[key] == want[key]).all(), key


@pytest.mark.parity
def test_torch_save_files_read_views_half_bfloat16_and_parameters(tmp_path):
    torch = pytest.importorskip("torch")
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    tensors = {
        "view": base[1:, 2:5],  # storage offset 8, strides (6, 1), shared storage
        "transposed": base.t(),
        "half": torch.randn(3, 2).half(),
        "bfloat16": torch.tensor([1.5, -2.25, 3.0e10, 1e-3], dtype=torch.bfloat16),
        "param": torch.nn.Parameter(torch.randn(5)),
        "ints": torch.arange(6).reshape(2, 3),
    }
    torch.save({"state_dict": tensors, "global_step": np.int64(7), "epoch": 3}, tmp_path / "x.ckpt")
    state = torchfile.load_state_dict(tmp_path / "x.ckpt")
    assert set(state) == set(tensors)
    for key, tensor in tensors.items():
        want = tensor.detach().float().numpy() if key == "bfloat16" else tensor.detach().numpy()
        assert state[key].dtype == want.dtype, key
        np.testing.assert_array_equal(state[key], want, err_msg=key)
