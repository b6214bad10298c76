"""Karras noise levels (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative
Models", eq. 5) on a diffusion schedule, and the timesteps the UNet sees at those levels.

Samplers that take ``use_karras_sigmas`` step between these sigmas instead of the sigmas of evenly
spaced timesteps: dense near the clean end, sparse near pure noise, the spacing "DPM++ 2M Karras" uses.
"""

from __future__ import annotations

import numpy as np

from kerasemote.schedulers.schedule import NoiseSchedule

RHO = 7.0
"""Karras' rho: the sigmas are evenly spaced in ``sigma ** (1 / rho)`` (7 is the paper's value)."""


def karras_sigmas(schedule: NoiseSchedule, num_inference_steps: int, rho: float = RHO) -> np.ndarray:
    """``num_inference_steps`` descending sigmas from the schedule's largest to its smallest (float64).

    ``sigma_i = (s_max^(1/rho) + i / (n - 1) * (s_min^(1/rho) - s_max^(1/rho)))^rho``, with ``s_max`` and
    ``s_min`` the sigmas of the last and the first training timestep; one step gives ``[s_max]``.
    """
    if schedule.is_flow:
        raise ValueError(
            f"Karras sigmas need a diffusion (epsilon / v_prediction) schedule, found prediction_type "
            f"{schedule.prediction_type!r}."
        )
    sigmas = schedule.sigmas
    ramp = np.linspace(0.0, 1.0, num_inference_steps)
    lo, hi = sigmas[0] ** (1.0 / rho), sigmas[-1] ** (1.0 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def timesteps_for_sigmas(schedule: NoiseSchedule, sigmas: np.ndarray) -> np.ndarray:
    """Fractional timesteps at which the schedule has ``sigmas``: linear interpolation in log sigma,
    clipped to ``[0, T - 1]`` (float64, same shape as ``sigmas``)."""
    log_table = np.log(schedule.sigmas)  # ascending in t
    return np.interp(np.log(np.maximum(sigmas, 1e-10)), log_table, np.arange(len(log_table), dtype=np.float64))
