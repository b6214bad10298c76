"""From-scratch pretraining of a small text-to-image model on the packaged emoji.

The recipe's stages, each resumable bit for bit from its newest checkpoint in the run folder::

    train_autoencoder    OUT/vae/             the VAE from random weights (L1 + L2 + KL)
    replace_vae          OUT/vae_new/         optional, with a warm start: a new VAE whose latents are
                                              anchored to the old one's, so its text encoder and UNet
                                              stay useful
    tune_decoder         OUT/vae_decoder/     optional: the decoder alone, encoder frozen
    train_text_to_image  OUT/text_to_image/   text encoder + UNet with the shared training loop on
                                              cached latents; OUT/text_to_image/model/ is the model

The text-to-image stage oversamples faces (emotion-labelled ones most) because the
expression is what the prompt has to control, and gives every image several captions (its
name with and without the vendor's style token, its emotion, and an empty caption for
classifier-free guidance).

Modules: ``settings`` (``PretrainSettings``, folder names), ``data`` (the prepared set
through ``kerasemote.data``, captions, oversampling), ``vae`` (loss, loop, measures),
``text_to_image`` (the training-loop strategy), ``recipe`` (the stages and ``pretrain``).

Example:
    >>> from kerasemote.pretrain import PretrainSettings, pretrain
    >>> settings = PretrainSettings(vae_steps=1500, steps=4000)
    >>> result = pretrain("emoji64/", "runs/pretrain", settings, resume=True)
    >>> model = StableDiffusion.load(result.model_dir)
"""

from kerasemote.pretrain.data import EmojiRow, captions_for, emotion_repeats, read_prepared, text_to_image_set
from kerasemote.pretrain.recipe import (
    build_model,
    pretrain,
    replace_vae,
    train_autoencoder,
    train_text_to_image,
    tune_decoder,
    warm_start,
)
from kerasemote.pretrain.settings import VALIDATION_PROMPTS, PretrainResult, PretrainSettings
from kerasemote.pretrain.text_to_image import TextToImage, save_model
from kerasemote.pretrain.vae import (
    latent_scaling_factor,
    opponent_colors,
    reconstruction_psnr,
    train_vae,
    vae_loss,
)

__all__ = [
    "EmojiRow", "PretrainResult", "PretrainSettings", "TextToImage", "VALIDATION_PROMPTS", "build_model",
    "captions_for", "emotion_repeats", "latent_scaling_factor", "opponent_colors", "pretrain", "read_prepared",
    "reconstruction_psnr", "replace_vae", "save_model", "text_to_image_set", "train_autoencoder",
    "train_text_to_image", "train_vae", "tune_decoder", "vae_loss", "warm_start",
]
