"""From-scratch pretraining of a small text-to-image model on the packaged emoji.

Two stages, both resumable bit for bit from their newest checkpoint::

    OUT/vae/checkpoints/step-*.npz     stage 1: VAE encoder + decoder (L1 + L2 + KL), own loop
    OUT/vae/vae.json                   written when stage 1 ends: scaling factor, test PSNR
    OUT/vae_decoder/                   optional stage 1b: the decoder alone, encoder frozen, so the
                                       latents (and a UNet trained on them) stay valid
    OUT/vae_new/                       optional stage 1c of a warm start: a new VAE (``--config``'s
                                       VAE sizes) whose latents are held near the warm start's
                                       (``latent_anchor``), so its text encoder and UNet stay useful
    OUT/text_to_image/                 stage 2: the shared training loop (``loop.train``) with
                                       ``TextToImage``: text encoder + UNet on cached latents
    OUT/text_to_image/model/           the finished model directory (float16)

Stage 2 oversamples faces (emotion-labelled ones most) because the expression is what the
prompt has to control, and gives every image several captions (its name with and without
the vendor's style token, its emotion, and an empty caption for classifier-free guidance).

Example:
    >>> settings = PretrainSettings(vae_steps=1500, steps=4000)
    >>> result = pretrain("emoji64/", "runs/pretrain", settings, resume=True)
    >>> model = StableDiffusion.load(result.model_dir)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from kerasemote import storage
from kerasemote.config import ModelConfig, get_config
from kerasemote.model import StableDiffusion, to_uint8
from kerasemote.models.vae import latent_distribution
from kerasemote.training import checkpoints
from kerasemote.training.data import ImageSet, batch_plan, read_square_image
from kerasemote.training.loop import LearningRate, Strategy, TrainConfig, train

logger = logging.getLogger(__name__)

VAE_DIR = "vae"
VAE_SUMMARY = "vae.json"
DECODER_DIR = "vae_decoder"
NEW_VAE_DIR = "vae_new"
# stage -> (offset of its batch-plan steps, offset of its noise seed): each stage draws its own batches and noise
STAGES = {VAE_DIR: (0, 7), DECODER_DIR: (1_000_003, 11), NEW_VAE_DIR: (2_000_003, 13)}
STAGE2_DIR = "text_to_image"
MODEL_DIR = "model"
VALIDATION_PROMPTS = (
    "a grinning face emoji",
    "a crying face emoji",
    "an angry face emoji",
    "a smiling face with heart-eyes emoji",
    "a broccoli emoji",
    "a red heart emoji",
)


@dataclass(frozen=True)
class PretrainSettings:
    """The recipe's knobs; a resumed run must keep all but the step counts and bookkeeping.

    Args:
        config: model config name or ``ModelConfig`` (``kerasemote-tiny``).
        vae_steps: stage-1 optimizer steps.
        vae_batch_size: stage-1 images per step.
        vae_learning_rate: stage-1 peak learning rate (AdamW, 100 warm-up steps).
        kl_weight: weight of the mean per-element KL term next to L1 + L2 in [-1, 1] pixels.
        decoder_steps: stage-1b steps: fine-tune the decoder alone (encoder frozen) on
            latent samples, sharper images without changing the latent space (0: skip).
            With ``init_from`` they continue from the warm-start decoder.
        new_vae_steps: stage-1c steps of a warm start (``init_from``): replace its VAE by a new
            one of ``config``'s VAE sizes (kerasemote-tiny's first VAE had lost green), trained
            from random weights with its latents anchored to the old VAE's; the text encoder and
            UNet are kept and stage 2 continues on the new latents (0: keep the old VAE).
        color_weight: stages 1, 1b and 1c: weight of a colour term next to L1 + L2: the mean
            |difference| of the two opponent colour axes (green-magenta, red-blue) of the images
            averaged over each latent cell. A plain pixel loss is ruled by the sharp outlines of
            emoji; this term weighs the flat colours, which the first kerasemote-tiny VAE lost.
        latent_anchor: stage 1c: weight of the mean squared distance between the new and the
            warm start's latent means (unscaled), next to L1 + L2, so the new latent space lies
            near the old one wherever the reconstruction allows and the warm-start UNet fits it.
        steps: stage-2 optimizer steps in all (a warm start's steps included).
        batch_size: stage-2 examples per step.
        learning_rate: stage-2 peak learning rate.
        lr_schedule: stage 2 after the warm-up: ``constant`` (a run can be extended by
            raising ``steps``) or ``cosine`` (to zero at ``steps``; a warm start decays from
            its first step, so a last stage settles instead of oscillating).
        warmup_steps: stage-2 linear warm-up (a warm start warms up again: fresh AdamW).
        min_snr_gamma: stage-2 min-SNR-gamma weighting.
        ema_decay: stage-2 EMA of the weights (what the model directory holds); None: off.
        emotion_repeat: copies of each emotion-labelled image of the most common emotion in
            stage 2; with ``balance_emotions`` the rarer emotions get proportionally more.
        balance_emotions: repeat each emotion's images so that every emotion is drawn about
            as often as the most common one (angry has a third of happy's faces).
        face_repeat: copies of each other face emoji (name contains "face") in stage 2.
        seed: seed of every random draw of both stages.
        checkpoint_every: steps between checkpoints (both stages).
        validate_every: stage-2 steps between validation grids (0: never).
        export_every: stage-2 steps between exports of the model directory (0: end only).
    """

    config: str | ModelConfig = "kerasemote-tiny"
    vae_steps: int = 1000
    vae_batch_size: int = 16
    vae_learning_rate: float = 1e-3
    kl_weight: float = 1e-4
    decoder_steps: int = 0
    new_vae_steps: int = 0
    color_weight: float = 0.0
    latent_anchor: float = 0.01
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

    def vae_facts(self, stage: str = "vae") -> dict[str, Any]:
        """What a resumed stage 1 (``vae``), 1b (``vae_decoder``) or 1c (``vae_new``) must match."""
        facts = {"config": self.model_config.to_dict(), "batch_size": self.vae_batch_size,
                 "learning_rate": self.vae_learning_rate, "kl_weight": self.kl_weight, "seed": self.seed}
        if stage == DECODER_DIR:
            facts = {**facts, "decoder_only": True}
            facts.pop("kl_weight")
        elif stage == NEW_VAE_DIR:
            facts = {**facts, "new_vae_of_warm_start": True, "latent_anchor": self.latent_anchor}
        if self.color_weight:  # only when set, so checkpoints written before the term existed still resume
            facts["color_weight"] = self.color_weight
        return facts


@dataclass
class PretrainResult:
    """Where the run ended: stage-1 facts, the stage-2 step and loss, the model directory."""

    vae: dict[str, Any]
    step: int
    losses: list[float]
    model_dir: str


# ---------------------------------------------------------------------- data


@dataclass(frozen=True)
class EmojiRow:
    """The metadata of one prepared image that the recipe uses."""

    file: str
    description: str
    vendor: str
    label: str | None
    split: str


def read_prepared(path: str, size: int) -> tuple[np.ndarray, list[EmojiRow], dict[str, str]]:
    """A ``kerasemote data prepare`` directory: images uint8 (N, size, size, 3), rows, vendor tokens.

    Raises:
        FileNotFoundError: no ``metadata.jsonl`` in ``path``.
        ValueError: a row without the keys the recipe needs (file and line named).
    """
    meta = storage.join(path, "metadata.jsonl")
    if not storage.exists(meta):
        raise FileNotFoundError(f"--data {path}: no metadata.jsonl; write one with `kerasemote data prepare "
                                "--source twemoji,openmoji,noto --size 64 --out DIR`.")
    rows = []
    for number, line in enumerate(storage.read_bytes(meta).decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
            rows.append(EmojiRow(raw["file"], raw["description"], raw["vendor"], raw.get("label"), raw["split"]))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{meta}:{number}: expected keys file, description, vendor, split; "
                             f"found {line[:80]!r} ({err}).") from None
    tokens_path = storage.join(path, "vendor_tokens.json")
    tokens = json.loads(storage.read_bytes(tokens_path)) if storage.exists(tokens_path) else {}
    images = np.stack([read_square_image(storage.join(path, r.file), size) for r in rows])  # (N, S, S, 3)
    return images, rows, tokens


def _article(words: str) -> str:
    return "an" if words[:1].lower() in "aeiou" else "a"


def captions_for(row: EmojiRow, style_token: str | None) -> tuple[str, ...]:
    """Caption candidates of one image; one is drawn each time the image is used.

    The name alone and with an article (the evaluation prompts' form), with the vendor's
    style token, and for labelled faces the emotion word; each twice, next to one empty
    caption, so about one draw in ten is unconditional (classifier-free guidance).
    """
    name = " ".join(row.description.split())
    named = [f"{name} emoji", f"{_article(name)} {name} emoji"]
    if style_token:
        named.append(f"{_article(name)} {name} emoji in {style_token} style")
    if row.label:
        named += [f"{_article(row.label)} {row.label} face emoji", f"{_article(name)} {name} emoji, {row.label}"]
    return tuple(named * 2) + ("",)


def emotion_repeats(labels: Sequence[str], repeat: int, balance: bool = True) -> dict[str, int]:
    """Copies of each image per emotion label: ``repeat``, or with ``balance`` ``repeat`` times
    (count of the most common label / count of this label), rounded, so each emotion is drawn
    about equally often.

    Example:
        >>> emotion_repeats(["happy"] * 4 + ["angry"] * 2, 10)
        {'happy': 10, 'angry': 20}
    """
    counts = Counter(labels)
    most = max(counts.values(), default=1)
    return {label: max(1, round(repeat * most / n)) if balance else repeat for label, n in counts.items()}


def is_face(row: EmojiRow) -> bool:
    return bool(row.label) or " face" in f" {row.description.lower()}"


def stage2_images(images: np.ndarray, rows: Sequence[EmojiRow], tokens: Mapping[str, str],
                  settings: PretrainSettings) -> ImageSet:
    """Every image with its caption candidates, faces repeated (emotion-labelled ones most)."""
    per_label = emotion_repeats([r.label for r in rows if r.label], settings.emotion_repeat,
                                settings.balance_emotions)
    repeats = [per_label[r.label] if r.label else settings.face_repeat if is_face(r) else 1 for r in rows]
    order = np.repeat(np.arange(len(rows)), repeats)
    return ImageSet(
        images=images[order],
        captions=tuple(captions_for(rows[i], tokens.get(rows[i].vendor)) for i in order),
        concepts=tuple(rows[i].label or rows[i].vendor for i in order),
        files=tuple(rows[i].file for i in order),
    )


# ---------------------------------------------------------------------- model


def build_model(config: ModelConfig, style_tokens: Sequence[str], seed: int) -> StableDiffusion:
    """A random model whose tokenizer knows the vendor style tokens (``<s0>``...)."""
    model = StableDiffusion.random(config, seed=seed)
    rng = np.random.default_rng(seed)
    for token in sorted(style_tokens):
        model.add_placeholder(token, 1, rng.normal(0.0, 0.02, (config.text_width,)).astype("float32"))
    return model


# ---------------------------------------------------------------------- stage 1: the VAE


def opponent_colors(pixels: tf.Tensor, cell: int) -> tf.Tensor:
    """(B, S, S, 3) RGB -> (B, S/cell, S/cell, 2): green-magenta and red-blue axes, averaged per cell."""
    pooled = tf.nn.avg_pool2d(pixels, cell, cell, "VALID")
    r, g, b = tf.unstack(pooled, axis=-1)
    return tf.stack([g - 0.5 * (r + b), r - b], axis=-1)


def vae_loss(model: StableDiffusion, pixels: tf.Tensor, noise: tf.Tensor, kl_weight: float,
             decoder_only: bool = False, anchor: tf.Tensor | None = None, anchor_weight: float = 0.0,
             color_weight: float = 0.0):
    """Loss of one batch: mean |x - x'| + mean (x - x')^2 + kl_weight * mean KL (+ colour, anchor terms).

    Args:
        pixels: float32 (B, S, S, 3) in [-1, 1].
        noise: float32 (B, S/f, S/f, C) standard normal, for the latent sample.
        decoder_only: no gradient through the encoder (stage 1b).
        anchor: float32 (B, S/f, S/f, C) latent means to stay near (stage 1c), or None.
        anchor_weight: weight of mean (mean - anchor)^2.
        color_weight: weight of the mean |difference| of ``opponent_colors`` per latent cell.

    Returns:
        ``(loss, {"l1", "l2", "kl", "anchor", "color"})`` scalars.
    """
    moments = model.vae_encoder(pixels)  # (B, h, w, 2C)
    if decoder_only:
        moments = tf.stop_gradient(moments)
    mean, std = latent_distribution(moments)
    recon = model.vae_decoder(mean + std * noise)  # (B, S, S, 3)
    l1 = tf.reduce_mean(tf.abs(recon - pixels))
    l2 = tf.reduce_mean(tf.square(recon - pixels))
    kl = 0.5 * tf.reduce_mean(tf.square(mean) + tf.square(std) - 1.0 - 2.0 * tf.math.log(std + 1e-12))
    drift = tf.zeros([]) if anchor is None else tf.reduce_mean(tf.square(mean - anchor))
    cell = pixels.shape[1] // mean.shape[1]
    color = tf.reduce_mean(tf.abs(opponent_colors(recon, cell) - opponent_colors(pixels, cell)))
    loss = l1 + l2 + kl_weight * kl + anchor_weight * drift + color_weight * color
    return loss, {"l1": l1, "l2": l2, "kl": kl, "anchor": drift, "color": color}


class _VAEStepper:
    """One stage-1 (1b, 1c) optimizer step as a tf.function; every draw keyed by (seed, stage, step)."""

    def __init__(self, model: StableDiffusion, images: np.ndarray, settings: PretrainSettings, optimizer,
                 stage: str = VAE_DIR, anchor_encoder=None):
        self.model, self.settings, self.optimizer = model, settings, optimizer
        self.stage, self.anchor_encoder = stage, anchor_encoder
        self.decoder_only = stage == DECODER_DIR
        self.variables = vae_variables(model, self.decoder_only)
        self.images = tf.constant(images)  # (N, S, S, 3) uint8
        n = len(images)
        self.rows, self.counts = tf.zeros([n, 1], tf.int32), tf.ones([n], tf.int32)
        f, c = model.config.vae_downsample, model.config.latent_channels
        self.latent_shape = [settings.vae_batch_size, images.shape[1] // f, images.shape[2] // f, c]
        self.step = tf.function(self._step)

    def _step(self, step):
        s = self.settings
        batch_offset, seed_offset = STAGES[self.stage]
        plan = batch_plan(step + batch_offset, seed=s.seed, batch_size=s.vae_batch_size,
                          num_examples=len(self.counts),
                          caption_rows=self.rows, caption_counts=self.counts, flip=True)
        x = tf.cast(tf.gather(self.images, plan["index"]), tf.float32) / 127.5 - 1.0  # (B, S, S, 3)
        x = tf.where(tf.cast(plan["flip"], tf.bool)[:, None, None, None], x[:, :, ::-1], x)
        key = tf.stack([tf.cast(s.seed, tf.int64) + seed_offset, tf.cast(step, tf.int64)])
        noise = tf.random.stateless_normal(self.latent_shape, key, alg="philox")
        anchor = None
        if self.anchor_encoder is not None:
            anchor, _ = latent_distribution(self.anchor_encoder(x))  # outside the tape: no gradient
        with tf.GradientTape() as tape:
            loss, parts = vae_loss(self.model, x, noise, 0.0 if self.decoder_only else s.kl_weight,
                                   self.decoder_only, anchor, s.latent_anchor if anchor is not None else 0.0,
                                   s.color_weight)
        grads = tape.gradient(loss, self.variables)
        grads, _ = tf.clip_by_global_norm(grads, 1.0)
        self.optimizer.apply(grads, self.variables)
        return loss, parts


def vae_variables(model: StableDiffusion, decoder_only: bool = False) -> list:
    """The variables stage 1 (encoder + decoder) or stage 1b (decoder) trains."""
    decoder = list(model.vae_decoder.trainable_variables)
    return decoder if decoder_only else list(model.vae_encoder.trainable_variables) + decoder


def train_vae(model: StableDiffusion, images: np.ndarray, settings: PretrainSettings, out_dir: str,
              resume: bool = True, progress: bool = True, decoder_only: bool = False,
              anchor_encoder=None) -> list[float]:
    """Stage 1: train the VAE for ``settings.vae_steps`` steps; checkpoints in ``out_dir/checkpoints``.

    Args:
        model: the model whose VAE trains (in place).
        images: uint8 (N, S, S, 3) training images.
        out_dir: stage folder.
        resume: continue from the newest checkpoint in ``out_dir`` when there is one.
        decoder_only: stage 1b: ``settings.decoder_steps`` steps on the decoder alone (the
            encoder, hence the latent space, stays as it is).
        anchor_encoder: stage 1c: a frozen copy of the warm start's encoder; the whole VAE
            trains ``settings.new_vae_steps`` steps with its latent means as the anchor.

    Returns:
        The loss of every step so far (resumed steps included).
    """
    if decoder_only and anchor_encoder is not None:
        raise ValueError("train_vae: decoder_only (stage 1b) and anchor_encoder (stage 1c) exclude each other.")
    stage = DECODER_DIR if decoder_only else NEW_VAE_DIR if anchor_encoder is not None else VAE_DIR
    total = {VAE_DIR: settings.vae_steps, DECODER_DIR: settings.decoder_steps,
             NEW_VAE_DIR: settings.new_vae_steps}[stage]
    variables = vae_variables(model, decoder_only)
    schedule = LearningRate(settings.vae_learning_rate, total, min(100, total), "constant")
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=1e-4, name="vae_optimizer")
    optimizer.build(variables)
    start, losses = (_restore_vae(out_dir, settings, variables, optimizer, stage) if resume
                     else (0, []))
    stepper = _VAEStepper(model, images, settings, optimizer, stage, anchor_encoder)
    manifest = {"stage": stage, "settings": settings.vae_facts(stage)}
    bar = tqdm(total=total, initial=start, desc=stage, disable=not progress)
    for step in range(start, total):
        loss, parts = stepper.step(tf.constant(step, tf.int64))
        losses.append(float(loss))
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"VAE loss is {losses[-1]} at step {step + 1}; lower --vae-learning-rate.")
        bar.update(1)
        shown = {"l1": f"{float(parts['l1']):.4f}", "color": f"{float(parts['color']):.4f}",
                 "kl": f"{float(parts['kl']):.2f}"}
        if anchor_encoder is not None:
            shown["anchor"] = f"{float(parts['anchor']):.4f}"
        bar.set_postfix(shown)
        done = step + 1
        if done == total or (settings.checkpoint_every and done % settings.checkpoint_every == 0):
            checkpoints.save_checkpoint(out_dir, done, variables, optimizer, {**manifest, "losses": losses})
    bar.close()
    return losses


def _restore_vae(out_dir: str, settings: PretrainSettings, variables, optimizer,
                 stage: str = VAE_DIR) -> tuple[int, list[float]]:
    path = checkpoints.latest_checkpoint(out_dir)
    if path is None:
        return 0, []
    arrays, manifest = checkpoints.load_checkpoint(path)
    wanted = json.loads(json.dumps(settings.vae_facts(stage)))
    found = manifest.get("settings", {})
    bad = [f"{path}: key 'settings.{k}' expected {wanted[k]!r} (this run), found {found.get(k)!r}."
           for k in wanted if found.get(k) != wanted[k]]
    if bad:
        raise ValueError("\n".join(bad) + "\nResume with the original VAE settings or use a new --out.")
    checkpoints.restore_checkpoint(path, arrays, variables, optimizer)
    return int(manifest["step"]), list(manifest.get("losses", []))


def load_vae_checkpoint(model: StableDiffusion, out_dir: str) -> int:
    """Put the newest stage-1 weights into ``model``; returns their step."""
    path = checkpoints.latest_checkpoint(out_dir)
    if path is None:
        raise FileNotFoundError(f"{out_dir}: no VAE checkpoint (checkpoints/step-*.npz).")
    arrays, manifest = checkpoints.load_checkpoint(path)
    by_path = {v.path: v for v in model.vae_encoder.weights + model.vae_decoder.weights}
    for key, value in arrays.items():
        if key.startswith("model/"):
            by_path[key[len("model/"):]].assign(value)
    return int(manifest["step"])


def latent_scaling_factor(model: StableDiffusion, images: np.ndarray, batch_size: int = 64) -> float:
    """``1 / std`` of unscaled latent samples over ``images``: brings latents to unit variance (SD's recipe)."""
    sums = np.zeros(3)
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].astype("float32") / 127.5 - 1.0
        mean, std = (np.asarray(a, "float64") for a in latent_distribution(model.vae_encoder(x)))
        # E[z] and E[z^2] of z = mean + std * eps, summed over elements.
        sums += [mean.sum(), (np.square(mean) + np.square(std)).sum(), mean.size]
    first, second = sums[0] / sums[2], sums[1] / sums[2]
    return float(1.0 / math.sqrt(max(second - first**2, 1e-12)))


def reconstruction_psnr(model: StableDiffusion, images: np.ndarray, batch_size: int = 64) -> float:
    """PSNR (dB, uint8 pixels) of decoding the latent mean of each image; the mean over images."""
    scores = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        mean, _ = latent_distribution(model.vae_encoder(chunk.astype("float32") / 127.5 - 1.0))
        recon = to_uint8(model.vae_decoder(mean)).astype("float64")
        mse = np.mean(np.square(recon - chunk.astype("float64")), axis=(1, 2, 3))  # (b,)
        scores.append(10.0 * np.log10(255.0**2 / np.maximum(mse, 1e-10)))
    return float(np.mean(np.concatenate(scores)))


# ---------------------------------------------------------------------- stage 2: text encoder + UNet


class TextToImage(Strategy):
    """Train the text encoder and the UNet together; save a whole model directory.

    Args:
        save_dtype: dtype of the saved model files.
        initial_steps: steps already done by warm-start weights (their count continues).
    """

    name = "text-to-image"
    default_learning_rate = 2e-4
    trains_text_encoder = True

    def __init__(self, save_dtype: str = "float16", initial_steps: int = 0):
        self.save_dtype = save_dtype
        self.initial_steps = initial_steps

    def trainable_variables(self, model) -> list:
        return list(model.text_encoder.trainable_variables) + list(model.unet.trainable_variables)

    def caption(self, images: ImageSet) -> ImageSet:
        return images  # captions_for already gave every image its candidates

    def validation_prompts(self) -> list[str]:
        return list(VALIDATION_PROMPTS)

    def initial_step(self) -> int:
        return self.initial_steps

    def save(self, model, out_dir: str, step: int, ema: dict[str, np.ndarray] | None = None) -> list[str]:
        target = storage.join(out_dir, MODEL_DIR)
        save_model(model, target, step, ema, self.save_dtype)
        return [target]


def save_model(model: StableDiffusion, directory: str, step: int, ema: Mapping[str, np.ndarray] | None = None,
               dtype: str = "float16", extra: Mapping[str, Any] | None = None) -> None:
    """Write the model directory with the EMA weights swapped in (the live ones are put back after)."""
    weights = model.text_encoder.weights + model.unet.weights
    by_path = {v.path: v for v in weights}
    if len(by_path) != len(weights):
        raise AssertionError("Text encoder and UNet variable paths collide; EMA weights cannot be matched.")
    live = {path: np.array(by_path[path].numpy()) for path in (ema or {})}
    for path, value in (ema or {}).items():
        by_path[path].assign(value)
    try:
        facts = {"strategy": TextToImage.name, "steps": int(step), "ema": bool(ema)}
        model.save(directory, dtype=dtype, extra={"training": facts, **(extra or {})})
    finally:
        for path, value in live.items():
            by_path[path].assign(value)


def stage2_config(settings: PretrainSettings, progress: bool = True) -> TrainConfig:
    return TrainConfig(
        steps=settings.steps, batch_size=settings.batch_size, learning_rate=settings.learning_rate,
        lr_schedule=settings.lr_schedule, warmup_steps=settings.warmup_steps,
        min_snr_gamma=settings.min_snr_gamma, ema_decay=settings.ema_decay,
        seed=settings.seed, checkpoint_every=settings.checkpoint_every, validate_every=settings.validate_every,
        validation_prompts=VALIDATION_PROMPTS, validation_steps=20, keep_checkpoints=2, progress=progress,
    )


# ---------------------------------------------------------------------- the recipe


def pretrain(data_dir: str, out_dir: str, settings: PretrainSettings, resume: bool = True,
             init_from: str | None = None, export_dir: str | None = None, progress: bool = True) -> PretrainResult:
    """Run (or continue) both stages; see the module docstring for the folder layout.

    Args:
        data_dir: a prepared directory (``kerasemote data prepare ... --size 64``).
        out_dir: the run folder.
        settings: the recipe.
        resume: continue each stage from its newest checkpoint in ``out_dir``.
        init_from: warm start from a model directory written by this recipe (e.g. the
            committed ``weights/kerasemote-tiny``): stage 1 is skipped, stage 2 starts from
            its weights with a fresh optimizer and continues its step count. When
            ``settings.steps`` is not past its step count, stage 2 is skipped and the model
            (with a decoder fine-tuned by ``decoder_steps``) is written as it is. With
            ``settings.new_vae_steps`` a new VAE replaces its own first (stage 1c) and stage 2
            continues on the new latents.
        export_dir: also write the model directory here (float16) every ``export_every``
            steps and at the end.

    Returns:
        The PretrainResult.
    """
    config = settings.model_config
    if settings.new_vae_steps and not init_from:
        raise ValueError("new_vae_steps (--new-vae-steps) replaces a warm start's VAE; give init_from "
                         "(--init-from MODEL_DIR), or train a VAE from scratch with vae_steps (--vae-steps).")
    if settings.new_vae_steps and export_dir and storage.same_path(init_from, export_dir):
        raise ValueError(f"--export {export_dir} is the --init-from folder: with --new-vae-steps the warm "
                         "start's encoder is the anchor of a resumed run, so it must not be overwritten; "
                         "export elsewhere and copy the folder when the run is done.")
    images, rows, tokens = read_prepared(data_dir, config.image_size)
    if init_from:
        model, vae, initial = _warm_start(init_from, config, new_vae=bool(settings.new_vae_steps))
        if settings.new_vae_steps:
            model, vae = _stage1c(model, images, rows, settings, storage.join(out_dir, NEW_VAE_DIR), vae, resume,
                                  progress)
    else:
        model = build_model(config, list(tokens.values()), settings.seed)
        vae, initial = _stage1(model, images, rows, settings, storage.join(out_dir, VAE_DIR), resume, progress), 0
        model.config = model.config.replace(scaling_factor=vae["scaling_factor"])
    if settings.decoder_steps:
        vae = _stage1b(model, images, rows, settings, storage.join(out_dir, DECODER_DIR), vae, resume, progress)
    run_dir = storage.join(out_dir, STAGE2_DIR)
    if initial and settings.steps <= initial:  # a warm start with no stage-2 step left (a decoder refresh)
        logger.info("Stage 2: the warm start is at step %d of %d already; writing the model.", initial,
                    settings.steps)
        model_dir = storage.join(run_dir, MODEL_DIR)
        for target in [model_dir] + ([export_dir] if export_dir else []):
            save_model(model, target, initial, None, "float16", {"vae": dict(vae)})
        return PretrainResult(vae=vae, step=initial, losses=[], model_dir=model_dir)
    data = stage2_images(images, rows, tokens, settings)
    logger.info("Stage 2: %d examples (%d images, faces repeated).", len(data), len(rows))
    strategy = TextToImage(initial_steps=initial)
    callbacks = [_exporter(model, export_dir, settings.export_every, vae)] if export_dir else []
    result = train(model, strategy, data, stage2_config(settings, progress), run_dir, resume=resume,
                   callbacks=callbacks)
    model_dir = storage.join(run_dir, MODEL_DIR)
    if export_dir and result.outputs:
        _copy_model(model_dir, export_dir, vae)
    return PretrainResult(vae=vae, step=result.step, losses=result.losses, model_dir=model_dir)


def _finished_stage(model, stage_dir: str, summary_path: str, steps: int, flag: str) -> dict[str, Any] | None:
    """The summary of a VAE stage that ended before, its weights put into ``model``; None if it has not ended.

    Raises:
        ValueError: it ended with another step count (stage 2 was built on that VAE).
    """
    if not storage.exists(summary_path):
        return None
    summary = json.loads(storage.read_bytes(summary_path))
    if summary["steps"] != steps:
        raise ValueError(f"{summary_path}: key 'steps' expected {steps} ({flag}), found "
                         f"{summary['steps']}; stage 2 was built on that VAE, so it cannot change now.")
    load_vae_checkpoint(model, stage_dir)
    return summary


def _stage1(model, images, rows, settings, vae_dir, resume, progress) -> dict[str, Any]:
    """Train (or finish) the VAE; returns the stage-1 summary (written once, then read back)."""
    summary_path = storage.join(vae_dir, VAE_SUMMARY)
    if resume and (summary := _finished_stage(model, vae_dir, summary_path, settings.vae_steps, "--vae-steps")):
        return summary
    train, test = _train_and_test(images, rows)
    started = time.time()
    losses = train_vae(model, train, settings, vae_dir, resume, progress)
    summary = {
        "steps": settings.vae_steps,
        "final_loss": float(np.mean(losses[-50:])),
        "scaling_factor": latent_scaling_factor(model, train),
        "test_psnr_db": reconstruction_psnr(model, test) if len(test) else None,
        "test_images": int(len(test)),
        "seconds_this_session": round(time.time() - started, 1),
    }
    storage.write_bytes(summary_path, json.dumps(summary, indent=2).encode())
    return summary


def _train_and_test(images: np.ndarray, rows: Sequence[EmojiRow]) -> tuple[np.ndarray, np.ndarray]:
    """The train-split and test-split images (the VAE stages train on the one, report PSNR on the other)."""
    split = np.array([r.split for r in rows])
    return images[split == "train"], images[split == "test"]


def _psnr_so_far(model: StableDiffusion, vae: Mapping[str, Any], test: np.ndarray) -> float | None:
    """Test PSNR of the VAE before a stage: from its facts, else measured (None without test images)."""
    before = vae.get("test_psnr_db")
    return reconstruction_psnr(model, test) if before is None and len(test) else before


def _stage1c(warm: StableDiffusion, images, rows, settings, new_dir, vae, resume,
             progress) -> tuple[StableDiffusion, dict[str, Any]]:
    """A new VAE for the warm start's text encoder and UNet, its latents anchored to the old VAE's.

    Returns the model with the new VAE (trained, or read back when the stage finished before)
    and ``vae`` with the new facts; the scaling factor is measured anew on the new latents.
    """
    summary_path = storage.join(new_dir, "vae_new.json")
    train, test = _train_and_test(images, rows)
    keras.utils.set_random_seed(settings.seed)
    model = StableDiffusion(settings.model_config.replace(scaling_factor=warm.config.scaling_factor),
                            warm.tokenizer, warm.text_encoder, warm.unet)  # a random VAE of the new sizes
    summary = (_finished_stage(model, new_dir, summary_path, settings.new_vae_steps, "--new-vae-steps")
               if resume else None)
    if summary is None:
        anchor = warm.vae_encoder
        anchor.trainable = False
        before = _psnr_so_far(warm, vae, test)
        started = time.time()
        losses = train_vae(model, train, settings, new_dir, resume, progress, anchor_encoder=anchor)
        summary = {
            "steps": settings.new_vae_steps,
            "latent_anchor": settings.latent_anchor,
            "color_weight": settings.color_weight,
            "final_loss": float(np.mean(losses[-50:])),
            "scaling_factor_before": float(warm.config.scaling_factor),
            "scaling_factor": latent_scaling_factor(model, train),
            "test_psnr_db_before": before,
            "test_psnr_db": reconstruction_psnr(model, test) if len(test) else None,
            "seconds_this_session": round(time.time() - started, 1),
        }
        storage.write_bytes(summary_path, json.dumps(summary, indent=2).encode())
        logger.info("New VAE: test PSNR %s -> %s dB; scaling factor %.4f -> %.4f.", before,
                    summary["test_psnr_db"], summary["scaling_factor_before"], summary["scaling_factor"])
    model.config = model.config.replace(scaling_factor=summary["scaling_factor"])
    facts = {"steps": settings.new_vae_steps, "new_vae_of_warm_start": True, "latent_anchor": settings.latent_anchor,
             "color_weight": settings.color_weight, "scaling_factor": summary["scaling_factor"],
             "test_psnr_db": summary["test_psnr_db"], "previous": dict(vae)}
    return model, facts


def _stage1b(model, images, rows, settings, decoder_dir, vae, resume, progress) -> dict[str, Any]:
    """Fine-tune the decoder alone (or finish doing so); returns ``vae`` with its new facts."""
    train, test = _train_and_test(images, rows)
    before = _psnr_so_far(model, vae, test)
    started = time.time()
    losses = train_vae(model, train, settings, decoder_dir, resume, progress, decoder_only=True)
    summary = {
        "steps": settings.decoder_steps,
        "final_loss": float(np.mean(losses[-50:])),
        "test_psnr_db_before": before,
        "test_psnr_db": reconstruction_psnr(model, test) if len(test) else None,
        "seconds_this_session": round(time.time() - started, 1),
    }
    storage.write_bytes(storage.join(decoder_dir, "vae_decoder.json"), json.dumps(summary, indent=2).encode())
    logger.info("Decoder fine-tune: test PSNR %s -> %s dB.", before, summary["test_psnr_db"])
    # ``vae`` holds the facts of the stage-1 or warm-start weights, so steps add up across runs.
    return {**vae, "decoder_steps": int(vae.get("decoder_steps", 0)) + settings.decoder_steps,
            "test_psnr_db": summary["test_psnr_db"]}


VAE_FIELDS = ("vae_channels", "vae_layers_per_block", "vae_norm_groups", "vae_norm_eps", "scaling_factor")


def _warm_start(init_from: str, config: ModelConfig,
                new_vae: bool = False) -> tuple[StableDiffusion, dict[str, Any], int]:
    model = StableDiffusion.load(init_from)
    manifest = json.loads(storage.read_bytes(storage.join(init_from, "config.json")))
    free = VAE_FIELDS if new_vae else ("scaling_factor",)  # what may differ from ``config``
    kept = {k: getattr(config, k) for k in free}
    if model.config.replace(**kept) != config:
        differ = sorted(k for k, v in config.to_dict().items() if model.config.to_dict().get(k) != v and k not in free)
        raise ValueError(f"{init_from}/config.json: key 'config' expected {config.name} sizes, found "
                         f"{model.config.name} (differs in {', '.join(differ)}); a warm start needs the same "
                         "architecture" + ("" if new_vae else " (a new VAE may differ: --new-vae-steps)") + ".")
    vae = manifest.get("vae", {"scaling_factor": model.config.scaling_factor})
    return model, vae, int(manifest.get("training", {}).get("steps", 0))


def _exporter(model: StableDiffusion, export_dir: str, every: int, vae: Mapping[str, Any]):
    """A train callback writing the live weights to ``export_dir`` every ``every`` steps."""

    def export(step: int, loss: float) -> None:
        if every and step % every == 0:
            save_model(model, export_dir, step, None, "float16", {"vae": dict(vae)})

    return export


def _copy_model(source: str, target: str, vae: Mapping[str, Any]) -> None:
    manifest = json.loads(storage.read_bytes(storage.join(source, "config.json")))
    storage.makedirs(target)
    for name in manifest["parts"].values():
        storage.write_bytes(storage.join(target, name), storage.read_bytes(storage.join(source, name)))
    manifest["vae"] = dict(vae)
    storage.write_bytes(storage.join(target, "config.json"), json.dumps(manifest, indent=2).encode())
