"""The one noise schedule of kerasemote, shared by training and every sampler.

Every prediction type is written as ``x_t = alpha_t * x0 + sigma_t * noise``:

* ``epsilon`` / ``v_prediction`` (variance preserving, SD 1.x):
  ``alpha_t = sqrt(alphas_cumprod[t])``, ``sigma_t = sqrt(1 - alphas_cumprod[t])``, with
  integer ``t`` in ``[0, num_train_timesteps)``. The model predicts ``noise`` (epsilon) or
  ``v = alpha_t * noise - sigma_t * x0`` (Salimans & Ho 2022, section 4).
* ``flow`` (rectified flow, the diffusers flow-matching convention): ``s = t / num_train_timesteps``
  in ``[0, 1]``, ``alpha_t = 1 - s``, ``sigma_t = s``, so ``x_t = (1 - s) * x0 + s * noise``. The
  model predicts the velocity ``v = noise - x0``; sampling integrates ``dx/ds = v`` from ``s = 1``
  (pure noise) to ``s = 0`` with Euler steps, so a single step gives ``x0 = noise - v``. ``t`` may
  be fractional. InstaFlow's released code uses the opposite sign (``v = x0 - noise``,
  ``latents += dt * v``): negate such a model's output before handing it to kerasemote.

Timestep spacings follow diffusers (Table 2 of Lin et al. 2023, "Common Diffusion Noise
Schedules and Sample Steps are Flawed"); samplers live in one file each (``ddim.py``, ``euler.py``,
``euler_ancestral.py``, ``dpm_solver.py``) and all share the :class:`Sampler` contract defined here.
"""

from __future__ import annotations

from typing import Any, Callable, Union

import keras
import numpy as np
import tensorflow as tf

from kerasemote.config import PREDICTION_TYPES, ModelConfig

BETA_SCHEDULES = ("scaled_linear", "linear")
TIMESTEP_SPACINGS = ("leading", "linspace", "trailing")

TensorLike = Union[tf.Tensor, np.ndarray]
Seed = Union[None, int, tf.random.Generator, keras.random.SeedGenerator]


def make_betas(
    num_train_timesteps: int, beta_start: float, beta_end: float, beta_schedule: str
) -> np.ndarray:
    """Per-step noise variances, float64, shape (num_train_timesteps,).

    ``scaled_linear`` (Stable Diffusion) is linear in ``sqrt(beta)``; ``linear`` is linear in beta.
    """
    if beta_schedule == "scaled_linear":
        return np.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=np.float64) ** 2
    if beta_schedule == "linear":
        return np.linspace(beta_start, beta_end, num_train_timesteps, dtype=np.float64)
    raise ValueError(f"beta_schedule must be one of {BETA_SCHEDULES}, got {beta_schedule!r}.")


