"""The noise schedule (training and sampling share it) and the samplers, by name or as objects.

Example:
    >>> schedule = NoiseSchedule.from_config(get_config("sd-v1"))
    >>> sampler = get_sampler("dpm++-karras", schedule)       # by name
    >>> sampler = DDIMSampler(schedule, eta=0.3)               # or built with any options
    >>> sampler.set_timesteps(25)
"""

from __future__ import annotations

import inspect
from typing import Any

from kerasemote.schedulers.ddim import KERAS_CV_OPTIONS, DDIMSampler
from kerasemote.schedulers.dpm_solver import DPMSolverSampler
from kerasemote.schedulers.euler import EulerSampler
from kerasemote.schedulers.euler_ancestral import EulerAncestralSampler
from kerasemote.schedulers.karras import karras_sigmas, timesteps_for_sigmas
from kerasemote.schedulers.schedule import (
    BETA_SCHEDULES,
    TIMESTEP_SPACINGS,
    NoiseSchedule,
    Sampler,
    draw_noise,
    spaced_timesteps,
    split_model_output,
)

# name -> (class, the constructor options that the name fixes). The CLI's --sampler choices come from here.
_SAMPLER_TABLE: dict[str, tuple[type[Sampler], dict[str, Any]]] = {
    "ddim": (DDIMSampler, {}),
    "ddim-kerascv": (DDIMSampler, KERAS_CV_OPTIONS),
    "euler": (EulerSampler, {}),
    "euler-a": (EulerAncestralSampler, {}),
    "dpm++": (DPMSolverSampler, {}),
    "dpm++-karras": (DPMSolverSampler, {"use_karras_sigmas": True}),
}
SAMPLERS: list[str] = list(_SAMPLER_TABLE)


def _options_of(cls: type[Sampler]) -> list[str]:
    """Constructor options of a sampler class (everything after ``schedule``)."""
    return [name for name in inspect.signature(cls).parameters if name != "schedule"]


def get_sampler(name: str, schedule: NoiseSchedule, **options: Any) -> Sampler:
    """Build a sampler by name (one of ``SAMPLERS``).

    Args:
        name: ``ddim``, ``ddim-kerascv`` (keras-cv's DDIM rule), ``euler``, ``euler-a`` (Euler ancestral),
            ``dpm++`` (DPM-Solver++(2M)) or ``dpm++-karras`` (the same on Karras sigmas).
        schedule: the model's noise schedule.
        **options: constructor options of that sampler (``eta``, ``timestep_spacing``...). An option the
            name fixes (``ddim-kerascv``'s spacing) may only be given its fixed value.

    Returns:
        A new sampler; call ``set_timesteps`` before sampling.

    Raises:
        ValueError: an unknown name, an option the sampler does not take, or one that contradicts the name.
    """
    try:
        cls, fixed = _SAMPLER_TABLE[name]
    except KeyError:
        raise ValueError(f"Unknown sampler {name!r}; choose one of {SAMPLERS}.") from None
    accepted = _options_of(cls)
    for key, value in options.items():
        if key not in accepted:
            raise ValueError(f"{key}: the {name!r} sampler takes {', '.join(accepted)}; found {key}={value!r}.")
        if key in fixed and fixed[key] != value:
            plain = next(other for other, (c, f) in _SAMPLER_TABLE.items() if c is cls and not f)
            raise ValueError(f"{key}: the {name!r} sampler is {cls.__name__} with {key}={fixed[key]!r}, "
                             f"found {value!r}; use {plain!r} to choose {key} yourself.")
    return cls(schedule, **{**fixed, **options})


def resolve_sampler(sampler: str | Sampler, schedule: NoiseSchedule, **options: Any) -> Sampler:
    """The sampler a generation uses: built from a name, or a ready ``Sampler`` checked against the model.

    A ready sampler keeps its own settings and must be built on the model's schedule: using it on another
    schedule would step with the wrong noise levels, so a difference is an error rather than a silent
    choice of one schedule. ``generate`` calls ``set_timesteps`` on it, so one instance serves one
    generation at a time.

    Args:
        sampler: a name in ``SAMPLERS`` or a ``Sampler`` (``DDIMSampler(schedule, eta=0.5)``...).
        schedule: the model's noise schedule.
        **options: sampler options the caller set (``timestep_spacing``, ``eta``...); ``None`` means not
            set. With a name they go to ``get_sampler``; with a ready sampler any set option is refused,
            since the sampler already carries its settings.

    Returns:
        The sampler; call ``set_timesteps`` before sampling.

    Raises:
        ValueError: as ``get_sampler`` for a name; for a ready sampler, an option set as well, or a schedule
            that differs from the model's (the message names the first differing field).
        TypeError: ``sampler`` is neither a name nor a ``Sampler``.
    """
    given = {key: value for key, value in options.items() if value is not None}
    if isinstance(sampler, str):
        return get_sampler(sampler, schedule, **given)
    if not isinstance(sampler, Sampler):
        raise TypeError(f"sampler: expected a name in {SAMPLERS} or a Sampler, found {type(sampler).__name__}.")
    kind = type(sampler).__name__
    if given:
        key, value = next(iter(given.items()))
        raise ValueError(f"{key}: a ready {kind} carries its own settings, found {key}={value!r} as well; "
                         f"build the sampler with it ({kind}(schedule, {key}={value!r})) instead.")
    difference = schedule.difference(sampler.schedule)
    if difference is not None:
        field, expected, found = difference
        raise ValueError(f"sampler: {kind}'s NoiseSchedule: expected the model's {field}={expected!r}, "
                         f"found {found!r}; build the sampler on NoiseSchedule.from_config(model.config).")
    return sampler


__all__ = [
    "BETA_SCHEDULES",
    "KERAS_CV_OPTIONS",
    "SAMPLERS",
    "TIMESTEP_SPACINGS",
    "DDIMSampler",
    "DPMSolverSampler",
    "EulerAncestralSampler",
    "EulerSampler",
    "NoiseSchedule",
    "Sampler",
    "draw_noise",
    "get_sampler",
    "karras_sigmas",
    "resolve_sampler",
    "spaced_timesteps",
    "split_model_output",
    "timesteps_for_sigmas",
]
