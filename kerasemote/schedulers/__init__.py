"""The noise schedule (training and sampling share it) and the samplers, swappable by name.

Example:
    >>> schedule = NoiseSchedule.from_config(get_config("sd-v1"))
    >>> sampler = get_sampler("dpm++", schedule)
    >>> sampler.set_timesteps(25)
"""

from __future__ import annotations

from typing import Any

from kerasemote.schedulers.ddim import DDIMSampler
from kerasemote.schedulers.dpm_solver import DPMSolverSampler
from kerasemote.schedulers.euler import EulerSampler
from kerasemote.schedulers.schedule import (
    BETA_SCHEDULES,
    TIMESTEP_SPACINGS,
    NoiseSchedule,
    Sampler,
    draw_noise,
    spaced_timesteps,
    split_model_output,
)

_SAMPLER_CLASSES: dict[str, type[Sampler]] = {
    "ddim": DDIMSampler,
    "euler": EulerSampler,
    "dpm++": DPMSolverSampler,
}
SAMPLERS: list[str] = list(_SAMPLER_CLASSES)


def get_sampler(name: str, schedule: NoiseSchedule, **kwargs: Any) -> Sampler:
    """Build a sampler by name (``"ddim"``, ``"euler"`` or ``"dpm++"``).

    Args:
        name: one of ``SAMPLERS``.
        schedule: the model's noise schedule.
        **kwargs: constructor arguments of that sampler (``eta``, ``timestep_spacing``...).

    Returns:
        A new sampler; call ``set_timesteps`` before sampling.
    """
    try:
        cls = _SAMPLER_CLASSES[name]
    except KeyError:
        raise ValueError(f"Unknown sampler {name!r}; choose one of {SAMPLERS}.") from None
    return cls(schedule, **kwargs)


__all__ = [
    "BETA_SCHEDULES",
    "SAMPLERS",
    "TIMESTEP_SPACINGS",
    "DDIMSampler",
    "DPMSolverSampler",
    "EulerSampler",
    "NoiseSchedule",
    "Sampler",
    "draw_noise",
    "get_sampler",
    "spaced_timesteps",
    "split_model_output",
]