def spaced_timesteps(
    num_inference_steps: int, num_train_timesteps: int, spacing: str, steps_offset: int = 0
) -> np.ndarray:
    """Descending float64 timesteps for ``num_inference_steps`` steps (diffusers semantics).

    * ``linspace``: ``linspace(0, T - 1, n)`` (not rounded: DDIM rounds, Euler keeps fractions).
    * ``leading``: ``arange(n) * (T // n) + steps_offset`` (SD 1.x configs use ``steps_offset=1``).
    * ``trailing``: ``round(T - arange(n) * T / n) - 1``; always starts at ``T - 1``.

    diffusers builds ``trailing`` with a float ``np.arange`` that returns ``n + 1`` values (the last
    one ``-1``) for some ``n`` (61, 103, 121...); counting ``n`` steps explicitly avoids that.
    """
    n, total = num_inference_steps, num_train_timesteps
    if not 1 <= n <= total:
        raise ValueError(f"num_inference_steps must be in [1, {total}], got {n}.")
    if spacing == "linspace":
        steps = np.linspace(0, total - 1, n, dtype=np.float64)[::-1]
    elif spacing == "leading":
        steps = (np.arange(n, dtype=np.float64) * (total // n))[::-1] + steps_offset
    elif spacing == "trailing":
        steps = np.round(total - np.arange(n, dtype=np.float64) * (total / n)) - 1
    else:
        raise ValueError(f"timestep_spacing must be one of {TIMESTEP_SPACINGS}, got {spacing!r}.")
    if steps.max() > total - 1 or steps.min() < 0:
        raise ValueError(
            f"{spacing!r} spacing with steps_offset={steps_offset} and {n} steps gives timesteps "
            f"{steps.min():g}..{steps.max():g}, outside [0, {total - 1}]; "
            "lower steps_offset or the step count."
        )
    return steps.copy()


def split_model_output(
    model_output: tf.Tensor,
    sample: tf.Tensor,
    alpha_t: Any,
    sigma_t: Any,
    prediction_type: str,
) -> tuple[tf.Tensor, tf.Tensor]:
    """Turn a model output into (predicted x0, predicted noise) at one noise level.

    Args:
        model_output: float32 (B, H, W, C) model prediction.
        sample: float32 (B, H, W, C) noisy ``x_t = alpha_t * x0 + sigma_t * noise``.
        alpha_t: signal scale, a float or a tensor broadcastable to the sample.
        sigma_t: noise scale, same form as ``alpha_t``.
        prediction_type: ``epsilon``, ``v_prediction`` or ``flow``.

    Returns:
        ``(x0, noise)``, both float32 (B, H, W, C).
    """
    if prediction_type == "epsilon":
        return (sample - sigma_t * model_output) / alpha_t, model_output
    if prediction_type == "v_prediction":
        # v = alpha * noise - sigma * x0 with alpha^2 + sigma^2 = 1 (variance preserving).
        return alpha_t * sample - sigma_t * model_output, alpha_t * model_output + sigma_t * sample
    if prediction_type == "flow":
        # v = noise - x0 with x_t = (1 - s) x0 + s noise, alpha = 1 - s, sigma = s.
        return sample - sigma_t * model_output, sample + alpha_t * model_output
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}.")


def to_float32(x: TensorLike) -> tf.Tensor:
    """float16/bfloat16/float64 tensors or arrays -> float32 tensor (all schedule math is float32)."""
    return tf.cast(tf.convert_to_tensor(x), tf.float32)


def _per_example(coef: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """(B,) or () coefficients -> (B, 1, 1, 1) so they broadcast over (B, H, W, C)."""
    if coef.shape.rank == 0:
        return coef
    return tf.reshape(coef, tf.concat([tf.shape(coef), tf.ones([tf.rank(like) - 1], tf.int32)], 0))


class NoiseSchedule:
    """Forward diffusion ``x_t = alpha_t * x0 + sigma_t * noise`` and the training targets.

    Args:
        num_train_timesteps: schedule length (1000 for SD).
        beta_start: first beta (SD: 0.00085).
        beta_end: last beta (SD: 0.012).
        beta_schedule: ``scaled_linear`` (SD) or ``linear``.
        prediction_type: ``epsilon``, ``v_prediction`` or ``flow`` (see the module docstring).

    Example:
        >>> schedule = NoiseSchedule.from_config(get_config("sd-v1"))
        >>> x_t = schedule.add_noise(latents, noise, timesteps)          # (B, H, W, C)
        >>> loss = mse(unet(x_t, timesteps), schedule.training_target(latents, noise, timesteps))
    """

    FIELDS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type")
    """What defines a schedule: these constructor arguments, named as ``ModelConfig``'s fields."""

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        beta_schedule: str = "scaled_linear",
        prediction_type: str = "epsilon",
    ) -> None:
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}.")
        self.num_train_timesteps = int(num_train_timesteps)
        self.beta_start = float(beta_start)
        self.beta_end = float(beta_end)
        self.beta_schedule = beta_schedule
        self.prediction_type = prediction_type
        self.betas = make_betas(self.num_train_timesteps, self.beta_start, self.beta_end, beta_schedule)
        self.alphas_cumprod = np.cumprod(1.0 - self.betas)  # float64, (T,)
        self._alpha_table = tf.constant(np.sqrt(self.alphas_cumprod), tf.float32)
        self._sigma_table = tf.constant(np.sqrt(1.0 - self.alphas_cumprod), tf.float32)

    @classmethod
    def from_config(cls, config: ModelConfig) -> "NoiseSchedule":
        """Schedule described by a ModelConfig's noise-schedule fields."""
        return cls(**{field: getattr(config, field) for field in cls.FIELDS})

    def difference(self, other: "NoiseSchedule") -> tuple[str, Any, Any] | None:
        """The first field of ``FIELDS`` in which ``other`` differs: ``(field, self's, other's)``; None if equal."""
        for field in self.FIELDS:
            if getattr(self, field) != getattr(other, field):
                return field, getattr(self, field), getattr(other, field)
        return None

    @property
    def is_flow(self) -> bool:
        return self.prediction_type == "flow"

    @property
    def sigmas(self) -> np.ndarray:
        """Noise levels in sigma space (Karras et al. 2022), ``sqrt((1 - a) / a)`` per timestep: float64 (T,),
        ascending. Euler-type samplers and Karras spacing work in these units (diffusion schedules only)."""
        return np.sqrt((1.0 - self.alphas_cumprod) / self.alphas_cumprod)

    def alpha_sigma(self, timesteps: TensorLike) -> tuple[tf.Tensor, tf.Tensor]:
        """Signal and noise scales (float32, same shape as ``timesteps``).

        Args:
            timesteps: () or (B,) integer timesteps (any number in ``[0, T]`` for ``flow``).
        """
        timesteps = tf.convert_to_tensor(timesteps)
        if self.is_flow:
            s = tf.cast(timesteps, tf.float32) / float(self.num_train_timesteps)
            return 1.0 - s, s
        if not timesteps.dtype.is_integer:
            raise ValueError(
                f"timesteps must be integers in [0, {self.num_train_timesteps}) for prediction_type "
                f"{self.prediction_type!r}, found dtype {timesteps.dtype.name}."
            )
        timesteps = tf.cast(timesteps, tf.int32)
        return tf.gather(self._alpha_table, timesteps), tf.gather(self._sigma_table, timesteps)

    def add_noise(self, x0: TensorLike, noise: TensorLike, timesteps: TensorLike) -> tf.Tensor:
        """Forward process: ``alpha_t * x0 + sigma_t * noise``.

        Args:
            x0: clean latents (B, H, W, C).
            noise: standard normal noise (B, H, W, C).
            timesteps: (B,) per-example timesteps, or a scalar for the whole batch.

        Returns:
            float32 (B, H, W, C) noisy latents.
        """
        x0, noise = to_float32(x0), to_float32(noise)
        alpha, sigma = self.alpha_sigma(timesteps)
        return _per_example(alpha, x0) * x0 + _per_example(sigma, x0) * noise

    def training_target(self, x0: TensorLike, noise: TensorLike, timesteps: TensorLike) -> tf.Tensor:
        """What the model should output for ``add_noise(x0, noise, timesteps)``.

        ``epsilon`` -> ``noise``; ``v_prediction`` -> ``alpha_t * noise - sigma_t * x0``;
        ``flow`` -> ``noise - x0``. float32 (B, H, W, C).
        """
        x0, noise = to_float32(x0), to_float32(noise)
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "flow":
            return noise - x0
        alpha, sigma = self.alpha_sigma(timesteps)
        return _per_example(alpha, x0) * noise - _per_example(sigma, x0) * x0

    def snr(self, timesteps: TensorLike) -> tf.Tensor:
        """Signal-to-noise ratio ``alpha_t^2 / sigma_t^2`` (float32), e.g. for min-SNR-gamma weights.

        For ``flow`` this is ``((1 - s) / s)^2`` and is infinite at ``t = 0``.
        """
        alpha, sigma = self.alpha_sigma(timesteps)
        return tf.square(alpha) / tf.square(sigma)

    def predict_x0(self, model_output: TensorLike, sample: TensorLike, timesteps: TensorLike) -> tf.Tensor:
        """Clean latents implied by a model output at per-example timesteps. float32 (B, H, W, C)."""
        return self._split(model_output, sample, timesteps)[0]

    def predict_epsilon(
        self, model_output: TensorLike, sample: TensorLike, timesteps: TensorLike
    ) -> tf.Tensor:
        """Noise implied by a model output at per-example timesteps. float32 (B, H, W, C)."""
        return self._split(model_output, sample, timesteps)[1]

    def _split(self, model_output: TensorLike, sample: TensorLike, timesteps: TensorLike):
        model_output, sample = to_float32(model_output), to_float32(sample)
        alpha, sigma = self.alpha_sigma(timesteps)
        alpha, sigma = _per_example(alpha, sample), _per_example(sigma, sample)
        return split_model_output(model_output, sample, alpha, sigma, self.prediction_type)

    def __repr__(self) -> str:
        return (
            f"NoiseSchedule({self.num_train_timesteps}, {self.beta_start}, {self.beta_end}, "
            f"{self.beta_schedule!r}, {self.prediction_type!r})"
        )


