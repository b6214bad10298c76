"""``kerasemote demo``: the whole workflow on the embedded tiny model, offline, in minutes.

Modules, in the order they import each other (each only from those above it):

- ``spec``: :class:`DemoConfig`, stage names, the judge's extra classes, the prompt rows.
- ``result``: :class:`DemoResult`, :class:`PromptScore`, the table, CSV and JSON files.
- ``sets``: the packaged sources, the concept's images and the labelled emotion faces.
- ``stickers``: broccoli stickers in four emotions: training stickers, the sticker rows, a row's spread.
- ``styles``: vendor styles: the style rows, the vendor judge's names, set and training.
- ``judge``: what the judge's networks learn, training and evaluating the gated judge.
- ``scoring``: the sample grid and the scored generations of every prompt.
- ``page``: ``index.html``.
- ``run``: :func:`run_demo`, every stage in order.

Example:
    >>> from kerasemote.demo import DemoConfig, run_demo
    >>> result = run_demo("demo", DemoConfig(steps=50))
    >>> print(result.format_table())
"""

from kerasemote.demo.judge import held_out_faces, judge_emotion_set, judge_gate_set, other_emoji_rows, train_judge
from kerasemote.demo.result import DemoResult, PromptScore, format_scores, scores_csv
from kerasemote.demo.run import run_demo
from kerasemote.demo.scoring import sample_grid, score_prompts
from kerasemote.demo.sets import concept_images, emotion_images, open_sources
from kerasemote.demo.spec import (CONCEPT_LORA_TARGETS, DEFAULT_MODEL, DEFAULT_SOURCES, FACE_CLASS, LORA_KIND,
                                  OTHER_CLASS, STAGES, DemoConfig, Row, concept_slug, prompt_rows, row_label)
from kerasemote.demo.stickers import sticker_rows
from kerasemote.demo.styles import style_rows

__all__ = [
    "CONCEPT_LORA_TARGETS", "DEFAULT_MODEL", "DEFAULT_SOURCES", "DemoConfig", "DemoResult", "FACE_CLASS",
    "LORA_KIND", "OTHER_CLASS", "PromptScore", "STAGES", "concept_images", "concept_slug", "emotion_images",
    "format_scores", "held_out_faces", "judge_emotion_set", "judge_gate_set", "open_sources", "other_emoji_rows",
    "Row", "prompt_rows", "row_label", "run_demo", "sample_grid", "score_prompts", "scores_csv", "sticker_rows",
    "style_rows", "train_judge",
]
