"""The run folder's checkpoints as the loop uses them: manifest, resume checks, periodic saves, rollback."""

from __future__ import annotations

import json
import logging
from typing import Any

from kerasemote import storage
from kerasemote.embeddings import base_model_info
from kerasemote.training import checkpoints
from kerasemote.training.config import RESUMABLE_CHANGES, TrainConfig
from kerasemote.training.strategy import Strategy

logger = logging.getLogger(__name__)


def run_manifest(strategy: Strategy, config: TrainConfig, model) -> dict[str, Any]:
    """What every checkpoint and ``train.json`` of a run record: strategy, its settings, config, base model."""
    return {
        "strategy": strategy.name,
        "settings": strategy.settings(),
        "train_config": config.to_dict(),
        "seed": config.seed,
        "base_model": base_model_info(model),
    }


def restore_run(strategy: Strategy, optimizer, variables: list, config: TrainConfig, out_dir: str,
                resume: bool | str) -> tuple[int, list[float], str | None]:
    """Load what ``resume`` names into ``variables`` and ``optimizer``.

    Args:
        resume: False: start afresh (at the strategy's ``initial_step``); True: the newest
            checkpoint in ``out_dir``, if any; a path: that run folder or checkpoint file.

    Returns:
        ``(start step, loss history, checkpoint path or None)``.

    Raises:
        ValueError: the checkpoint was written with other settings (file and key named).
    """
    start = strategy.initial_step()
    if start:
        optimizer.iterations.assign(start)
    if not resume:
        return start, [], None
    path = checkpoints.latest_checkpoint(out_dir) if resume is True else _checkpoint_file(resume)
    if path is None:
        logger.info("No checkpoint in %s; starting at step %d.", out_dir, start)
        return start, [], None
    arrays, manifest = checkpoints.load_checkpoint(path)
    _check_resumable(path, manifest, strategy, config)
    checkpoints.restore_checkpoint(path, arrays, variables, optimizer)
    return int(manifest["step"]), list(manifest.get("losses", [])), path


def _checkpoint_file(resume: str) -> str:
    if storage.isdir(resume):
        path = checkpoints.latest_checkpoint(resume)
        if path is None:
            raise FileNotFoundError(f"--resume {resume}: no checkpoints/step-*.npz in this folder.")
        return path
    return resume


def _check_resumable(path: str, manifest: dict, strategy: Strategy, config: TrainConfig) -> None:
    found = {"strategy": manifest.get("strategy"), "settings": manifest.get("settings")}
    wanted = {"strategy": strategy.name, "settings": json.loads(json.dumps(strategy.settings()))}
    saved_config = manifest.get("train_config", {})
    now = json.loads(json.dumps(config.to_dict()))
    for key in sorted(set(now) - RESUMABLE_CHANGES):
        found[f"train_config.{key}"], wanted[f"train_config.{key}"] = saved_config.get(key), now[key]
    bad = [f"{path}: key {k!r} expected {wanted[k]!r} (this run), found {found[k]!r}."
           for k in wanted if wanted[k] != found[k]]
    if bad:
        raise ValueError("\n".join(bad) + "\nResume with the original run's settings (only --steps and "
                         "checkpoint/validation options may change).")


def save_run_checkpoint(out_dir: str, step: int, variables: list, optimizer, manifest: dict[str, Any],
                        losses: list[float], config: TrainConfig) -> str:
    """Write ``checkpoints/step-N.npz`` with the manifest and loss history; keeps the newest few."""
    return checkpoints.save_checkpoint(
        out_dir, step, variables, optimizer, {**manifest, "losses": losses}, keep=config.keep_checkpoints
    )


def step_of(path: str) -> int:
    """The step of a ``step-N.npz`` checkpoint path."""
    return int(storage.basename(path)[len("step-") : -len(".npz")])


def rollback(path: str | None, variables: list, optimizer, losses: list[float]) -> int:
    """Put the checkpoint ``path`` back into the model and cut ``losses`` to its step; returns the step (0 if none)."""
    if path is None:
        return 0
    arrays, manifest = checkpoints.load_checkpoint(path)
    checkpoints.restore_checkpoint(path, arrays, variables, optimizer)
    del losses[int(manifest["step"]):]
    return int(manifest["step"])