def draw_noise(shape: Any, seed: Seed, step_index: int) -> tf.Tensor:
    """Standard normal float32 noise for one sampler step, reproducible from ``seed``.

    Args:
        shape: the sample's shape.
        seed: ``None`` (TensorFlow's global generator; reproducible after
            ``keras.utils.set_random_seed``), an ``int`` (stateless: the same seed and step always give
            the same noise), a ``tf.random.Generator`` or a ``keras.random.SeedGenerator``.
        step_index: position of the step in the sampler's timesteps; mixed into an int seed.
    """
    if seed is None:
        return tf.random.normal(shape, dtype=tf.float32)
    if isinstance(seed, tf.random.Generator):
        return seed.normal(shape, dtype=tf.float32)
    if isinstance(seed, keras.random.SeedGenerator):
        return tf.convert_to_tensor(keras.random.normal(shape, dtype="float32", seed=seed))
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        # Pin the algorithm (TF picks Philox on CPU and GPU anyway) so it cannot change with the device.
        return tf.random.stateless_normal(
            shape, seed=[int(seed), int(step_index)], dtype=tf.float32, alg="philox"
        )
    raise TypeError(
        "seed must be None, an int, a tf.random.Generator or a keras.random.SeedGenerator, "
        f"got {type(seed).__name__}."
    )


