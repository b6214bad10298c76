"""The one training loop; strategies (textual inversion, LoRA, fine-tune) only say what trains.

One optimizer step::

    for each of grad_accum micro-batches (seeded by (seed, micro_step)):
        latents  <- cached VAE Gaussian of the image or its mirror, sampled   (B, h, w, C)
        noise, t <- standard normal (+ offset noise), uniform timesteps
        x_t      <- schedule.add_noise(latents, noise, t)
        loss     <- mean_b( w_b * mean_hwc((unet(x_t, t, text(caption)) - target)^2) )
    grads <- all-reduce(sum of micro-batch grads); clip by global norm; optimizer.apply

``target`` is ``NoiseSchedule.training_target`` (epsilon, v or flow velocity, following the
model's ``prediction_type``) and ``w_b`` the min-SNR-gamma weight (Hang et al. 2023). All
randomness is stateless and keyed by (seed, step), so a run resumed from a checkpoint
repeats the uninterrupted run bit for bit.

Example:
    >>> model = StableDiffusion.random("tiny", seed=0)
    >>> data = load_training_images("emoji/", size=64)
    >>> result = train(model, TextualInversion({"emoji": "<e>"}, init="face"), data,
    ...                TrainConfig(steps=100), "runs/e")
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from kerasemote import storage
from kerasemote.embeddings import base_model_info
from kerasemote.schedulers import NoiseSchedule
from kerasemote.training import checkpoints
from kerasemote.training.data import (
    ImageSet,
    encode_latent_cache,
    plan_dataset,
    tokenize_captions,
)

logger = logging.getLogger(__name__)

OPTIMIZERS = ("adamw", "adafactor")
LR_SCHEDULES = ("constant", "cosine")
# Keys of TrainConfig that may change between a run and its resumption.
RESUMABLE_CHANGES = frozenset(
    {"steps", "checkpoint_every", "keep_checkpoints", "validate_every", "validation_prompts",
     "validation_steps", "validation_seed", "progress"}
)


@dataclass(frozen=True)
class TrainConfig:
    """How to train (what trains is the strategy's business).

    Args:
        steps: optimizer steps in all (a resumed run continues up to this count).
        batch_size: examples per micro-batch (global: split over replicas).
        learning_rate: peak learning rate; None takes the strategy's default.
        optimizer: ``adamw`` or ``adafactor``.
        weight_decay: decoupled weight decay.
        lr_schedule: ``constant`` or ``cosine`` (to zero at ``steps``), after the warm-up.
        warmup_steps: linear warm-up steps.
        grad_accum: micro-batches summed into one optimizer step.
        clip_norm: clip gradients to this global norm; None for no clipping.
        min_snr_gamma: min-SNR-gamma loss weighting (5 is usual); None for plain MSE.
        noise_offset: scale of per-channel offset noise (0.05-0.1 helps very dark/bright images).
        jit_compile: compile the forward and backward pass with XLA.
        ema_decay: keep an exponential moving average of the trained weights (fine-tune);
            the saved weights are then the average.
        seed: seed of every random draw (examples, flips, captions, noise, timesteps).
        cache_latents: encode every image and its flip once; False encodes each batch
            (needed for random crops).
        flip: random left-right flips.
        crop_scale: random resized crops keeping at least this area fraction (needs
            ``cache_latents=False``).
        checkpoint_every: write a checkpoint every N steps (and always at the end); 0: end only.
        keep_checkpoints: newest checkpoints kept.
        validate_every: generate validation images every N steps; 0: never.
        validation_prompts: prompts for them; default the strategy's.
        validation_steps: sampler steps of validation images.
        validation_seed: seed of validation images (the same noise each time).
        progress: show a progress bar.
    """

    steps: int = 1000
    batch_size: int = 1
    learning_rate: float | None = None
    optimizer: str = "adamw"
    weight_decay: float = 1e-2
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    grad_accum: int = 1
    clip_norm: float | None = 1.0
    min_snr_gamma: float | None = None
    noise_offset: float = 0.0
    jit_compile: bool = False
    ema_decay: float | None = None
    seed: int = 0
    cache_latents: bool = True
    flip: bool = True
    crop_scale: float | None = None
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    validate_every: int = 0
    validation_prompts: tuple[str, ...] = ()
    validation_steps: int = 20
    validation_seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "validation_prompts", tuple(self.validation_prompts))
        checks = [
            (self.steps >= 1, "steps must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.grad_accum >= 1, "grad_accum must be >= 1"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}"),
            (self.lr_schedule in LR_SCHEDULES, f"lr_schedule must be one of {LR_SCHEDULES}"),
            (0 <= self.warmup_steps, "warmup_steps must be >= 0"),
            (self.crop_scale is None or 0 < self.crop_scale <= 1, "crop_scale must be in (0, 1]"),
            (self.ema_decay is None or 0 < self.ema_decay < 1, "ema_decay must be in (0, 1)"),
            (not (self.cache_latents and self.crop_scale not in (None, 1.0)),
             "random crops change the pixels every epoch, so they need cache_latents=False "
             "(--no-cache-latents)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"TrainConfig: {message}.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Strategy:
    """What trains and what is saved; subclasses: TextualInversion, LoRA, FineTune."""

    name = "strategy"
    default_learning_rate = 1e-4
    trains_text_encoder = False

    def prepare(self, model) -> None:
        """Change the model for training (add placeholders, enable LoRA); called once."""

    def trainable_variables(self, model) -> list:
        raise NotImplementedError

    def caption(self, images: ImageSet) -> ImageSet:
        """Captions for every image (sidecar text or templates)."""
        return images.with_captions()

    def validation_prompts(self) -> list[str]:
        return ["an emoji"]

    def settings(self) -> dict[str, Any]:
        """JSON facts a resumed run must match (tokens, rank, targets...)."""
        return {}

    def initial_step(self) -> int:
        """Steps already done by what ``prepare`` loaded (a seed-style embedding file)."""
        return 0

    def after_step(self, model) -> None:
        """Called after every optimizer step (textual inversion puts back the rows it must not change)."""

    def save(self, model, out_dir: str, step: int, ema: dict[str, np.ndarray] | None = None) -> list[str]:
        """Write the user-facing files (embeddings, LoRA, UNet); returns their paths."""
        raise NotImplementedError


@dataclass
class TrainResult:
    """What a run did.

    Args:
        step: optimizer steps done (the last good one if the loss went non-finite).
        losses: the loss of every step of this run and the resumed ones before it.
        status: ``completed`` or ``non-finite`` (NaN/inf loss; the model holds the last
            checkpoint's weights).
        outputs: the files the strategy saved.
        checkpoint: the newest checkpoint.
    """

    step: int
    losses: list[float]
    status: str
    outputs: list[str] = field(default_factory=list)
    checkpoint: str | None = None


class LearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to ``peak`` over ``warmup`` steps, then constant or cosine to zero at ``total``.

    ``start`` is the optimizer step the schedule begins at: a warm start that continues a
    model's step count (the optimizer's iterations start there) still gets its warm-up and
    its whole cosine, from ``start`` to ``total``.

    Example:
        >>> lr = LearningRate(1e-4, total=3000, warmup=100, kind="cosine", start=2000)
        >>> round(float(lr(2000)), 8), round(float(lr(2100)), 8), float(lr(3000))
        (1e-06, 0.0001, 0.0)
    """

    def __init__(self, peak: float, total: int, warmup: int = 0, kind: str = "constant", start: int = 0):
        self.peak, self.total, self.warmup, self.kind = float(peak), int(total), int(warmup), kind
        self.start = int(start)

    def __call__(self, step):
        step = tf.cast(step, tf.float32) - float(self.start)
        warm = tf.clip_by_value((step + 1.0) / float(max(1, self.warmup)), 0.0, 1.0) if self.warmup else 1.0
        if self.kind == "constant":
            return self.peak * warm
        span = float(max(1, self.total - self.start - self.warmup))
        progress = tf.clip_by_value((step - self.warmup) / span, 0.0, 1.0)
        return self.peak * warm * 0.5 * (1.0 + tf.cos(math.pi * progress))

    def get_config(self) -> dict[str, Any]:
        return {"peak": self.peak, "total": self.total, "warmup": self.warmup, "kind": self.kind,
                "start": self.start}


def make_optimizer(config: TrainConfig, learning_rate: float, mixed_float16: bool,
                   start: int = 0) -> keras.optimizers.Optimizer:
    """AdamW or Adafactor with the config's schedule (begun at step ``start``), EMA and (float16) loss scaling."""
    schedule = LearningRate(learning_rate, config.steps, config.warmup_steps, config.lr_schedule, start)
    kwargs = dict(
        learning_rate=schedule,
        weight_decay=config.weight_decay or None,
        use_ema=config.ema_decay is not None,
        ema_momentum=config.ema_decay or 0.99,
        name="optimizer",
    )
    if config.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(**kwargs)
    else:
        optimizer = keras.optimizers.Adafactor(**kwargs)
    return keras.optimizers.LossScaleOptimizer(optimizer, name="loss_scale") if mixed_float16 else optimizer


def min_snr_weights(schedule: NoiseSchedule, timesteps, gamma: float | None, batch: int) -> tf.Tensor:
    """Per-example loss weights, float32 (B,).

    Min-SNR-gamma weights the x0 error by ``min(snr, gamma)``. The loss here is on the model's
    own target, whose squared error is the x0 error divided by ``sigma^2 / alpha^2`` (epsilon)
    or ``sigma^2`` (v, since ``x0 = alpha x_t - sigma v``; flow, since ``x0 = x_t - sigma v``).
    """
    if gamma is None:
        return tf.ones([batch], tf.float32)
    alpha, sigma = schedule.alpha_sigma(timesteps)
    snr = schedule.snr(timesteps)
    clipped = tf.minimum(snr, gamma)
    if schedule.prediction_type == "epsilon":
        return clipped / snr
    return clipped * tf.square(sigma)


# ---------------------------------------------------------------------- the step


class _Stepper:
    """Builds the (distributed) train step: one tf.function per run."""

    def __init__(self, model, strategy: Strategy, optimizer, variables, config: TrainConfig, dist, tables):
        self.model, self.strategy, self.optimizer = model, strategy, optimizer
        self.variables, self.config, self.dist, self.tables = variables, config, dist, tables
        self.schedule = NoiseSchedule.from_config(model.config)
        self._watched = [getattr(v, "value", v) for v in variables]  # the tf.Variables under Keras'
        self.grads = tf.function(self._micro_grads, jit_compile=config.jit_compile)
        self.step = tf.function(self._step)

    def _keys(self, micro_step):
        base = tf.stack([tf.cast(self.config.seed, tf.int64), tf.cast(micro_step, tf.int64)])
        return [tf.random.experimental.stateless_fold_in(base, i) for i in range(4)]

    def _draws(self, plan, shape):
        """Latent sample noise, diffusion noise and timesteps of a whole (global) micro-batch."""
        c = self.config
        k_latent, k_noise, k_offset, k_time = self._keys(plan["step"])
        latent_noise = tf.random.stateless_normal(shape, k_latent, alg="philox")  # (B, h, w, C)
        noise = tf.random.stateless_normal(shape, k_noise, alg="philox")
        if c.noise_offset:
            offset = tf.random.stateless_normal([shape[0], 1, 1, shape[3]], k_offset, alg="philox")
            noise = noise + c.noise_offset * offset
        total = self.schedule.num_train_timesteps
        low, high = (1, total + 1) if self.schedule.is_flow else (0, total)
        t = tf.random.stateless_uniform([shape[0]], k_time, minval=low, maxval=high, dtype=tf.int32, alg="philox")
        return latent_noise, noise, t

    def with_draws(self, plan: dict) -> dict:
        """The plan plus its random draws, made outside any XLA cluster (XLA's RNG kernels differ)."""
        shape = [self.config.batch_size, *self.tables["latent_shape"]]
        latent_noise, noise, t = self._draws(plan, shape)
        return {**plan, "latent_noise": latent_noise, "noise": noise, "t": t}

    def _latents(self, plan, latent_noise, rows):
        """Clean latents of the local rows: a sample of the cached or freshly encoded Gaussian."""
        if "pixels" in plan:
            from kerasemote.models.vae import latent_distribution

            mean, std = latent_distribution(self.model.vae_encoder(tf.gather(plan["pixels"], rows)))
            scale = self.model.config.scaling_factor
            mean, std = tf.cast(mean, tf.float32) * scale, tf.cast(std, tf.float32) * scale
        else:
            where = tf.stack([tf.gather(plan["index"], rows), tf.gather(plan["flip"], rows)], axis=1)
            mean, std = tf.gather_nd(self.tables["mean"], where), tf.gather_nd(self.tables["std"], where)
        return mean + std * tf.gather(latent_noise, rows)

    def _context(self, captions):
        if "contexts" in self.tables:
            return tf.gather(self.tables["contexts"], captions)
        return self.model.text_encoder(tf.gather(self.tables["ids"], captions))

    def loss(self, plan, rows, denominator):
        """Weighted loss of the local rows of one micro-batch, summed and divided by ``denominator``."""
        latent_noise, noise, t = plan["latent_noise"], tf.gather(plan["noise"], rows), tf.gather(plan["t"], rows)
        latents = self._latents(plan, latent_noise, rows)  # (b, h, w, C)
        x_t = self.schedule.add_noise(latents, noise, t)
        target = self.schedule.training_target(latents, noise, t)
        weights = min_snr_weights(self.schedule, t, self.config.min_snr_gamma, tf.shape(rows)[0])
        context = self._context(tf.gather(plan["caption"], rows))  # (b, 77, D)
        prediction = tf.cast(self.model.unet(x_t, t, context), tf.float32)
        per_example = tf.reduce_mean(tf.square(prediction - target), axis=[1, 2, 3])  # (b,)
        return tf.reduce_sum(per_example * weights) / denominator

    def _micro_grads(self, plan, rows, denominator):
        """Loss and gradients of one micro-batch's local rows."""
        # Record only what leads to the trained variables: the frozen parts cost no tape memory.
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(self._watched)
            loss = self.loss(plan, rows, denominator)
            scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, self._watched, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return loss, [tf.convert_to_tensor(g) for g in grads]

    def _replica_step(self, batch):
        ctx = tf.distribute.get_replica_context()
        replicas, replica = ctx.num_replicas_in_sync, ctx.replica_id_in_sync_group
        local = self.config.batch_size // replicas
        rows = tf.range(local) + replica * local
        denominator = float(self.config.batch_size * self.config.grad_accum)
        loss, grads = 0.0, None
        for k in range(self.config.grad_accum):
            plan = self.with_draws({key: value[k] for key, value in batch.items()})
            micro_loss, micro_grads = self.grads(plan, rows, denominator)
            loss = loss + micro_loss
            grads = micro_grads if grads is None else [a + b for a, b in zip(grads, micro_grads)]
        grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        if self.config.clip_norm:
            # Loss scaling multiplies the gradients; clip at the same multiple.
            scale = getattr(self.optimizer, "dynamic_scale", 1.0)
            grads, _ = tf.clip_by_global_norm(grads, self.config.clip_norm * tf.cast(scale, tf.float32))
        # Keras' optimizer sums gradients over replicas again; hand it each replica's share.
        self.optimizer.apply([g / replicas for g in grads], self.variables)
        return loss

    def _step(self, batch):
        per_replica = self.dist.run(self._replica_step, args=(batch,))
        return self.dist.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)


# ---------------------------------------------------------------------- the loop


def train(
    model,
    strategy: Strategy,
    images: ImageSet,
    config: TrainConfig,
    out_dir: str,
    resume: bool | str = False,
    distribution: tf.distribute.Strategy | None = None,
    callbacks: Sequence[Callable[[int, float], None]] = (),
) -> TrainResult:
    """Train ``model`` with ``strategy`` on ``images``; write checkpoints and outputs to ``out_dir``.

    Args:
        model: the ``StableDiffusion`` (built under ``distribution.scope()`` when distributed).
        strategy: what trains (``TextualInversion``, ``LoRA``, ``FineTune``).
        images: the training images (``load_training_images``), at the training resolution.
        config: optimizer, schedule, loss and bookkeeping settings.
        out_dir: run folder (local, Drive or gs://): ``checkpoints/``, the strategy's files,
            ``loss.png``, ``validation/``, ``tensorboard/``, ``train.json``.
        resume: True: continue from the newest checkpoint in ``out_dir`` (if any); a path:
            from that run folder or checkpoint file.
        distribution: a ``tf.distribute`` strategy (MirroredStrategy, TPUStrategy); the
            global batch is split over its replicas.
        callbacks: called as ``fn(step, loss)`` after every step.

    Returns:
        A TrainResult. A NaN/inf loss stops the run: no checkpoint of the bad state is
        written and the model is put back to the newest checkpoint.
    """
    dist = distribution or tf.distribute.get_strategy()
    _check_batch(config, dist, images, model)
    mixed = model.unet.dtype_policy.compute_dtype == "float16"
    with dist.scope():
        strategy.prepare(model)
        variables = strategy.trainable_variables(model)
        optimizer = make_optimizer(config, config.learning_rate or strategy.default_learning_rate, mixed,
                                   strategy.initial_step())
        optimizer.build(variables)
    start, losses, last_checkpoint = _restore(model, strategy, optimizer, variables, config, out_dir, resume)
    tables = _tables(model, strategy, images, config)
    stepper = _Stepper(model, strategy, optimizer, variables, config, dist, tables)
    accum = config.grad_accum
    texts, rows, counts = tables.pop("captions")
    dataset = plan_dataset(
        start * accum, config.steps * accum, seed=config.seed, batch_size=config.batch_size,
        caption_rows=rows, caption_counts=counts, flip=config.flip,
        images=None if config.cache_latents else images.images, crop_scale=config.crop_scale,
    ).batch(accum, drop_remainder=True)
    writer = _summary_writer(out_dir)
    manifest = _manifest(strategy, config, model)
    status = "completed"
    bar = tqdm(total=config.steps, initial=start, desc=strategy.name, disable=not config.progress)
    step = start
    for batch in dataset:
        loss = float(stepper.step(batch))
        strategy.after_step(model)
        if not math.isfinite(loss):
            status = "non-finite"
            logger.error("Loss is %s at step %d; stopping and keeping %s.", loss, step + 1, last_checkpoint)
            break
        step += 1
        losses.append(loss)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")
        _log_scalars(writer, step, loss, optimizer)
        if config.checkpoint_every and step % config.checkpoint_every == 0 and step < config.steps:
            last_checkpoint = _checkpoint(out_dir, step, variables, optimizer, manifest, losses, config)
        if config.validate_every and step % config.validate_every == 0:
            validate(model, config.validation_prompts or strategy.validation_prompts(), config, out_dir, step, writer)
        for callback in callbacks:
            callback(step, loss)
    bar.close()
    if status == "completed" and (last_checkpoint is None or _step_of(last_checkpoint) != step):
        last_checkpoint = _checkpoint(out_dir, step, variables, optimizer, manifest, losses, config)
    if status != "completed":
        step = _rollback(last_checkpoint, variables, optimizer, losses)
    outputs = []
    if status == "completed" or last_checkpoint is not None:
        outputs = strategy.save(model, out_dir, step, ema=ema_arrays(optimizer, variables))
    save_loss_curve(losses, storage.join(out_dir, "loss.png"))
    result = TrainResult(step=step, losses=losses, status=status, outputs=outputs, checkpoint=last_checkpoint)
    summary = {**manifest, "step": step, "status": status, "outputs": outputs, "checkpoint": last_checkpoint}
    storage.write_bytes(storage.join(out_dir, "train.json"), json.dumps(summary, indent=2).encode())
    return result


def evaluate_loss(model, strategy: Strategy, images: ImageSet, config: TrainConfig, batches: int = 4,
                  seed: int = 12345) -> float:
    """Mean loss over fixed draws (examples, captions, noise, timesteps from ``seed``).

    The same call before and after training measures progress without the noise of
    per-step losses. ``strategy.prepare(model)`` must have run (``train`` runs it, and
    running it twice is harmless).
    """
    config = dataclasses.replace(config, seed=seed, grad_accum=1)
    tables = _tables(model, strategy, images, config)
    _, rows, counts = tables.pop("captions")
    stepper = _Stepper(model, strategy, None, [], config, tf.distribute.get_strategy(), tables)
    dataset = plan_dataset(0, batches, seed=seed, batch_size=config.batch_size, caption_rows=rows,
                           caption_counts=counts, flip=config.flip,
                           images=None if config.cache_latents else images.images, crop_scale=config.crop_scale)
    local = tf.range(config.batch_size)
    losses = [float(stepper.loss(stepper.with_draws(plan), local, float(config.batch_size))) for plan in dataset]
    return float(np.mean(losses))


def _check_batch(config: TrainConfig, dist, images: ImageSet, model) -> None:
    replicas = dist.num_replicas_in_sync
    if config.batch_size % replicas:
        raise ValueError(
            f"batch_size {config.batch_size} must be a multiple of the {replicas} replicas of "
            f"{type(dist).__name__}."
        )
    size, factor = images.images.shape[1], model.config.vae_downsample
    if size % factor or images.images.shape[2] != size:
        raise ValueError(f"Training images must be square with a side that is a multiple of {factor}; "
                         f"found {images.images.shape[1:3]}.")


def _manifest(strategy: Strategy, config: TrainConfig, model) -> dict[str, Any]:
    return {
        "strategy": strategy.name,
        "settings": strategy.settings(),
        "train_config": config.to_dict(),
        "seed": config.seed,
        "base_model": base_model_info(model),
    }


def _tables(model, strategy: Strategy, images: ImageSet, config: TrainConfig) -> dict[str, Any]:
    """Tensors the step reads: caption ids or encoded captions, cached latents, latent shape."""
    captioned = strategy.caption(images)
    texts, rows, counts = captioned.caption_table()
    ids = tokenize_captions(model.tokenizer, texts)  # (C, 77)
    size = images.images.shape[1] // model.config.vae_downsample
    tables: dict[str, Any] = {"latent_shape": [size, size, model.config.latent_channels],
                              "captions": (texts, rows, counts)}
    if strategy.trains_text_encoder:
        tables["ids"] = tf.constant(ids)
    else:  # the text encoder is frozen: encode every caption once
        tables["contexts"] = tf.constant(
            np.concatenate([model.text_encoder(ids[i : i + 32]).numpy() for i in range(0, len(ids), 32)])
        )  # (C, 77, D)
    if config.cache_latents:
        mean, std = encode_latent_cache(model, images.images)
        tables["mean"], tables["std"] = tf.constant(mean), tf.constant(std)  # (N, 2, h, w, C)
    return tables


def _restore(model, strategy, optimizer, variables, config, out_dir, resume):
    """(start step, loss history, checkpoint path) after loading what ``resume`` names."""
    start = strategy.initial_step()
    if start:
        optimizer.iterations.assign(start)
    if not resume:
        return start, [], None
    path = checkpoints.latest_checkpoint(out_dir) if resume is True else _checkpoint_file(resume)
    if path is None:
        logger.info("No checkpoint in %s; starting at step %d.", out_dir, start)
        return start, [], None
    arrays, manifest = checkpoints.load_checkpoint(path)
    _check_resumable(path, manifest, strategy, config)
    checkpoints.restore_checkpoint(path, arrays, variables, optimizer)
    return int(manifest["step"]), list(manifest.get("losses", [])), path


def _checkpoint_file(resume: str) -> str:
    if storage.isdir(resume):
        path = checkpoints.latest_checkpoint(resume)
        if path is None:
            raise FileNotFoundError(f"--resume {resume}: no checkpoints/step-*.npz in this folder.")
        return path
    return resume


def _check_resumable(path: str, manifest: dict, strategy: Strategy, config: TrainConfig) -> None:
    found = {"strategy": manifest.get("strategy"), "settings": manifest.get("settings")}
    wanted = {"strategy": strategy.name, "settings": json.loads(json.dumps(strategy.settings()))}
    saved_config = manifest.get("train_config", {})
    now = json.loads(json.dumps(config.to_dict()))
    for key in sorted(set(now) - RESUMABLE_CHANGES):
        found[f"train_config.{key}"], wanted[f"train_config.{key}"] = saved_config.get(key), now[key]
    bad = [f"{path}: key {k!r} expected {wanted[k]!r} (this run), found {found[k]!r}."
           for k in wanted if wanted[k] != found[k]]
    if bad:
        raise ValueError("\n".join(bad) + "\nResume with the original run's settings (only --steps and "
                         "checkpoint/validation options may change).")


def _checkpoint(out_dir, step, variables, optimizer, manifest, losses, config) -> str:
    return checkpoints.save_checkpoint(
        out_dir, step, variables, optimizer, {**manifest, "losses": losses}, keep=config.keep_checkpoints
    )


def _step_of(path: str) -> int:
    return int(storage.basename(path)[len("step-") : -len(".npz")])


def _rollback(path: str | None, variables, optimizer, losses: list[float]) -> int:
    """Put the newest checkpoint back into the model; returns its step (0 if none)."""
    if path is None:
        return 0
    arrays, manifest = checkpoints.load_checkpoint(path)
    checkpoints.restore_checkpoint(path, arrays, variables, optimizer)
    del losses[int(manifest["step"]):]
    return int(manifest["step"])


def ema_arrays(optimizer, variables) -> dict[str, np.ndarray] | None:
    """The optimizer's moving averages of ``variables`` by path, or None without EMA."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    if not inner.use_ema:
        return None
    # Keras keeps one average per trained variable, in the same order.
    averages = inner._model_variables_moving_average
    return {v.path: keras.ops.convert_to_numpy(a) for v, a in zip(variables, averages)}


# ---------------------------------------------------------------------- reporting


def _summary_writer(out_dir: str):
    try:
        return tf.summary.create_file_writer(storage.join(out_dir, "tensorboard"))
    except (tf.errors.OpError, ValueError) as err:  # e.g. a filesystem TF cannot write
        logger.warning("No TensorBoard logs in %s (%s).", out_dir, err)
        return None


def _summary_metadata(plugin: str):
    from tensorflow.core.framework import summary_pb2

    # What tensorboard's own tf.summary.scalar/image write, without needing the tensorboard package.
    return summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin))


def _log_scalars(writer, step: int, loss: float, optimizer) -> None:
    if writer is None:
        return
    with writer.as_default(step=step):
        for tag, value in (("loss", loss), ("learning_rate", float(optimizer.learning_rate))):
            tf.summary.write(tag, tf.constant(value, tf.float32), metadata=_summary_metadata("scalars"))


def _log_images(writer, step: int, images: np.ndarray) -> None:
    """uint8 (N, H, W, 3) images in TensorBoard's image-summary layout [width, height, png...]."""
    if writer is None:
        return
    height, width = images.shape[1:3]
    pngs = [tf.io.encode_png(image) for image in images]
    tensor = tf.stack([tf.constant(str(width)), tf.constant(str(height)), *pngs])
    with writer.as_default(step=step):
        tf.summary.write("validation", tensor, metadata=_summary_metadata("images"))


def validate(model, prompts: Sequence[str], config: TrainConfig, out_dir: str, step: int, writer=None) -> str:
    """Generate one image per prompt with a fixed seed; write ``validation/step-N.png`` (and TensorBoard)."""
    from kerasemote.images import save_grid

    images = model.generate(list(prompts), steps=config.validation_steps, seed=config.validation_seed,
                            progress=False)
    path = save_grid(images, storage.join(out_dir, "validation", f"step-{step:08d}.png"), labels=list(prompts))
    _log_images(writer, step, images)
    return path


def save_loss_curve(losses: Sequence[float], path: str) -> str | None:
    """Loss per step and its running mean as a PNG (matplotlib, no display needed)."""
    if not losses:
        return None
    import io

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    steps = np.arange(1, len(losses) + 1)
    window = max(1, len(losses) // 20)
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(steps, losses, alpha=0.35, label="loss")
    ax.plot(steps[window - 1 :], smooth, label=f"mean of {window}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    storage.write_bytes(path, buffer.getvalue())
    return path
