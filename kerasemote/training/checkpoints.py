"""Training checkpoints: one atomic ``.npz`` per saved step, enough to resume bit for bit.

``OUT/checkpoints/step-00000100.npz`` holds

* ``model/<variable path>``: every variable the strategy trains (placeholder rows, LoRA
  factors, UNet weights);
* ``optimizer/<i>/<variable path>``: every optimizer variable in order (iteration count,
  moments, loss scale, EMA), its path kept so a mismatch is named, not guessed;
* the manifest (``__manifest__``): step, seed, the strategy and its settings, the
  training config and the loss history.

Randomness is stateless, keyed by (seed, step), so nothing else is needed to continue
exactly. Files are written atomically (temp file, then rename) and older ones are
pruned after a newer one exists, so an interrupted run always leaves a whole checkpoint.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Mapping

import keras
import numpy as np

from kerasemote import storage, weights

FORMAT = "kerasemote-checkpoint"
VERSION = 1
FOLDER = "checkpoints"
logger = logging.getLogger(__name__)
_NAME = re.compile(r"^step-(\d{8})\.npz$")


def checkpoint_path(out_dir: str, step: int) -> str:
    return storage.join(out_dir, FOLDER, f"step-{step:08d}.npz")


def list_checkpoints(out_dir: str) -> list[tuple[int, str]]:
    """``(step, path)`` of every checkpoint under ``out_dir``, oldest first."""
    folder = storage.join(out_dir, FOLDER)
    if not storage.isdir(folder):
        return []
    found = [(int(m.group(1)), storage.join(folder, name)) for name in storage.listdir(folder)
             if (m := _NAME.match(name))]
    return sorted(found)


def latest_checkpoint(out_dir: str) -> str | None:
    """Path of the newest checkpoint under ``out_dir``, or None."""
    found = list_checkpoints(out_dir)
    return found[-1][1] if found else None


def save_checkpoint(
    out_dir: str,
    step: int,
    model_variables: list,
    optimizer: keras.optimizers.Optimizer,
    manifest: Mapping[str, Any],
    keep: int = 2,
) -> str:
    """Write the checkpoint of ``step`` atomically, then prune all but the newest ``keep``.

    Args:
        out_dir: the run's output folder (local, Drive or gs://).
        step: optimizer steps done.
        model_variables: the trained variables (saved by ``variable.path``).
        optimizer: the built optimizer.
        manifest: JSON facts (strategy, config, losses...); step and format are added.
        keep: checkpoints to keep (at least 1).

    Returns:
        The path written.
    """
    arrays = {f"model/{v.path}": keras.ops.convert_to_numpy(v) for v in model_variables}
    for i, v in enumerate(optimizer.variables):
        arrays[f"optimizer/{i:05d}/{v.path}"] = keras.ops.convert_to_numpy(v)
    path = checkpoint_path(out_dir, step)
    storage.makedirs(storage.join(out_dir, FOLDER))
    weights.save_arrays(path, arrays, {**manifest, "format": FORMAT, "version": VERSION, "step": step})
    prune_checkpoints(out_dir, step, keep)
    return path


def prune_checkpoints(out_dir: str, step: int, keep: int = 2) -> list[str]:
    """Delete checkpoints so that the one of ``step`` is the newest, with at most ``keep - 1`` older ones.

    Pruning by file order alone would delete the checkpoint just written whenever the folder
    holds newer steps (another run, or a branch abandoned by resuming from an older
    checkpoint), and a later resume would take those up. Steps above ``step`` therefore go
    first, with a warning naming them.

    Returns:
        The paths deleted.
    """
    found = list_checkpoints(out_dir)
    newer = [path for s, path in found if s > step]
    older = [path for s, path in found if s < step]
    if newer:
        logger.warning("%s: removing checkpoints of steps after %d, which this run replaces: %s.", out_dir, step,
                       ", ".join(storage.basename(p) for p in newer))
    doomed = newer + older[: max(0, len(older) - (max(1, keep) - 1))]
    for path in doomed:
        storage.remove(path)
    return doomed


def load_checkpoint(path: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Arrays and manifest of a checkpoint; the format is checked."""
    arrays, manifest = weights.load_arrays(path)
    if manifest.get("format") != FORMAT:
        raise weights.WeightFileError(
            f"{path}: key 'format' expected {FORMAT!r}, found {manifest.get('format')!r}; "
            "--resume takes a run folder or one of its checkpoints/step-*.npz files."
        )
    return arrays, manifest


def restore_checkpoint(
    path: str,
    arrays: Mapping[str, np.ndarray],
    model_variables: list,
    optimizer: keras.optimizers.Optimizer,
) -> None:
    """Assign a checkpoint's arrays to the trained variables and the (built) optimizer.

    Raises:
        WeightFileError: naming the file and the first keys that are missing, unexpected
            or of the wrong shape.
    """
    model_arrays = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    _assign(path, "model/", {v.path: v for v in model_variables}, model_arrays)
    saved = sorted(k for k in arrays if k.startswith("optimizer/"))
    expected = [f"optimizer/{i:05d}/{v.path}" for i, v in enumerate(optimizer.variables)]
    if saved != sorted(expected):
        problems = _key_problems(path, expected, saved)
        raise weights.WeightFileError(
            "\n".join(problems) + "\nThe optimizer differs from the checkpoint's (type, trained variables, "
            "EMA or mixed precision); resume with the settings of the original run."
        )
    _assign(path, "", {k: v for k, v in zip(expected, optimizer.variables)}, arrays, only=expected)


def _key_problems(path: str, wanted, found) -> list[str]:
    wanted, found = set(wanted), set(found)
    problems = []
    if wanted - found:
        problems.append(f"{path}: missing keys {sorted(wanted - found)[:5]} ({len(wanted - found)} in all).")
    if found - wanted:
        problems.append(f"{path}: unexpected keys {sorted(found - wanted)[:5]} ({len(found - wanted)} in all).")
    return problems


def _assign(path: str, prefix: str, variables: dict, arrays: Mapping[str, np.ndarray], only=None) -> None:
    keys = only if only is not None else arrays.keys()
    problems = _key_problems(path, [prefix + k for k in variables], [prefix + k for k in keys])
    for key in keys:
        if key in variables and tuple(variables[key].shape) != arrays[key].shape:
            problems.append(
                f"{path}: key {prefix + key!r} expected shape {tuple(variables[key].shape)}, "
                f"found {arrays[key].shape}."
            )
    if problems:
        raise weights.WeightFileError("\n".join(problems[:10]))
    for key in keys:
        variables[key].assign(arrays[key])
