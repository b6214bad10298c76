"""Euler ancestral sampler ("Euler a"): an Euler step down to a lower noise level, then fresh noise back up.

Matches diffusers' ``EulerAncestralDiscreteScheduler`` (k-diffusion's ``sample_euler_ancestral`` with
``eta = 1``): each step from ``sigma`` to ``sigma_next`` splits ``sigma_next^2 = sigma_down^2 + sigma_up^2``,
takes the deterministic Euler step to ``sigma_down`` and adds ``sigma_up`` of new noise, as the DDPM
ancestral sampler (Ho et al. 2020) does. Timesteps, sigmas, input scaling and the sigma-space sample are
``EulerSampler``'s. The images change with the step noise: a fixed int ``seed`` makes them reproducible
(``draw_noise`` keys each step's noise by ``(seed, step index)``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from kerasemote.schedulers.euler import EulerSampler
from kerasemote.schedulers.schedule import (
    NoiseSchedule,
    Seed,
    TensorLike,
    draw_noise,
    split_model_output,
    to_float32,
)


class EulerAncestralSampler(EulerSampler):
    """Euler ancestral sampler (stochastic; diffusion schedules only).

    Args:
        schedule: the noise schedule (epsilon or v_prediction; flow raises).
        timestep_spacing: ``leading`` (SD 1.x configs), ``linspace`` (diffusers' class default)
            or ``trailing``.
        steps_offset: added to ``leading`` timesteps (SD 1.x configs: 1).
    """

    name = "euler-a"

    def __init__(
        self, schedule: NoiseSchedule, timestep_spacing: str = "leading", steps_offset: int = 1
    ) -> None:
        super().__init__(schedule, timestep_spacing, steps_offset)
        self._reject_flow()

    def step(
        self,
        model_output: TensorLike,
        timestep: Any,
        sample: TensorLike,
        seed: Seed = None,
        noise: TensorLike | None = None,
    ) -> tf.Tensor:
        """One ancestral step from ``sigmas[i]`` to ``sigmas[i + 1]``.

        Args:
            model_output: UNet output for ``scale_model_input(sample, timestep)`` (B, H, W, C).
            timestep: an entry of ``self.timesteps``.
            sample: current sample in sigma space (B, H, W, C).
            seed: randomness of the added noise (see ``draw_noise``; an int gives the same noise for the
                same step every time).
            noise: explicit standard normal noise (B, H, W, C) instead of ``seed``.

        Returns:
            float32 (B, H, W, C) sample at the next (lower) sigma.
        """
        index = self._index_of(timestep)
        model_output, sample = to_float32(model_output), to_float32(sample)
        sigma, sigma_next = float(self.sigmas[index]), float(self.sigmas[index + 1])
        # 1. Denoised estimate D(x; sigma), Karras Table 1 (VP): the UNet saw alpha * x with
        #    alpha = 1 / sqrt(sigma^2 + 1) and noise scale sigma * alpha.
        alpha = 1.0 / np.sqrt(sigma**2 + 1.0)
        x0, _ = split_model_output(
            model_output, alpha * sample, alpha, sigma * alpha, self.schedule.prediction_type
        )
        # 2. Ancestral split of the target level, sigma_next^2 = sigma_down^2 + sigma_up^2:
        #    sigma_up = sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2),
        #    sigma_down = sqrt(sigma_next^2 - sigma_up^2)               (k-diffusion get_ancestral_step)
        sigma_up = np.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2)
        sigma_down = np.sqrt(max(sigma_next**2 - sigma_up**2, 0.0))
        # 3. Euler step to sigma_down: x' = x + (sigma_down - sigma) (x - D) / sigma  (Karras Alg. 1, l. 4-5)
        prev = sample + (sigma_down - sigma) * ((sample - x0) / sigma)
        # 4. New noise up to sigma_next: x_next = x' + sigma_up z,  z ~ N(0, I)
        if sigma_up > 0:
            z = to_float32(noise) if noise is not None else draw_noise(tf.shape(sample), seed, index)
            prev = prev + sigma_up * z
        self._last_index = index
        return prev
