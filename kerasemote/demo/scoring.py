"""Drawing the demo's prompts: the sample grid (a few seeds each) and the scored generations.

``models`` is one model, or kind -> model with ``""`` the model of every kind without its own
entry (the concept's LoRA row is drawn by a second model that carries the adapters).
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Mapping, Sequence

import numpy as np

from kerasemote.data.emotions import EMOTION_PROMPTS
from kerasemote.demo.result import PromptScore
from kerasemote.demo.spec import DemoConfig, Row, generate_kwargs


def _as_models(models) -> Mapping[str, object]:
    """One model, or kind -> model with ``""`` the model of every kind without its own entry."""
    return models if isinstance(models, Mapping) else {"": models}


def _model_key(models: Mapping[str, object], kind: str) -> str:
    """The key of the model that draws rows of ``kind``: the kind's own entry, else ``""``."""
    return kind if kind in models else ""


def sample_grid(models, rows: Sequence[Row], config: DemoConfig, path: str) -> str:
    """One grid row per row (its first prompt), one column per seed; every column starts from the same noise.

    ``models``: one model, or kind -> model (``""``: the model of every other kind).
    """
    from tqdm.auto import tqdm

    from kerasemote import images as image_io
    from kerasemote.pipeline import initial_noise

    models = _as_models(models)
    plain = models[""]
    factor, size = plain.config.vae_downsample, plain.config.image_size
    groups: dict[str, list[int]] = {}  # model key -> the rows it draws, so each model draws its rows in one batch
    for r, row in enumerate(rows):
        groups.setdefault(_model_key(models, row.kind), []).append(r)
    columns = []
    for s in tqdm(range(config.samples), desc="samples", disable=not config.progress, leave=False):
        noise = initial_noise((1, size // factor, size // factor, plain.config.latent_channels), config.seed + s)
        column = np.zeros((len(rows), size, size, 3), np.uint8)
        for key, members in groups.items():
            column[members] = models[key].generate([rows[r].prompts[0] for r in members], seed=config.seed + s,
                                                   init_latents=np.repeat(noise, len(members), axis=0),
                                                   progress=False, **generate_kwargs(config))
        columns.append(column)
    images = np.stack(columns, axis=1).reshape(-1, size, size, 3)  # (prompts * seeds, S, S, 3), row-major
    labels = [row.name if s == 0 else "" for row in rows for s in range(config.samples)]
    return image_io.save_grid(images, path, cols=config.samples, labels=labels)


def score_prompts(models, judges, rows: Sequence[Row], config: DemoConfig, out_dir: str,
                  notes: list[str], log=print) -> list[PromptScore]:
    """Generate ``config.num_images`` per row, classify them and score each row.

    ``models``: one model, or kind -> model as in ``sample_grid``. ``judges``: one classifier, or
    judge name (a row's ``judge``) -> classifier. A row whose judge is missing or lacks its
    intended class is skipped and noted.
    """
    from tqdm.auto import tqdm

    from kerasemote import classification as clf
    from kerasemote import images as image_io
    from kerasemote.demo.stickers import row_spread

    models = _as_models(models)
    judges = judges if isinstance(judges, Mapping) else {"content": judges}
    scores = []
    for r, row in enumerate(tqdm(rows, desc="judging", disable=not config.progress)):
        classifier = judges.get(row.judge)
        label = None if classifier is None else _class_or_none(row.intended, classifier.class_names)
        if label is None:
            why = (f"no {row.judge} judge" if classifier is None else
                   f"the judge has no class {row.intended!r} (its classes: {classifier.class_names})")
            notes.append(f"{row.name!r} not scored: {why}")
            log(f"  {notes[-1]}")
            continue
        images = generate_row(models[_model_key(models, row.kind)], row, config, seed=config.seed + 1000 * (r + 1))
        report = clf.score_images(classifier, images, label)
        folder = os.path.join(out_dir, "scores", f"{r:02d}_{_file_slug(row.name)}")
        image_io.save_images(images, folder)
        image_io.save_grid(images, os.path.join(folder, "grid.png"), cols=min(8, len(images)))
        clf.write_score(report, folder)
        score = _prompt_score(row, label, report, _emotion_index(classifier), os.path.relpath(folder, out_dir))
        score.spread = round(row_spread(images), 1) if len(images) > 1 else None
        scores.append(score)
    return scores


def generate_row(model, row: Row, config: DemoConfig, seed: int) -> np.ndarray:
    """``config.num_images`` generations of a row, split evenly over its prompts (prompt ``p`` from ``seed + 100 p``)."""
    counts = np.diff(np.linspace(0, config.num_images, len(row.prompts) + 1).round().astype(int))
    parts = [generate_many(model, prompt, replace(config, num_images=int(n)), seed + 100 * p)
             for p, (prompt, n) in enumerate(zip(row.prompts, counts)) if n]
    return np.concatenate(parts, axis=0)  # (N, S, S, 3) uint8


def _emotion_index(classifier) -> list[int]:
    emotion_classes = [_class_or_none(label, classifier.class_names) for label in EMOTION_PROMPTS]
    return [classifier.class_names.index(c) for c in emotion_classes if c is not None]


def _class_or_none(concept: str, class_names: Sequence[str]) -> str | None:
    from kerasemote.classification import concept_label

    try:
        return concept_label(concept, class_names)
    except ValueError:
        return None


def generate_many(model, prompt: str, config: DemoConfig, seed: int) -> np.ndarray:
    """``config.num_images`` generations of ``prompt``, in batches of at most 32 (batch ``b`` uses ``seed + b``)."""
    batches, batch = [], min(config.num_images, 32)
    for b, start in enumerate(range(0, config.num_images, batch)):
        n = min(batch, config.num_images - start)
        batches.append(model.generate(prompt, num_images=n, seed=seed + b, progress=False,
                                      **generate_kwargs(config)))
    return np.concatenate(batches, axis=0)  # (N, S, S, 3) uint8


def _prompt_score(row: Row, label: str, report, emotion_index: list[int], folder: str) -> PromptScore:
    names = report.class_names
    probs = report.probabilities  # (N, C)
    top = probs.argmax(axis=-1)
    wanted = names.index(label)
    emotion_rate = None
    if wanted in emotion_index:
        among = np.asarray(emotion_index)[probs[:, emotion_index].argmax(axis=-1)]
        emotion_rate = float(np.mean(among == wanted))
    predicted = {name: int(np.sum(top == i)) for i, name in enumerate(names) if np.any(top == i)}
    prompt = row.prompts[0] if len(row.prompts) == 1 else " | ".join(row.prompts)
    return PromptScore(prompt, row.kind, label, len(probs), float(np.mean(top == wanted)), emotion_rate,
                       float(probs[:, wanted].mean()), predicted, folder, name=row.name)


def _file_slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.replace("<", "").replace(">", "")).strip("-")[:48]
