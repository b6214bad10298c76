"""Training and measuring the VAE: the loss, a resumable optimizer loop, the scaling factor, PSNR.

Every VAE stage of the recipe (``train_autoencoder``, ``tune_decoder``, ``replace_vae``) runs
``train_vae``; each stage draws its own batches and noise, keyed by (seed, stage, step), so
a stage resumed from its newest checkpoint repeats the uninterrupted run bit for bit.
"""

from __future__ import annotations

import json
import math

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from kerasemote.model import StableDiffusion, to_uint8
from kerasemote.models.vae import latent_distribution
from kerasemote.pretrain.settings import DECODER_DIR, REPLACEMENT_VAE_DIR, VAE_DIR, VAE_STAGE_DRAWS, PretrainSettings
from kerasemote.training import checkpoints
from kerasemote.training.data import batch_plan
from kerasemote.training.optimizer import LearningRate


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
        decoder_only: no gradient through the encoder (``tune_decoder``).
        anchor: float32 (B, S/f, S/f, C) latent means to stay near (``replace_vae``), or None.
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
    """One optimizer step of a VAE stage as a tf.function; every draw keyed by (seed, stage, step)."""

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
        batch_offset, seed_offset = VAE_STAGE_DRAWS[self.stage]
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
                                   self.decoder_only, anchor, s.latent_anchor_weight if anchor is not None else 0.0,
                                   s.color_weight)
        grads = tape.gradient(loss, self.variables)
        grads, _ = tf.clip_by_global_norm(grads, 1.0)
        self.optimizer.apply(grads, self.variables)
        return loss, parts


def vae_variables(model: StableDiffusion, decoder_only: bool = False) -> list:
    """The variables a VAE stage trains: encoder + decoder, or the decoder alone."""
    decoder = list(model.vae_decoder.trainable_variables)
    return decoder if decoder_only else list(model.vae_encoder.trainable_variables) + decoder


def train_vae(model: StableDiffusion, images: np.ndarray, settings: PretrainSettings, out_dir: str,
              resume: bool = True, progress: bool = True, decoder_only: bool = False,
              anchor_encoder=None) -> list[float]:
    """Train the VAE of ``model`` in place; checkpoints in ``out_dir/checkpoints``.

    Without options: encoder + decoder for ``settings.vae_steps`` steps.

    Args:
        model: the model whose VAE trains (in place).
        images: uint8 (N, S, S, 3) training images.
        out_dir: stage folder.
        resume: continue from the newest checkpoint in ``out_dir`` when there is one.
        decoder_only: ``settings.decoder_steps`` steps on the decoder alone (the encoder,
            hence the latent space, stays as it is).
        anchor_encoder: a frozen copy of a warm start's encoder: the whole VAE trains
            ``settings.replace_vae_steps`` steps with its latent means as the anchor.

    Returns:
        The loss of every step so far (resumed steps included).
    """
    if decoder_only and anchor_encoder is not None:
        raise ValueError("train_vae: decoder_only (tune the decoder) and anchor_encoder (replace the VAE) "
                         "exclude each other.")
    stage = DECODER_DIR if decoder_only else REPLACEMENT_VAE_DIR if anchor_encoder is not None else VAE_DIR
    total = settings.vae_stage_steps(stage)
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
    """Put the newest VAE weights of a stage folder into ``model``; returns their step."""
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