class Sampler:
    """Contract shared by every sampler (one algorithm per file, swappable by name).

    Usage::

        sampler.set_timesteps(30)
        x = noise * sampler.init_noise_sigma                      # (B, H, W, C)
        for t in sampler.timesteps:
            out = unet(sampler.scale_model_input(x, t), t, context)
            x = sampler.step(out, t, x, seed=seed)

    Image to image::

        timesteps, start_sample = sampler.timesteps_for_strength(0.6)
        x = start_sample(encoded_image, noise)                    # noised to timesteps[0]
        for t in timesteps: ...                                   # same loop as above

    ``step`` keeps only Python state (which timestep index ran last, DPM++'s history); its tensor math
    is TensorFlow ops, so a Python-unrolled loop may be traced by ``tf.function``. Timesteps must be
    Python/numpy numbers or eager scalars. Samples come back float32 whatever the input dtype.
    """

    name = "sampler"

    def __init__(self, schedule: NoiseSchedule, timestep_spacing: str, steps_offset: int) -> None:
        if timestep_spacing not in TIMESTEP_SPACINGS:
            raise ValueError(
                f"timestep_spacing must be one of {TIMESTEP_SPACINGS}, got {timestep_spacing!r}."
            )
        self.schedule = schedule
        self.timestep_spacing = timestep_spacing
        self.steps_offset = int(steps_offset)
        self.num_inference_steps: int | None = None
        self.timesteps = np.zeros([0], np.int64)
        self._last_index: int | None = None

    def _reject_flow(self) -> None:
        if self.schedule.is_flow:
            raise ValueError(
                f"The {self.name!r} sampler needs a diffusion (epsilon / v_prediction) model; this schedule "
                "has prediction_type 'flow'. Use the 'euler' sampler, which integrates the flow ODE."
            )

    @property
    def init_noise_sigma(self) -> float:
        """Scale of the starting noise: multiply N(0, 1) noise by this."""
        return 1.0

    def set_timesteps(self, num_inference_steps: int) -> None:
        raise NotImplementedError

    def scale_model_input(self, sample: TensorLike, timestep: Any) -> tf.Tensor:
        """What the UNet sees at ``timestep`` (identity unless the sampler works in sigma space)."""
        return to_float32(sample)

    def step(self, model_output: TensorLike, timestep: Any, sample: TensorLike, seed: Seed = None,
             noise: TensorLike | None = None) -> tf.Tensor:
        raise NotImplementedError

    def add_noise(self, x0: TensorLike, noise: TensorLike, timestep: Any) -> tf.Tensor:
        """Noise clean latents to ``timestep`` in this sampler's sample space (float32 (B, H, W, C))."""
        return self.schedule.add_noise(x0, noise, self._schedule_timestep(timestep))

    def timesteps_for_strength(
        self, strength: float
    ) -> tuple[np.ndarray, Callable[[TensorLike, TensorLike], tf.Tensor]]:
        """Image-to-image: the timesteps to run and a function that makes the starting sample.

        Keeps the last ``min(int(n * strength), n)`` of the ``n`` timesteps set by ``set_timesteps``
        (diffusers' StableDiffusionImg2ImgPipeline rule), so ``strength=1`` runs every step from a
        nearly pure-noise start and small strengths change the image less.

        Args:
            strength: in [0, 1]; how much of the schedule to run.

        Returns:
            ``(timesteps, start_sample)``: the kept timesteps (descending) and
            ``start_sample(x0, noise) -> sample`` noising the encoded image to ``timesteps[0]``.
        """
        n = self._require_timesteps()
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength}.")
        kept_steps = min(int(n * strength), n)
        t_start = max(n - kept_steps, 0)
        if kept_steps < 1:
            raise ValueError(
                f"strength={strength} with {n} steps keeps {kept_steps} steps; "
                "raise strength or the step count."
            )
        timesteps = self.timesteps[t_start:]
        self._last_index = None

        def start_sample(x0: TensorLike, noise: TensorLike) -> tf.Tensor:
            return self.add_noise(x0, noise, timesteps[0])

        return timesteps, start_sample

    # Helpers for subclasses.

    def _require_timesteps(self) -> int:
        if self.num_inference_steps is None:
            raise RuntimeError(f"Call {type(self).__name__}.set_timesteps(num_inference_steps) first.")
        return self.num_inference_steps

    def _reset(self, timesteps: np.ndarray) -> None:
        self.timesteps = timesteps
        self.num_inference_steps = len(timesteps)
        self._last_index = None

    def _index_of(self, timestep: Any) -> int:
        """Position of ``timestep`` in ``self.timesteps`` (the step after the last one on a tie)."""
        self._require_timesteps()
        value = float(np.asarray(timestep))
        matches = np.flatnonzero(np.abs(self.timesteps - value) < 1e-3)
        if matches.size == 0:
            raise ValueError(
                f"timestep {value:g} is not one of {type(self).__name__}.timesteps "
                f"({self.timesteps[0]:g}..{self.timesteps[-1]:g}, {self.num_inference_steps} steps); "
                "pass the values from sampler.timesteps after set_timesteps()."
            )
        following = None if self._last_index is None else self._last_index + 1
        return following if following in matches else int(matches[0])

    def _schedule_timestep(self, timestep: Any) -> Any:
        """Timestep in the schedule's units (integers for diffusion schedules)."""
        if self.schedule.is_flow:
            return np.float32(np.asarray(timestep))
        return np.int32(np.round(np.asarray(timestep)))
