"""DDIM sampler (Song, Meng & Ermon 2021, "Denoising Diffusion Implicit Models").

Matches diffusers' ``DDIMScheduler`` (with ``clip_sample=False``) by default. keras-cv 0.9.0's
``StableDiffusion.generate_image`` is reproduced exactly by ``DDIMSampler(schedule, **KERAS_CV_OPTIONS)``
(the sampler named ``ddim-kerascv``)::

    DDIMSampler(schedule, eta=0.0, timestep_spacing="linspace", set_alpha_to_one=True,
                prev_timestep="sequence")

keras-cv builds ``round(arange(n) * 999 / (n - 1))`` (= ``linspace(0, 999, n).round()``), steps
from each timestep to the *next one in that list* (not ``t - 1000 // n`` as diffusers does) and uses
``alphas_cumprod = 1`` after the last step; its update is DDIM eq. 12 with ``eta = 0``. Its
``_ALPHAS_CUMPROD`` table is this schedule's, rounded to about 1e-7.
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
    draw_noise,
    spaced_timesteps,
    split_model_output,
    to_float32,
)

PREV_TIMESTEP_RULES = ("stride", "sequence")
KERAS_CV_OPTIONS = {"timestep_spacing": "linspace", "set_alpha_to_one": True, "prev_timestep": "sequence"}
"""The ``DDIMSampler`` options of keras-cv's ``generate_image`` (its eta is 0, DDIMSampler's default)."""


class DDIMSampler(Sampler):
    """DDIM with optional stochasticity ``eta`` (0: deterministic DDIM, 1: DDPM-like).

    Args:
        schedule: the noise schedule (epsilon or v_prediction; flow raises).
        eta: weight of the fresh noise added at each step (DDIM eq. 16).
        timestep_spacing: ``leading`` (SD 1.x default), ``linspace`` or ``trailing``.
        set_alpha_to_one: after the last step use ``alphas_cumprod = 1`` (a clean sample);
            otherwise ``alphas_cumprod[0]`` (SD 1.x configs: False).
        steps_offset: added to ``leading`` timesteps (SD 1.x configs: 1).
        prev_timestep: ``stride``: step from ``t`` to ``t - T // n`` (diffusers);
            ``sequence``: step to the next entry of ``timesteps`` (keras-cv).
    """

    name = "ddim"

    def __init__(
        self,
        schedule: NoiseSchedule,
        eta: float = 0.0,
        timestep_spacing: str = "leading",
        set_alpha_to_one: bool = False,
        steps_offset: int = 1,
        prev_timestep: str = "stride",
    ) -> None:
        super().__init__(schedule, timestep_spacing, steps_offset)
        self._reject_flow()
        if prev_timestep not in PREV_TIMESTEP_RULES:
            raise ValueError(f"prev_timestep must be one of {PREV_TIMESTEP_RULES}, got {prev_timestep!r}.")
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}.")
        self.eta = float(eta)
        self.set_alpha_to_one = bool(set_alpha_to_one)
        self.prev_timestep = prev_timestep
        self.final_alpha_cumprod = 1.0 if set_alpha_to_one else float(schedule.alphas_cumprod[0])

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Fill ``self.timesteps``: descending int64, shape (num_inference_steps,)."""
        steps = spaced_timesteps(
            num_inference_steps, self.schedule.num_train_timesteps, self.timestep_spacing, self.steps_offset
        )
        self._reset(np.round(steps).astype(np.int64))

    def _alpha_prev(self, index: int, timestep: int) -> float:
        """alphas_cumprod of the timestep this step lands on."""
        if self.prev_timestep == "stride":
            prev = timestep - self.schedule.num_train_timesteps // self.num_inference_steps
        else:
            prev = int(self.timesteps[index + 1]) if index + 1 < len(self.timesteps) else -1
        return float(self.schedule.alphas_cumprod[prev]) if prev >= 0 else self.final_alpha_cumprod

    def step(
        self,
        model_output: TensorLike,
        timestep: Any,
        sample: TensorLike,
        seed: Seed = None,
        noise: TensorLike | None = None,
    ) -> tf.Tensor:
        """One DDIM step from ``timestep`` to the previous (less noisy) one.

        Args:
            model_output: UNet output at ``timestep`` (B, H, W, C), any float dtype.
            timestep: an entry of ``self.timesteps``.
            sample: current noisy latents (B, H, W, C).
            seed: randomness for ``eta > 0`` (see ``draw_noise``); ignored when ``eta == 0``.
            noise: explicit standard normal noise (B, H, W, C) for ``eta > 0`` instead of ``seed``.

        Returns:
            float32 (B, H, W, C) latents at the previous timestep.
        """
        index = self._index_of(timestep)
        t = int(self.timesteps[index])
        model_output, sample = to_float32(model_output), to_float32(sample)
        a_t = float(self.schedule.alphas_cumprod[t])
        a_prev = self._alpha_prev(index, t)
        # 1. Predicted x0 and noise from the model output ("predicted x0" term of eq. 12).
        x0, eps = split_model_output(
            model_output, sample, np.sqrt(a_t), np.sqrt(1.0 - a_t), self.schedule.prediction_type
        )
        # 2. sigma_t(eta) = eta * sqrt((1 - a_prev) / (1 - a_t)) * sqrt(1 - a_t / a_prev)   (eq. 16)
        std = self.eta * np.sqrt((1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev))
        # 3. x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma_t^2) eps + sigma_t z        (eq. 12)
        prev = np.sqrt(a_prev) * x0 + np.sqrt(max(1.0 - a_prev - std**2, 0.0)) * eps
        if std > 0:
            z = to_float32(noise) if noise is not None else draw_noise(tf.shape(sample), seed, index)
            prev = prev + std * z
        self._last_index = index
        return prev
