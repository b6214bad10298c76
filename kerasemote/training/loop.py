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
from typing import Any, Callable, Sequence

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from kerasemote import storage
from kerasemote.training import runlock
from kerasemote.training.checkpoints import checkpoint_path
from kerasemote.training.config import TrainConfig, TrainResult
from kerasemote.training.data import ImageSet, encode_latent_cache, plan_dataset, tokenize_captions
from kerasemote.training.distribute import claim_run_folder, is_chief
from kerasemote.training.optimizer import ema_arrays, make_optimizer
from kerasemote.training.reporting import log_scalars, save_loss_curve, summary_writer, validate
from kerasemote.training.resume import restore_run, rollback, run_manifest, save_run_checkpoint, step_of
from kerasemote.training.step import TrainStep
from kerasemote.training.strategy import Strategy

logger = logging.getLogger(__name__)


def train(
    model,
    strategy: Strategy,
    images: ImageSet,
    config: TrainConfig,
    out_dir: str,
    resume: bool | str = False,
    distribution: tf.distribute.Strategy | None = None,
    callbacks: Sequence[Callable[[int, float], None]] = (),
    overwrite: bool = False,
    force_unlock: bool = False,
) -> TrainResult:
    """Train ``model`` with ``strategy`` on ``images``; write checkpoints and outputs to ``out_dir``.

    One run at a time writes to ``out_dir``: it holds ``out_dir/run.lock`` while it runs
    (``training.runlock``), and a run that does not continue the folder's checkpoints refuses
    a folder holding another run's files unless ``overwrite``. In a multi-worker run only the
    chief holds the lock and writes; the other workers read its checkpoints to resume
    (``training.distribute``).

    Args:
        model: the ``StableDiffusion`` (built under ``distribution.scope()`` when distributed).
        strategy: what trains (``TextualInversion``, ``LoRA``, ``FineTune``).
        images: the training images (``load_training_images``), at the training resolution.
        config: optimizer, schedule, loss and bookkeeping settings.
        out_dir: run folder (local, Drive or gs://): ``checkpoints/``, the strategy's files,
            ``loss.png``, ``validation/``, ``tensorboard/``, ``train.json``.
        resume: True: continue from the newest checkpoint in ``out_dir`` (if any); a path:
            from that run folder or checkpoint file.
        distribution: a ``tf.distribute`` strategy (``distribute.make_distribution``:
            MirroredStrategy, MultiWorkerMirroredStrategy, TPUStrategy); every replica takes its
            rows of the global batch of ``config.batch_size``.
        callbacks: called as ``fn(step, loss)`` after every step.
        overwrite: a run that does not continue ``out_dir`` deletes the previous run's
            checkpoints, outputs, ``train.json`` and logs there before its first step
            (without it such a folder is refused).
        force_unlock: take over ``out_dir``'s lock even when its holder cannot be shown to
            be gone (written on another host, unreadable).

    Returns:
        A TrainResult. A NaN/inf loss stops the run: no checkpoint of the bad state is
        written and the model is put back to the newest checkpoint.

    Raises:
        ValueError: ``model`` is an inpainting model (its UNet takes a mask too).
        RunFolderError: another run holds ``out_dir``, or it holds another run's files and
            neither ``resume`` nor ``overwrite`` is given.
    """
    if model.config.inpainting:  # its UNet also wants a mask and masked-image latents the steps do not make
        raise ValueError(f"training: expected a text-to-image model (a UNet of {model.config.latent_channels} input "
                         f"channels), found an inpainting model ({model.config.unet_in_channels} input channels); "
                         "train on the text-to-image model its inpainting weights came from.")
    with claim_run_folder(out_dir, distribution, resume, overwrite, force_unlock) as clear:
        return _train(model, strategy, images, config, out_dir, resume, distribution, callbacks, clear)


def _train(model, strategy: Strategy, images: ImageSet, config: TrainConfig, out_dir: str, resume: bool | str,
           distribution, callbacks, clear: bool) -> TrainResult:
    """The run itself, ``out_dir`` held; ``clear`` deletes the previous run's files once everything is read.

    A non-chief worker writes nothing: where the chief saves a checkpoint it notes the chief's
    path, which it may read on a rollback, since the chief's file is complete before the next
    step's all-reduce lets any worker on.
    """
    chief = is_chief(distribution)
    dist = distribution or tf.distribute.get_strategy()
    _check_batch(config, dist, images, model)
    mixed = model.unet.dtype_policy.compute_dtype == "float16"
    with dist.scope():
        strategy.prepare(model)
        variables = strategy.trainable_variables(model)
        optimizer = make_optimizer(config, config.learning_rate or strategy.default_learning_rate, mixed,
                                   strategy.initial_step())
        optimizer.build(variables)
    start, losses, last_checkpoint = restore_run(strategy, optimizer, variables, config, out_dir, resume)
    if clear:  # after every read: a seed file or checkpoint to start from may lie in the old run's files
        runlock.clear_previous_run(out_dir)
    tables = _tables(model, strategy, images, config)
    stepper = TrainStep(model, strategy, optimizer, variables, config, dist, tables)
    accum = config.grad_accum
    texts, rows, counts = tables.pop("captions")
    dataset = plan_dataset(
        start * accum, config.steps * accum, seed=config.seed, batch_size=config.batch_size,
        caption_rows=rows, caption_counts=counts, flip=config.flip,
        images=None if config.cache_latents else images.images, crop_scale=config.crop_scale,
    ).batch(accum, drop_remainder=True)
    writer = summary_writer(out_dir) if chief else None
    manifest = run_manifest(strategy, config, model)

    def checkpoint(step: int) -> str:
        if not chief:
            return checkpoint_path(out_dir, step)
        return save_run_checkpoint(out_dir, step, variables, optimizer, manifest, losses, config)

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
        log_scalars(writer, step, loss, optimizer)
        if config.checkpoint_every and step % config.checkpoint_every == 0 and step < config.steps:
            last_checkpoint = checkpoint(step)
        if chief and config.validate_every and step % config.validate_every == 0:
            validate(model, config.validation_prompts or strategy.validation_prompts(), config, out_dir, step, writer)
        for callback in callbacks:
            callback(step, loss)
    bar.close()
    if status == "completed" and (last_checkpoint is None or step_of(last_checkpoint) != step):
        last_checkpoint = checkpoint(step)
    if status != "completed":
        step = rollback(last_checkpoint, variables, optimizer, losses)
    outputs = []
    if chief and (status == "completed" or last_checkpoint is not None):
        outputs = strategy.save(model, out_dir, step, ema=ema_arrays(optimizer, variables))
    result = TrainResult(step=step, losses=losses, status=status, outputs=outputs, checkpoint=last_checkpoint)
    if chief:
        save_loss_curve(losses, storage.join(out_dir, runlock.LOSS_CURVE))
        summary = {**manifest, "step": step, "status": status, "outputs": outputs, "checkpoint": last_checkpoint}
        storage.write_bytes(storage.join(out_dir, runlock.SUMMARY_FILE), json.dumps(summary, indent=2).encode())
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
    stepper = TrainStep(model, strategy, None, [], config, tf.distribute.get_strategy(), tables)
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
