"""LoRA files: checked reading, exact combination, merging into kernels, CLI scale parsing."""

from __future__ import annotations

import numpy as np
import pytest

from kerasemote import weights
from kerasemote.lora_files import (
    LoRAWeights,
    apply_lora,
    combine_loras,
    lora_layers,
    parse_lora_argument,
    read_lora,
    save_lora,
)
from kerasemote.model import StableDiffusion

TO_Q = "unet/down_blocks.0/attentions.0/transformer_blocks.0/attn1/to_q"
CONV = "unet/down_blocks.0/resnets.0/conv1"


@pytest.fixture(scope="module")
def model() -> StableDiffusion:
    return StableDiffusion.random("tiny", seed=0)


def synthetic(rank: int, alpha: float, seed: int, layers=(TO_Q,)) -> LoRAWeights:
    rng = np.random.default_rng(seed)
    arrays = {}
    for layer in layers:
        arrays[layer + "/lora_kernel_a"] = rng.standard_normal((32, rank)).astype("float32")
        arrays[layer + "/lora_kernel_b"] = rng.standard_normal((rank, 32)).astype("float32")
    manifest = {"format": "kerasemote-lora", "rank": rank, "alpha": alpha, "targets": ["attention"]}
    return LoRAWeights(arrays, rank, alpha, ["attention"], manifest)


def test_target_groups_pick_the_documented_layers(model):
    attention = lora_layers(model, ["attention"])
    assert TO_Q in attention and all(p.startswith("unet/") for p in attention)
    assert len(attention) == 4 * 2 * 7  # q/k/v/out x attn1/attn2 x tiny transformers (2 down, 1 mid, 4 up)
    convs = lora_layers(model, ["convs"])
    assert CONV in convs and tuple(convs[CONV]._kernel.shape) == (3, 3, 32, 32)
    text = lora_layers(model, ["text"])
    assert "text_encoder/text_model/encoder.layers.0/self_attn/q_proj" in text
    assert "text_encoder/text_model/encoder.layers.1/mlp/fc2" in text
    with pytest.raises(ValueError, match="targets must be among"):
        lora_layers(model, ["everything"])


def test_combination_equals_the_weighted_sum_of_deltas():
    first, second = synthetic(2, 4.0, 0), synthetic(3, 1.5, 1, layers=(TO_Q, CONV.replace("conv1", "conv2")))
    second.arrays[CONV.replace("conv1", "conv2") + "/lora_kernel_a"] = np.ones((3, 3, 32, 3), "float32")
    second.arrays[CONV.replace("conv1", "conv2") + "/lora_kernel_b"] = np.ones((3, 32), "float32")
    combined = combine_loras([(first, 0.7), (second, -0.2)])
    assert combined.rank == 5 and combined.alpha == 5.0
    np.testing.assert_allclose(combined.delta(TO_Q), 0.7 * first.delta(TO_Q) - 0.2 * second.delta(TO_Q), rtol=1e-5, atol=1e-5)
    conv = CONV.replace("conv1", "conv2")
    np.testing.assert_allclose(combined.delta(conv), -0.2 * second.delta(conv), rtol=1e-6)


def test_saved_file_reads_back_and_bad_files_are_named(tmp_path):
    lora = synthetic(2, 4.0, 0)
    path = save_lora(str(tmp_path / "a.npz"), lora)
    back = read_lora(path)
    assert back.rank == 2 and back.alpha == 4.0 and back.layers == [TO_Q]
    np.testing.assert_array_equal(back.arrays[TO_Q + "/lora_kernel_a"], lora.arrays[TO_Q + "/lora_kernel_a"])

    broken = dict(lora.arrays)
    broken[TO_Q + "/lora_kernel_b"] = np.zeros((3, 32), "float32")
    weights.save_arrays(str(tmp_path / "rank.npz"), broken, lora.manifest)
    with pytest.raises(weights.WeightFileError, match=r"rank.npz: key '.*to_q/lora_kernel_b' expected shape \(2, out\), found \(3, 32\)"):
        read_lora(str(tmp_path / "rank.npz"))
    del broken[TO_Q + "/lora_kernel_b"]
    weights.save_arrays(str(tmp_path / "pair.npz"), broken, lora.manifest)
    with pytest.raises(weights.WeightFileError, match="lora_kernel_b' expected .* not found"):
        read_lora(str(tmp_path / "pair.npz"))
    weights.save_arrays(str(tmp_path / "other.npz"), lora.arrays, {"format": "something-else"})
    with pytest.raises(weights.WeightFileError, match="key 'format' expected 'kerasemote-lora'"):
        read_lora(str(tmp_path / "other.npz"))


def test_apply_adds_the_scaled_delta_and_checks_shapes(model):
    layer = lora_layers(model, ["attention"])[TO_Q]
    before = layer._kernel.numpy().copy()
    lora = synthetic(2, 4.0, 0)
    apply_lora(model, lora, scale=0.5)
    np.testing.assert_allclose(layer._kernel.numpy(), before + 0.5 * lora.delta(TO_Q), rtol=1e-6, atol=1e-6)
    apply_lora(model, lora, scale=-0.5)
    np.testing.assert_allclose(layer._kernel.numpy(), before, atol=1e-5)

    wrong = synthetic(2, 4.0, 0, layers=("unet/down_blocks.1/attentions.0/transformer_blocks.0/attn1/to_q",))
    with pytest.raises(weights.WeightFileError, match=r"expected A \(64, 2\) and B \(2, 64\) for kernel \(64, 64\), found A \(32, 2\)"):
        apply_lora(model, wrong)
    missing = synthetic(2, 4.0, 0, layers=("unet/nowhere/to_q",))
    with pytest.raises(weights.WeightFileError, match="names no layer"):
        apply_lora(model, missing)


@pytest.mark.parametrize(
    "text, expected",
    [("a.npz", ("a.npz", 1.0)), ("a.npz:0.7", ("a.npz", 0.7)), ("gs://b/x.npz:-1", ("gs://b/x.npz", -1.0)),
     ("gs://b/x.npz", ("gs://b/x.npz", 1.0))],
)
def test_lora_argument_scale(text, expected):
    assert parse_lora_argument(text) == expected
