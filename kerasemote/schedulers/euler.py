"""Euler sampler: the probability-flow ODE in sigma space (Karras et al. 2022, Alg. 1 without Heun).

For diffusion models it matches diffusers' ``EulerDiscreteScheduler`` (no churn, linear sigma
interpolation, final sigma 0). The sample lives in sigma space, ``x = x0 + sigma * noise``
(= ``x_t / alpha_t``): start from ``noise * init_noise_sigma`` and give the UNet
``scale_model_input(x, t) = x / sqrt(sigma^2 + 1)``.

For ``flow`` schedules it integrates ``dx/ds = v`` from ``s = 1`` to ``s = 0`` on the uniform grid
``s_i = 1 - i / n`` (InstaFlow's grid; timesteps ``s_i * T``, so the first is ``T``), with no input
scaling and unit initial noise; ``timestep_spacing`` and ``steps_offset`` do not apply there.
One step is therefore ``x0 = noise - v``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from kerasemote.schedulers.schedule import (
    NoiseSchedule,
    Sampler,
    Seed,
    TensorLike,
    spaced_timesteps,
    split_model_output,
    to_float32,
)


class EulerSampler(Sampler):
    """Euler discrete sampler (deterministic).

    Args:
        schedule: the noise schedule (epsilon, v_prediction or flow).
        timestep_spacing: ``leading`` (SD 1.x configs), ``linspace`` (diffusers' class default)
            or ``trailing``. Linspace timesteps are fractional.
        steps_offset: added to ``leading`` timesteps (SD 1.x configs: 1).
    """

    name = "euler"

    def __init__(
        self, schedule: NoiseSchedule, timestep_spacing: str = "leading", steps_offset: int = 1
    ) -> None:
        super().__init__(schedule, timestep_spacing, steps_offset)
        self.sigmas = np.zeros([0], np.float64)

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Fill ``self.timesteps`` (float64, descending) and ``self.sigmas`` (one more, ending at 0)."""
        total = self.schedule.num_train_timesteps
        if self.schedule.is_flow:
            if not 1 <= num_inference_steps <= total:
                raise ValueError(f"num_inference_steps must be in [1, {total}], got {num_inference_steps}.")
            s = 1.0 - np.arange(num_inference_steps + 1, dtype=np.float64) / num_inference_steps
            self.sigmas = s  # here sigma is the flow time s
            self._reset(s[:-1] * total)
            return
        timesteps = spaced_timesteps(num_inference_steps, total, self.timestep_spacing, self.steps_offset)
        sigmas = np.interp(timesteps, np.arange(total), self.schedule.sigmas)
        self.sigmas = np.concatenate([sigmas, [0.0]])
        self._reset(timesteps)

    @property
    def init_noise_sigma(self) -> float:
        """``max sigma`` (linspace, trailing) or ``sqrt(max sigma^2 + 1)`` (leading); 1 for flow."""
        self._require_timesteps()
        if self.schedule.is_flow:
            return 1.0
        max_sigma = float(self.sigmas.max())
        if self.timestep_spacing in ("linspace", "trailing"):
            return max_sigma
        return float(np.sqrt(max_sigma**2 + 1.0))

    def scale_model_input(self, sample: TensorLike, timestep: Any) -> tf.Tensor:
        """``x / sqrt(sigma^2 + 1)``: back from sigma space to the UNet's ``x_t`` (identity for flow)."""
        sample = to_float32(sample)
        if self.schedule.is_flow:
            return sample
        sigma = self.sigmas[self._index_of(timestep)]
        return sample / np.sqrt(sigma**2 + 1.0)

    def add_noise(self, x0: TensorLike, noise: TensorLike, timestep: Any) -> tf.Tensor:
        """``x0 + sigma * noise`` in sigma space (flow: ``(1 - s) x0 + s noise``)."""
        if self.schedule.is_flow:
            return super().add_noise(x0, noise, timestep)
        sigma = self.sigmas[self._index_of(timestep)]
        return to_float32(x0) + sigma * to_float32(noise)

    def step(
        self,
        model_output: TensorLike,
        timestep: Any,
        sample: TensorLike,
        seed: Seed = None,
        noise: TensorLike | None = None,
    ) -> tf.Tensor:
        """One Euler step from ``sigmas[i]`` to ``sigmas[i + 1]``.

        Args:
            model_output: UNet output for ``scale_model_input(sample, timestep)`` (B, H, W, C).
            timestep: an entry of ``self.timesteps``.
            sample: current sample in sigma space (B, H, W, C).
            seed: unused (the sampler is deterministic); kept for the common contract.
            noise: unused, as ``seed``.

        Returns:
            float32 (B, H, W, C) sample at the next (lower) sigma.
        """
        del seed, noise  # deterministic
        index = self._index_of(timestep)
        model_output, sample = to_float32(model_output), to_float32(sample)
        sigma, sigma_next = float(self.sigmas[index]), float(self.sigmas[index + 1])
        if self.schedule.is_flow:
            # 1. Rectified flow: the model output is the ODE derivative dx/ds = v = noise - x0.
            derivative = model_output
        else:
            # 1. Denoised estimate D(x; sigma), Karras Table 1 (VP): the UNet saw c_in * x with
            #    c_in = 1 / sqrt(sigma^2 + 1) = alpha_t and noise scale sigma * alpha_t.
            alpha = 1.0 / np.sqrt(sigma**2 + 1.0)
            x0, _ = split_model_output(
                model_output, alpha * sample, alpha, sigma * alpha, self.schedule.prediction_type
            )
            # 2. ODE derivative d = (x - D(x; sigma)) / sigma              (Karras Alg. 1, line 4)
            derivative = (sample - x0) / sigma
        # 3. Euler step x_next = x + (sigma_next - sigma) * dx/dsigma   (Karras Alg. 1, line 5)
        self._last_index = index
        return sample + (sigma_next - sigma) * derivative
