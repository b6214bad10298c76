"""The latent cache of training: each distinct image encoded once, same numbers as encoding alone."""

from __future__ import annotations

import numpy as np

from kerasemote.config import TINY
from kerasemote.model import StableDiffusion
from kerasemote.models.vae import latent_distribution
from kerasemote.training.data import encode_latent_cache


def test_repeated_images_share_one_encoding_and_match_encoding_each_alone():
    model = StableDiffusion.random(TINY.replace(image_size=16), seed=0)
    rng = np.random.default_rng(0)
    distinct = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    images = distinct[[0, 1, 0, 2, 2, 0]]
    mean, std = encode_latent_cache(model, images, batch_size=2)  # 3 distinct -> 2 batches, last padded
    side = 16 // TINY.vae_downsample
    assert mean.shape == (6, 2, side, side, TINY.latent_channels) and std.shape == mean.shape
    np.testing.assert_array_equal(mean[0], mean[2])
    np.testing.assert_array_equal(mean[3], mean[4])
    for i, j in [(0, 0), (1, 1), (3, 2)]:
        x = distinct[j : j + 1].astype("float32") / 127.5 - 1.0
        for k, view in enumerate([x, x[:, :, ::-1]]):
            m, s = latent_distribution(model.vae_encoder(view))
            np.testing.assert_allclose(mean[i, k], np.asarray(m)[0] * TINY.scaling_factor, atol=2e-5)
            np.testing.assert_allclose(std[i, k], np.asarray(s)[0] * TINY.scaling_factor, atol=2e-5)
