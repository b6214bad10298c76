"""Building a part by one eager call makes the variables Keras' traced build made; a part built to be loaded draws no random values."""

import hashlib

import numpy as np
import pytest

from kerasemote.config import TINY
from kerasemote.models import skip_init
from kerasemote.models.text_encoder import TextEncoder
from kerasemote.models.unet import UNet
from kerasemote.models.vae import VAEDecoder, VAEEncoder

BUILDERS = {"text_encoder": TextEncoder, "unet": UNet, "vae_encoder": VAEEncoder, "vae_decoder": VAEDecoder}

# Each TINY part's variables as Keras' symbolic (traced) build made them: their count and the first 16 hex
# digits of the sha256 of ``_layout``'s lines joined by newlines. Model directories, converters and LoRA files
# name variables by these paths, and ``model.weights`` lists them in this order.
TRACED_BUILD = {
    "text_encoder": (36, "958060940355771a"),
    "unet": (286, "4fd63c9e9a40e441"),
    "vae_encoder": (64, "1983b5428ef10c09"),
    "vae_decoder": (88, "8e9c844421b007b3"),
}


def _layout(model) -> list[str]:
    """One ``path [shape] dtype`` line per variable, in ``model.weights`` order."""
    return [f"{v.path} {list(v.shape)} {v.dtype}" for v in model.weights]


@pytest.mark.parametrize("part", sorted(BUILDERS))
def test_an_eager_build_makes_the_traced_builds_variables_in_the_same_order(part):
    lines = _layout(BUILDERS[part](TINY).build_with_dummy())
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]
    assert (len(lines), digest) == TRACED_BUILD[part], "\n".join(lines[:20])


def test_a_part_built_to_be_loaded_starts_at_zero_with_the_same_variables():
    with skip_init.skip_random_init():
        blank = UNet(TINY).build_with_dummy()
    drawn = UNet(TINY).build_with_dummy()  # after the block: random draws again
    assert _layout(blank) == _layout(drawn)
    # The timestep MLP is plain Keras Dense (a few small kernels): it keeps its random draw.
    kernels = [(a, b) for a, b in zip(blank.weights, drawn.weights)
               if a.path.endswith("/kernel") and "/time_embedding/" not in a.path]
    assert len(kernels) > 50
    assert all(not np.any(a.numpy()) and np.any(b.numpy()) for a, b in kernels)


def test_a_text_encoder_built_to_be_loaded_has_a_zero_token_table():
    with skip_init.skip_random_init():
        blank = TextEncoder(TINY).build_with_dummy()
    assert not np.any(blank.token_embedding.embeddings.numpy())
    assert np.any(TextEncoder(TINY).build_with_dummy().token_embedding.embeddings.numpy())


def test_skipping_random_draws_ends_with_its_block_even_when_the_block_raises():
    with pytest.raises(RuntimeError), skip_init.skip_random_init():
        assert skip_init.initializer("glorot_uniform") == "zeros"
        raise RuntimeError("interrupted build")
    assert skip_init.initializer("glorot_uniform") == "glorot_uniform"


def test_extra_token_rows_keep_every_value_of_the_encoder_they_extend():
    text = TextEncoder(TINY).build_with_dummy()
    rows = np.random.default_rng(0).normal(size=(2, TINY.text_width)).astype("float32")
    bigger = text.with_extra_tokens(rows)
    before = {v.path: v.numpy() for v in text.weights}
    for variable in bigger.weights:
        expected = rows if variable.path.endswith("extra_embeddings") else before[variable.path]
        np.testing.assert_array_equal(variable.numpy(), expected, err_msg=variable.path)
