"""One optimizer step of the training loop as a (distributed) tf.function; see ``loop`` for the recipe."""

from __future__ import annotations

import tensorflow as tf

from kerasemote.models.recompute import recompute_scope
from kerasemote.schedulers import NoiseSchedule
from kerasemote.training.config import TrainConfig
from kerasemote.training.strategy import Strategy


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


class TrainStep:
    """Builds the (distributed) train step: one tf.function per run.

    Args:
        optimizer: applies the summed gradients (None where only ``loss`` is used: ``evaluate_loss``).
        variables: what the strategy trains.
        dist: the ``tf.distribute`` strategy whose replicas split the batch.
        tables: what ``loop`` precomputes: caption ids or encoded captions, cached latents, latent shape.
    """

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
        # Gradient checkpointing: only what trains gets gradients in the recomputed blocks.
        with recompute_scope(self.variables if self.config.gradient_checkpointing else None):
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
