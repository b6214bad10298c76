"""Batches of changing size reuse the traced text encoder and decoder instead of tracing again."""

from __future__ import annotations

import numpy as np

from kerasemote.model import StableDiffusion


def test_text_encoder_and_decoder_trace_at_most_twice_for_many_batch_sizes():
    model = StableDiffusion.random("tiny", seed=0)
    for n in range(1, 6):  # 1..5 distinct prompts: the sizes a batch of mixed rows hands the text encoder
        model.encode_text([f"a {word} emoji" for word in ("cat", "dog", "fox", "owl", "bee")[:n]])
        model.decode_latents(np.zeros((n, 8, 8, model.config.latent_channels), np.float32))
    for part in (model.text_encoder, model.vae_decoder):
        (traced,) = part.__dict__["_kerasemote_compiled"].values()
        assert traced.experimental_get_tracing_count() <= 2, part.name
