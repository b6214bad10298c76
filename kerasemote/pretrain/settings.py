"""The pretraining recipe's settings, and the folders and files its stages write in a run folder.

The folder and file names, and the keys of ``PretrainSettings.vae_facts``, are what a
resumed run looks for (and what model directories written by the recipe record), so they
stay as they are on disk whatever the Python names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kerasemote.config import ModelConfig, get_config
from kerasemote.data.emotions import EMOTION_PROMPTS

# Stage folders inside a run folder (on-disk names, read back on resume).
VAE_DIR = "vae"  # train_autoencoder: the VAE from random weights
VAE_SUMMARY = "vae.json"
DECODER_DIR = "vae_decoder"  # tune_decoder: the decoder alone, encoder frozen
DECODER_SUMMARY = "vae_decoder.json"
REPLACEMENT_VAE_DIR = "vae_new"  # replace_vae: a new VAE for a warm start, latents anchored to the old
REPLACEMENT_VAE_SUMMARY = "vae_new.json"
TEXT_TO_IMAGE_DIR = "text_to_image"  # train_text_to_image: text encoder + UNet on cached latents
MODEL_DIR = "model"  # inside TEXT_TO_IMAGE_DIR: the finished model directory
# VAE stage folder -> (offset of its batch-plan steps, offset of its noise seed): each stage draws its own
# batches and noise.
VAE_STAGE_DRAWS = {VAE_DIR: (0, 7), DECODER_DIR: (1_000_003, 11), REPLACEMENT_VAE_DIR: (2_000_003, 13)}
VALIDATION_PROMPTS = (
    *EMOTION_PROMPTS.values(),
    "a broccoli emoji",
    "a red heart emoji",
)


@dataclass(frozen=True)
class PretrainSettings:
    """The recipe's knobs; a resumed run must keep all but the step counts and bookkeeping.

    The VAE stages (``train_autoencoder``, ``tune_decoder``, ``replace_vae``) share the
    ``vae_*`` settings; ``steps`` to ``face_repeat`` belong to the text-to-image stage.

    Args:
        config: model config name or ``ModelConfig`` (``kerasemote-tiny``).
        vae_steps: optimizer steps of the VAE trained from random weights.
        vae_batch_size: images per step of every VAE stage.
        vae_learning_rate: peak learning rate of every VAE stage (AdamW, 100 warm-up steps).
        kl_weight: weight of the mean per-element KL term next to L1 + L2 in [-1, 1] pixels.
        decoder_steps: steps of fine-tuning the decoder alone (encoder frozen) on latent
            samples: sharper images without changing the latent space (0: skip). With
            ``init_from`` they continue from the warm-start decoder.
        replace_vae_steps: with a warm start (``init_from``): replace its VAE by a new one of
            ``config``'s VAE sizes, trained from random weights with its latents anchored to
            the old VAE's (``latent_anchor_weight``); the text encoder and UNet are kept and the
            text-to-image stage continues on the new latents (0: keep the old VAE).
        color_weight: every VAE stage: weight of a colour term next to L1 + L2: the mean
            |difference| of the two opponent colour axes (green-magenta, red-blue) of the images
            averaged over each latent cell. A plain pixel loss is ruled by the sharp outlines of
            emoji; this term weighs their flat colours (0: off).
        latent_anchor_weight: the VAE replacement: weight of the mean squared distance between the
            new and the warm start's latent means (unscaled), next to L1 + L2, so the new latent
            space lies near the old one wherever the reconstruction allows and the warm-start
            UNet fits it.
        steps: text-to-image optimizer steps in all (a warm start's steps included).
        batch_size: text-to-image examples per step.
        learning_rate: text-to-image peak learning rate.
        lr_schedule: text-to-image schedule after the warm-up: ``constant`` (a run can be
            extended by raising ``steps``) or ``cosine`` (to zero at ``steps``; a warm start
            decays from its first step, so a last run settles instead of oscillating).
        warmup_steps: text-to-image linear warm-up (a warm start warms up again: fresh AdamW).
        min_snr_gamma: text-to-image min-SNR-gamma weighting.
        ema_decay: text-to-image EMA of the weights (what the model directory holds); None: off.
        emotion_repeat: copies of each emotion-labelled image of the most common emotion; with
            ``balance_emotions`` the rarer emotions get proportionally more.
        balance_emotions: repeat each emotion's images so that every emotion is drawn about
            as often as the most common one (angry has a third of happy's faces).
        face_repeat: copies of each other face emoji (name contains "face").
        seed: seed of every random draw of every stage.
        checkpoint_every: steps between checkpoints (every stage).
        validate_every: text-to-image steps between validation grids (0: never).
        export_every: text-to-image steps between exports of the model directory (0: end only).
    """

    config: str | ModelConfig = "kerasemote-tiny"
    vae_steps: int = 1000
    vae_batch_size: int = 16
    vae_learning_rate: float = 1e-3
    kl_weight: float = 1e-4
    decoder_steps: int = 0
    replace_vae_steps: int = 0
    color_weight: float = 0.0
    latent_anchor_weight: float = 0.01
    steps: int = 4000
    batch_size: int = 32
    learning_rate: float = 2e-4
    lr_schedule: str = "constant"
    warmup_steps: int = 200
    min_snr_gamma: float | None = 5.0
    ema_decay: float | None = 0.995
    emotion_repeat: int = 12
    balance_emotions: bool = True
    face_repeat: int = 3
    seed: int = 0
    checkpoint_every: int = 200
    validate_every: int = 500
    export_every: int = 250

    @property
    def model_config(self) -> ModelConfig:
        return get_config(self.config) if isinstance(self.config, str) else self.config

    def vae_stage_steps(self, stage: str) -> int:
        """Steps of a VAE stage, by its folder (``VAE_DIR``, ``DECODER_DIR``, ``REPLACEMENT_VAE_DIR``)."""
        return {VAE_DIR: self.vae_steps, DECODER_DIR: self.decoder_steps,
                REPLACEMENT_VAE_DIR: self.replace_vae_steps}[stage]

    def vae_facts(self, stage: str = VAE_DIR) -> dict[str, Any]:
        """What a resumed VAE stage (named by its folder) must match; stored in its checkpoints."""
        facts = {"config": self.model_config.to_dict(), "batch_size": self.vae_batch_size,
                 "learning_rate": self.vae_learning_rate, "kl_weight": self.kl_weight, "seed": self.seed}
        if stage == DECODER_DIR:
            facts = {**facts, "decoder_only": True}
            facts.pop("kl_weight")
        elif stage == REPLACEMENT_VAE_DIR:
            # On-disk keys: checkpoints and model directories of earlier runs carry these names.
            facts = {**facts, "new_vae_of_warm_start": True, "latent_anchor": self.latent_anchor_weight}
        if self.color_weight:  # only when set, so checkpoints written before the term existed still resume
            facts["color_weight"] = self.color_weight
        return facts


@dataclass
class PretrainResult:
    """Where the run ended: the VAE facts, the text-to-image step and losses, the model directory."""

    vae: dict[str, Any]
    step: int
    losses: list[float]
    model_dir: str
