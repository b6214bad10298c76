"""Textual inversion: only the placeholder rows of the text encoder train.

The rows live in their own ``extra_embeddings`` variable (see ``models/text_encoder.py``),
so every CLIP row stays bit-identical by construction, and what is saved is one small
array per token (``kerasemote.embeddings``).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from keras import ops

from kerasemote.data.emotions import emotion_slug
from kerasemote.embeddings import (
    add_placeholders,
    check_compatible,
    initializer_rows,
    read_embeddings,
    save_embeddings,
)
from kerasemote.training.data import ImageSet
from kerasemote.training.strategy import Strategy
from kerasemote.training.templates import fill_templates


def concept_tokens(images: ImageSet, token: str | None = None) -> dict[str, str]:
    """Concept -> placeholder: ``token`` for every image, else ``<concept>`` per concept folder.

    Spaces in a concept become ``-`` (a placeholder is one word): label ``in love`` -> ``<in-love>``.

    Example:
        >>> concept_tokens(load_training_images("emotions/", 64))   # happy/, sad/
        {'happy': '<happy>', 'sad': '<sad>'}
    """
    if token:
        return {concept: token for concept in images.concept_names}
    return {concept: f"<{emotion_slug(concept)}>" for concept in images.concept_names}


class TextualInversion(Strategy):
    """Learn one placeholder token per concept.

    Args:
        tokens: concept -> placeholder token (``concept_tokens`` builds it).
        init: initializer word for every token, or token -> word; default the concept name
            when it is a single CLIP token. Each word must be exactly one CLIP token.
        num_vectors: embedding rows per token.
        templates: ``object`` or ``style`` prompt templates.
        init_from: seed-style start: an embeddings file whose rows replace the initializer
            (its manifest's ``steps`` count as done).
    """

    name = "textual-inversion"
    default_learning_rate = 5e-3
    trains_text_encoder = True

    def __init__(
        self,
        tokens: Mapping[str, str],
        init: str | Mapping[str, str] | None = None,
        num_vectors: int = 1,
        templates: str = "object",
        init_from: str | None = None,
    ):
        if not tokens:
            raise ValueError("TextualInversion needs at least one concept -> token.")
        fill_templates("{}", templates)  # checks the kind early
        self.tokens = dict(tokens)
        self.placeholders = list(dict.fromkeys(self.tokens.values()))
        self.num_vectors = int(num_vectors)
        self.templates = templates
        self.init_from = init_from
        concept_of = {t: c for c, t in reversed(list(self.tokens.items()))}
        if isinstance(init, Mapping):
            self.init = {t: init.get(t) or init.get(concept_of[t]) for t in self.placeholders}
        else:
            self.init = {t: init or concept_of[t] for t in self.placeholders}
        self._start_step = 0
        self._frozen_ids = np.zeros((0,), np.int64)
        self._frozen_rows = None

    def prepare(self, model) -> None:
        known = model.tokenizer.placeholders
        seeded = self._seed_rows(model)
        new = {}
        for token in self.placeholders:
            if token in known:
                continue
            new[token] = seeded.get(token)
            if new[token] is None:
                new[token] = initializer_rows(model, token, self.init[token], self.num_vectors)
        add_placeholders(model, new)
        for token, rows in seeded.items():
            if token in known:
                model.set_placeholder_rows(token, rows)
        # Placeholders this run does not train (a model's style tokens <s0>..., concepts loaded
        # earlier) share the trained variable: remember their rows and put them back after
        # every step, so they stay bit-identical. New rows are appended, so their ids hold.
        others = [t for t in model.tokenizer.placeholders if t not in self.placeholders]
        ids = [i for t in others for i in model.tokenizer.placeholders[t]]
        self._frozen_ids = np.asarray(ids, np.int64) - model.config.vocab_size
        self._frozen_rows = model.placeholder_rows()[self._frozen_ids]  # (F, width)

    def after_step(self, model) -> None:
        if not len(self._frozen_ids):
            return
        variable = model.text_encoder.token_embedding.extra_embeddings
        rows = np.array(ops.convert_to_numpy(variable))
        rows[self._frozen_ids] = self._frozen_rows
        variable.assign(rows)

    def _seed_rows(self, model) -> dict:
        if not self.init_from:
            return {}
        vectors, manifest = read_embeddings(self.init_from)
        check_compatible(self.init_from, vectors, manifest, model)
        self._start_step = int(manifest.get("steps", 0))
        missing = [t for t in self.placeholders if t not in vectors]
        if missing:
            raise ValueError(f"{self.init_from}: keys {missing} expected (tokens of this run), "
                             f"found only {sorted(vectors)}.")
        return {t: vectors[t] for t in self.placeholders}

    def initial_step(self) -> int:
        return self._start_step

    def trainable_variables(self, model) -> list:
        return [model.text_encoder.token_embedding.extra_embeddings]

    def caption(self, images: ImageSet) -> ImageSet:
        return images.with_captions(self.tokens, self.templates, require_token=True)

    def validation_prompts(self) -> list[str]:
        return [fill_templates(token, self.templates)[2] for token in self.placeholders]

    def settings(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "num_vectors": self.num_vectors, "templates": self.templates,
                "init": self.init}

    def save(self, model, out_dir: str, step: int, ema=None) -> list[str]:
        return save_embeddings(model, out_dir, self.placeholders, self.init, steps=step)
