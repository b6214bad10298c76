"""Drawing the demo's prompts: every row's generations, the sample grid made of them, and their scores.

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


GENERATION_BATCH = 32  # images per generate call; rows and prompts of one model share batches


def draw_rows(models, rows: Sequence[Row], config: DemoConfig, out_dir: str) -> list[np.ndarray]:
    """Draw ``config.num_images`` generations of every row and save them.

    Each model draws all its rows in full batches of :data:`GENERATION_BATCH` images that mix rows
    and prompts, each image from its own noise (:func:`row_plan`), so batching changes no image.
    Row ``r``'s PNGs and ``grid.png`` go to ``out_dir/scores/NN_<row>/`` (:func:`row_folder`).

    Args:
        models: one model, or kind -> model (``""``: the model of every kind without its own entry).
        rows: what to draw.
        config: ``num_images``, ``seed``, the sampler settings and ``progress``.
        out_dir: the demo's output folder.

    Returns:
        One uint8 (N, S, S, 3) array per row.
    """
    from tqdm.auto import tqdm

    from kerasemote import images as image_io

    models = _as_models(models)
    plain = models[""]
    factor, size = plain.config.vae_downsample, plain.config.image_size
    latent = (size // factor, size // factor, plain.config.latent_channels)
    plans = [row_plan(row, config, latent) for row in rows]
    groups: dict[tuple[str, tuple], list[int]] = {}  # (model key, sampler settings) -> its rows
    for r, row in enumerate(rows):
        settings = tuple(sorted(generate_kwargs(config, row.kind).items()))
        groups.setdefault((_model_key(models, row.kind), settings), []).append(r)
    total = sum(len(prompts) for prompts, _ in plans)
    bar = tqdm(total=total, desc="generating", unit="image", disable=not config.progress)
    drawn: list[np.ndarray] = [np.zeros((0, size, size, 3), np.uint8)] * len(rows)
    for (key, settings), members in groups.items():
        prompts = [p for r in members for p in plans[r][0]]
        noise = np.concatenate([plans[r][1] for r in members])
        parts = []
        for start in range(0, len(prompts), GENERATION_BATCH):
            chunk = prompts[start:start + GENERATION_BATCH]
            parts.append(models[key].generate(chunk, num_images=len(chunk), seed=config.seed,
                                              init_latents=noise[start:start + GENERATION_BATCH], progress=False,
                                              **dict(settings)))
            bar.update(len(chunk))
        images = np.concatenate(parts) if parts else np.zeros((0, size, size, 3), np.uint8)
        offsets = np.cumsum([0] + [len(plans[r][0]) for r in members])
        for r, begin, end in zip(members, offsets[:-1], offsets[1:]):
            drawn[r] = images[begin:end]
    bar.close()
    for r, row in enumerate(rows):
        folder = os.path.join(out_dir, row_folder(r, row))
        image_io.save_images(drawn[r], folder)
        image_io.save_grid(drawn[r], os.path.join(folder, "grid.png"), cols=min(8, max(1, len(drawn[r]))))
    return drawn


def row_plan(row: Row, config: DemoConfig, latent_shape: Sequence[int]) -> tuple[list[str], np.ndarray]:
    """A row's ``config.num_images`` images: the prompt and the starting noise of each.

    The images are split evenly over the row's prompts; prompt ``p``'s ``n`` images start from
    ``initial_noise((n, *latent_shape), config.seed + 100 p)``. Every row uses the same seeds, so
    image ``k`` of every row's first prompt starts from the same noise (the sample grid's columns).
    """
    from kerasemote.pipeline import initial_noise

    counts = np.diff(np.linspace(0, config.num_images, len(row.prompts) + 1).round().astype(int))
    prompts = [prompt for prompt, n in zip(row.prompts, counts) for _ in range(n)]
    noise = [initial_noise((int(n), *latent_shape), config.seed + 100 * p)
             for p, n in enumerate(counts) if n]
    return prompts, np.concatenate(noise) if noise else np.zeros((0, *latent_shape), np.float32)


def row_folder(index: int, row: Row) -> str:
    """Row ``index``'s folder under the demo's output folder: ``scores/NN_<row>``."""
    return os.path.join("scores", f"{index:02d}_{_file_slug(row.name)}")


def sample_grid(drawn: Sequence[np.ndarray], rows: Sequence[Row], config: DemoConfig, path: str) -> str:
    """The first ``config.samples`` generations of every row, one grid row each.

    Column ``k`` of rows whose first prompt has at least ``k + 1`` images starts from the same noise
    (:func:`row_plan`).
    """
    from kerasemote import images as image_io

    cols = max(1, min([config.samples, *(len(images) for images in drawn)]))
    images = np.concatenate([images[:cols] for images in drawn])  # (rows * cols, S, S, 3), row-major
    labels = [row.name if k == 0 else "" for row in rows for k in range(cols)]
    return image_io.save_grid(images, path, cols=cols, labels=labels)


def score_prompts(drawn: Sequence[np.ndarray], judges, rows: Sequence[Row], config: DemoConfig, out_dir: str,
                  notes: list[str], log=print) -> list[PromptScore]:
    """Classify every row's generations (:func:`draw_rows`) and score each row.

    ``judges``: one classifier, or judge name (a row's ``judge``) -> classifier. A row whose judge
    is missing or lacks its intended class is skipped and noted. Each scored row's
    ``predictions.csv`` and ``scores.json`` go beside its images.
    """
    from tqdm.auto import tqdm

    from kerasemote import classification as clf
    from kerasemote.demo.stickers import row_spread

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
        images = drawn[r]
        report = clf.score_images(classifier, images, label)
        folder = row_folder(r, row)
        clf.write_score(report, os.path.join(out_dir, folder))
        score = _prompt_score(row, label, report, _emotion_index(classifier), folder)
        score.spread = round(row_spread(images), 1) if len(images) > 1 else None
        scores.append(score)
    return scores


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
