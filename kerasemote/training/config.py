"""How a training run is set up (``TrainConfig``) and what it did (``TrainResult``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

OPTIMIZERS = ("adamw", "adafactor")
LR_SCHEDULES = ("constant", "cosine")
# Keys of TrainConfig that may change between a run and its resumption.
RESUMABLE_CHANGES = frozenset(
    {"steps", "checkpoint_every", "keep_checkpoints", "validate_every", "validation_prompts",
     "validation_steps", "validation_seed", "progress",
     "gradient_checkpointing"}  # the same gradients, less memory: a resumed run may switch it
)


@dataclass(frozen=True)
class TrainConfig:
    """How to train (what trains is the strategy's business).

    Args:
        steps: optimizer steps in all (a resumed run continues up to this count).
        batch_size: examples per micro-batch (global: split over replicas).
        learning_rate: peak learning rate; None takes the strategy's default.
        optimizer: ``adamw`` or ``adafactor``.
        weight_decay: decoupled weight decay.
        lr_schedule: ``constant`` or ``cosine`` (to zero at ``steps``), after the warm-up.
        warmup_steps: linear warm-up steps.
        grad_accum: micro-batches summed into one optimizer step.
        clip_norm: clip gradients to this global norm; None for no clipping.
        min_snr_gamma: min-SNR-gamma loss weighting (5 is usual); None for plain MSE.
        noise_offset: scale of per-channel offset noise (0.05-0.1 helps very dark/bright images).
        jit_compile: compile the forward and backward pass with XLA.
        gradient_checkpointing: keep only each UNet block's inputs (and each text-encoder
            layer's, when it trains) in the forward pass and recompute the activations in the
            backward pass: less memory, about one more forward pass of time per step.
        ema_decay: keep an exponential moving average of the trained weights (fine-tune);
            the saved weights are then the average.
        seed: seed of every random draw (examples, flips, captions, noise, timesteps).
        cache_latents: encode every image and its flip once; False encodes each batch
            (needed for random crops).
        flip: random left-right flips.
        crop_scale: random resized crops keeping at least this area fraction (needs
            ``cache_latents=False``).
        checkpoint_every: write a checkpoint every N steps (and always at the end); 0: end only.
        keep_checkpoints: newest checkpoints kept.
        validate_every: generate validation images every N steps; 0: never.
        validation_prompts: prompts for them; default the strategy's.
        validation_steps: sampler steps of validation images.
        validation_seed: seed of validation images (the same noise each time).
        progress: show a progress bar.
    """

    steps: int = 1000
    batch_size: int = 1
    learning_rate: float | None = None
    optimizer: str = "adamw"
    weight_decay: float = 1e-2
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    grad_accum: int = 1
    clip_norm: float | None = 1.0
    min_snr_gamma: float | None = None
    noise_offset: float = 0.0
    jit_compile: bool = False
    gradient_checkpointing: bool = False
    ema_decay: float | None = None
    seed: int = 0
    cache_latents: bool = True
    flip: bool = True
    crop_scale: float | None = None
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    validate_every: int = 0
    validation_prompts: tuple[str, ...] = ()
    validation_steps: int = 20
    validation_seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "validation_prompts", tuple(self.validation_prompts))
        checks = [
            (self.steps >= 1, "steps must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.grad_accum >= 1, "grad_accum must be >= 1"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}"),
            (self.lr_schedule in LR_SCHEDULES, f"lr_schedule must be one of {LR_SCHEDULES}"),
            (0 <= self.warmup_steps, "warmup_steps must be >= 0"),
            (self.crop_scale is None or 0 < self.crop_scale <= 1, "crop_scale must be in (0, 1]"),
            (self.ema_decay is None or 0 < self.ema_decay < 1, "ema_decay must be in (0, 1)"),
            (not (self.cache_latents and self.crop_scale not in (None, 1.0)),
             "random crops change the pixels every epoch, so they need cache_latents=False "
             "(--no-cache-latents)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"TrainConfig: {message}.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    """What a run did.

    Args:
        step: optimizer steps done (the last good one if the loss went non-finite).
        losses: the loss of every step of this run and the resumed ones before it.
        status: ``completed`` or ``non-finite`` (NaN/inf loss; the model holds the last
            checkpoint's weights).
        outputs: the files the strategy saved (none on a multi-worker run's non-chief workers).
        checkpoint: the newest checkpoint.
    """

    step: int
    losses: list[float]
    status: str
    outputs: list[str] = field(default_factory=list)
    checkpoint: str | None = None
