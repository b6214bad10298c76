"""DPM-Solver++(2M) sampler (Lu et al. 2022, "DPM-Solver++", Algorithm 2).

Matches diffusers' ``DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2,
solver_type="midpoint", lower_order_final=True)`` with its default final sigma of zero: the first
step and the last step (to a clean sample) are first order, every other step is second order
using the previous step's x0 prediction. The sample is the UNet's own ``x_t`` (no input scaling).

``use_karras_sigmas=True`` is "DPM++ 2M Karras" (diffusers' ``use_karras_sigmas=True``): the same
update between Karras' sigmas (``karras.py``), the UNet evaluated at the nearest whole timestep.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from kerasemote.schedulers.karras import karras_sigmas, timesteps_for_sigmas
from kerasemote.schedulers.schedule import (
    NoiseSchedule,
    Sampler,
    Seed,
    TensorLike,
    spaced_timesteps,
    split_model_output,
    to_float32,
)


class DPMSolverSampler(Sampler):
    """Multistep second-order DPM-Solver++ in data-prediction form (deterministic).

    Args:
        schedule: the noise schedule (epsilon or v_prediction; flow raises).
        timestep_spacing: ``leading`` (SD 1.x configs), ``linspace`` (diffusers' class default)
            or ``trailing``; ``leading``/``linspace`` split ``n + 1`` points and drop the last, as
            diffusers does. Karras sigmas place the timesteps themselves (any other spacing raises).
        steps_offset: added to ``leading`` timesteps (SD 1.x configs: 1).
        use_karras_sigmas: step between Karras' sigmas (dense near the clean end) instead of the
            sigmas of evenly spaced timesteps; timesteps may then repeat near the end.
    """

    name = "dpm++"

    def __init__(
        self,
        schedule: NoiseSchedule,
        timestep_spacing: str = "leading",
        steps_offset: int = 1,
        use_karras_sigmas: bool = False,
    ) -> None:
        super().__init__(schedule, timestep_spacing, steps_offset)
        self._reject_flow()
        if use_karras_sigmas and timestep_spacing != "leading":
            raise ValueError(f"timestep_spacing: Karras sigmas place the timesteps themselves; expected the default "
                             f"'leading', found {timestep_spacing!r}.")
        self.use_karras_sigmas = bool(use_karras_sigmas)
        self.sigmas = np.zeros([0], np.float64)
        self._previous_x0: tf.Tensor | None = None

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Fill ``self.timesteps`` (int64, descending) and ``self.sigmas`` (sigma space, one more, ending at 0)."""
        total = self.schedule.num_train_timesteps
        if not 1 <= num_inference_steps <= total:
            raise ValueError(f"num_inference_steps must be in [1, {total}], got {num_inference_steps}.")
        if self.use_karras_sigmas:
            sigmas = karras_sigmas(self.schedule, num_inference_steps)
            self.sigmas = np.concatenate([sigmas, [0.0]])
            self._previous_x0 = None
            self._reset(np.round(timesteps_for_sigmas(self.schedule, sigmas)).astype(np.int64))
            return
        if self.timestep_spacing == "trailing":
            steps = spaced_timesteps(num_inference_steps, total, "trailing")
        else:
            # n + 1 points, the smallest dropped (diffusers' DPMSolverMultistepScheduler).
            points = num_inference_steps + 1
            steps = spaced_timesteps(points, total, self.timestep_spacing, self.steps_offset)[:-1]
        timesteps = np.round(steps).astype(np.int64)
        a = self.schedule.alphas_cumprod[timesteps]
        self.sigmas = np.concatenate([np.sqrt((1.0 - a) / a), [0.0]])
        self._previous_x0 = None
        self._reset(timesteps)

    def _alpha_sigma_lambda(self, index: int) -> tuple[float, float, float]:
        """VP scales and half log-SNR ``lambda = log(alpha / sigma)`` at ``sigmas[index]``."""
        karras_sigma = float(self.sigmas[index])
        alpha = 1.0 / np.sqrt(karras_sigma**2 + 1.0)
        sigma = karras_sigma * alpha
        lam = np.inf if sigma == 0.0 else float(np.log(alpha) - np.log(sigma))
        return alpha, sigma, lam

    def add_noise(self, x0: TensorLike, noise: TensorLike, timestep: Any) -> tf.Tensor:
        """``alpha x0 + sigma noise`` at the step's own sigma (with Karras sigmas: not its rounded timestep's)."""
        alpha, sigma, _ = self._alpha_sigma_lambda(self._index_of(timestep))
        return alpha * to_float32(x0) + sigma * to_float32(noise)

    def step(
        self,
        model_output: TensorLike,
        timestep: Any,
        sample: TensorLike,
        seed: Seed = None,
        noise: TensorLike | None = None,
    ) -> tf.Tensor:
        """One DPM-Solver++(2M) step from ``timesteps[i]`` to ``timesteps[i + 1]`` (or to x0).

        Args:
            model_output: UNet output at ``timestep`` (B, H, W, C), any float dtype.
            timestep: an entry of ``self.timesteps``; steps must run in order for the second-order
                update (a step that does not follow the previous one restarts at first order).
            sample: current noisy latents (B, H, W, C).
            seed: unused (the sampler is deterministic); kept for the common contract.
            noise: unused, as ``seed``.

        Returns:
            float32 (B, H, W, C) latents at the next timestep.
        """
        del seed, noise  # deterministic
        index = self._index_of(timestep)
        model_output, sample = to_float32(model_output), to_float32(sample)
        alpha_s, sigma_s, lambda_s = self._alpha_sigma_lambda(index)
        alpha_t, sigma_t, lambda_t = self._alpha_sigma_lambda(index + 1)
        # 1. Data prediction x_theta(x_s, s) (DPM-Solver++ works with x0, not noise).
        x0, _ = split_model_output(model_output, sample, alpha_s, sigma_s, self.schedule.prediction_type)
        has_history = self._previous_x0 is not None and self._last_index == index - 1
        if sigma_t == 0.0:
            # 2a. Last step to sigma = 0: h = inf, so the first-order update returns x0 exactly.
            prev = x0
        elif not has_history:
            # 2b. First-order step (Alg. 2, first line; DDIM):
            #     x_t = (sigma_t / sigma_s) x_s - alpha_t (e^{-h} - 1) x0,  h = lambda_t - lambda_s
            h = lambda_t - lambda_s
            prev = (sigma_t / sigma_s) * sample - alpha_t * np.expm1(-h) * x0
        else:
            # 2c. Second-order multistep (Alg. 2, loop body):
            #     r = h_prev / h,  D = (1 + 1 / (2r)) x0 - (1 / (2r)) x0_prev,
            #     x_t = (sigma_t / sigma_s) x_s - alpha_t (e^{-h} - 1) D
            _, _, lambda_prev = self._alpha_sigma_lambda(index - 1)
            h, h_prev = lambda_t - lambda_s, lambda_s - lambda_prev
            half_over_r = 0.5 * h / h_prev
            d = (1.0 + half_over_r) * x0 - half_over_r * self._previous_x0
            prev = (sigma_t / sigma_s) * sample - alpha_t * np.expm1(-h) * d
        self._previous_x0 = x0
        self._last_index = index
        return prev
