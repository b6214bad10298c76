"""The SD parts are sized only by ModelConfig and behave like SD 1.x parts."""

import numpy as np
import pytest

from kerasemote.config import SD_V1, TINY, ModelConfig, get_config
from kerasemote.models.text_encoder import TextEncoder
from kerasemote.models.unet import UNet, timestep_embedding
from kerasemote.models.vae import VAEDecoder, VAEEncoder


@pytest.fixture(scope="module")
def tiny_parts():
    return {
        "unet": UNet(TINY).build_with_dummy(),
        "text": TextEncoder(TINY).build_with_dummy(),
        "enc": VAEEncoder(TINY).build_with_dummy(),
        "dec": VAEDecoder(TINY).build_with_dummy(),
    }


def test_tiny_parts_have_the_shapes_the_config_asks_for(tiny_parts):
    unet, enc, dec, text = tiny_parts["unet"], tiny_parts["enc"], tiny_parts["dec"], tiny_parts["text"]
    out = unet(np.zeros((2, 8, 8, 4), "float32"), np.array([1.0, 999.0]), np.zeros((2, 77, 64), "float32"))
    assert out.shape == (2, 8, 8, 4)
    assert enc(np.zeros((1, 16, 24, 3), "float32")).shape == (1, 4, 6, 8)
    assert dec(np.zeros((1, 4, 6, 4), "float32")).shape == (1, 16, 24, 3)
    assert text(np.zeros((3, 77), "int32")).shape == (3, 77, 64)


def test_tiny_model_is_a_few_million_parameters(tiny_parts):
    total = sum(m.count_params() for m in tiny_parts.values())
    assert 1_000_000 < total < 10_000_000


def test_variable_paths_follow_reference_module_names(tiny_parts):
    paths = {v.path for v in tiny_parts["unet"].weights}
    assert "unet/down_blocks.0/attentions.0/transformer_blocks.0/attn2/to_k/kernel" in paths
    assert "unet/up_blocks.1/resnets.1/conv_shortcut/kernel" in paths
    assert "unet/mid_block/attentions.0/proj_in/kernel" in paths
    assert len(paths) == len(tiny_parts["unet"].weights)  # unique paths


def test_text_encoder_is_causal(tiny_parts):
    text = tiny_parts["text"]
    ids = np.full((2, 77), 49407, "int32")
    ids[:, :3] = [49406, 320, 1125]
    changed = ids.copy()
    changed[1, 10] = 2368
    a, b = np.asarray(text(ids)), np.asarray(text(changed))
    np.testing.assert_allclose(a[1, :10], b[1, :10], atol=1e-6)  # earlier positions cannot see token 10
    assert np.abs(a[1, 10:] - b[1, 10:]).max() > 1e-4


def test_extra_token_rows_leave_base_rows_and_outputs_unchanged(tiny_parts):
    text = tiny_parts["text"]
    rows = np.random.default_rng(0).normal(size=(2, 64)).astype("float32")
    bigger = text.with_extra_tokens(rows)
    ids = np.full((1, 77), 49407, "int32")
    ids[0, :2] = [49406, 320]
    np.testing.assert_array_equal(np.asarray(text(ids)), np.asarray(bigger(ids)))
    np.testing.assert_array_equal(np.asarray(bigger.token_embedding.table())[49408:], rows)
    ids[0, 2] = 49409
    assert np.abs(np.asarray(bigger(ids)) - np.asarray(text(ids.clip(max=49407)))).max() > 1e-4


def test_timestep_embedding_is_cos_then_sin():
    emb = np.asarray(timestep_embedding(np.array([0.0, 10.0]), 8))
    np.testing.assert_allclose(emb[0], [1, 1, 1, 1, 0, 0, 0, 0], atol=1e-6)
    freqs = np.exp(-np.log(10000) * np.arange(4) / 4)
    np.testing.assert_allclose(emb[1], np.concatenate([np.cos(10 * freqs), np.sin(10 * freqs)]), atol=1e-5)


def test_sd_v1_config_is_the_real_architecture():
    assert SD_V1.unet_channels == (320, 640, 1280, 1280)
    assert SD_V1.context_dim == 768 and SD_V1.vae_downsample == 8
    assert get_config("tiny") is TINY


def test_config_round_trips_json_and_rejects_bad_values():
    assert ModelConfig.from_dict(TINY.to_dict()) == TINY
    with pytest.raises(ValueError, match="unet_attention"):
        TINY.replace(unet_attention=(True,))
    with pytest.raises(ValueError, match=r"config: expected only the keys .*found unknown keys \['bogus'\]"):
        ModelConfig.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="prediction_type"):
        TINY.replace(prediction_type="x0")
    with pytest.raises(ValueError, match="Unknown config"):
        get_config("sd-v9")


@pytest.mark.slow
def test_sd_v1_unet_has_860m_parameters():
    unet = UNet(SD_V1).build_with_dummy()
    assert 855_000_000 < unet.count_params() < 865_000_000
