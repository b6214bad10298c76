"""What a demo run made (:class:`DemoResult`, one :class:`PromptScore` per scored prompt) and how
it is written: the plain-text table, ``success_rates.csv`` / ``.json`` and ``demo.json``."""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict, dataclass, field
from typing import Sequence

from kerasemote.demo.spec import DemoConfig, row_label


@dataclass
class PromptScore:
    """How often the judge saw what one prompt asked for.

    Attributes:
        prompt: the prompt.
        kind: ``words`` (an emotion in words), ``token`` (a learned emotion token), ``concept``
            (the concept's token) or ``concept+lora`` (the token with the concept's LoRA).
        intended: the judge class the prompt asks for.
        num_images: images generated and scored.
        success_rate: share whose top class (among every judge class) is ``intended``.
        emotion_rate: emotion prompts: share whose top class among the four emotions is
            ``intended`` (chance 25 %); None for the concept.
        mean_confidence: mean probability of ``intended``.
        predicted: top class -> image count.
        folder: where the images, their grid and predictions are (relative to the output).
        name: the row's name in tables (``"happy broccoli"``, ``"style <s0>"``...).
        spread: mean over pixels of the standard deviation across the row's images, in uint8
            levels (near 0 when the row repeats one image).
    """

    prompt: str
    kind: str
    intended: str
    num_images: int
    success_rate: float
    emotion_rate: float | None
    mean_confidence: float
    predicted: dict[str, int]
    folder: str
    name: str = ""
    spread: float | None = None


@dataclass
class DemoResult:
    """What ``run_demo`` made; every path is relative to ``out_dir``.

    Attributes:
        out_dir: the output folder.
        config: the settings used.
        sources: the emoji sets prepared; ``skipped_sources``: name -> why not.
        files: kind -> file (``samples``, ``interpolation_grid``, ``index``...).
        timings: stage -> seconds, in order.
        scores: one row per scored prompt.
        judge: the judge's classes, its training size and its held-out accuracy.
        notes: things the reader should know (skipped rows, missing classes).
    """

    out_dir: str
    config: DemoConfig
    sources: list[str] = field(default_factory=list)
    skipped_sources: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    scores: list[PromptScore] = field(default_factory=list)
    judge: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def total_seconds(self) -> float:
        return sum(self.timings.values())

    def format_table(self) -> str:
        """The success-rate table as plain text."""
        return format_scores(self.scores)

    def to_dict(self) -> dict:
        return {
            "config": asdict(self.config), "sources": self.sources, "skipped_sources": self.skipped_sources,
            "files": self.files, "timings": self.timings, "total_seconds": self.total_seconds,
            "scores": [asdict(s) for s in self.scores], "judge": self.judge, "data": self.data,
            "notes": self.notes,
        }


def format_scores(scores: Sequence[PromptScore]) -> str:
    """Plain-text success-rate table: one row per scored row."""
    names = [s.name or row_label(s.prompt, s.kind) for s in scores]
    width = max([len("row")] + [len(name) for name in names])
    intended = max([len("intended")] + [len(s.intended) for s in scores])
    lines = [f"{'row':<{width}}  {'intended':<{intended}} {'n':>4}  success  among emotions  mean p  spread  "
             "predicted"]
    for name, s in zip(names, scores):
        among = f"{s.emotion_rate:14.1%}" if s.emotion_rate is not None else f"{'-':>14}"
        spread = f"{s.spread:6.1f}" if s.spread is not None else f"{'-':>6}"
        predicted = ", ".join(f"{k} {v}" for k, v in sorted(s.predicted.items(), key=lambda kv: -kv[1]))
        lines.append(f"{name:<{width}}  {s.intended:<{intended}} {s.num_images:4d}  {s.success_rate:7.1%}  "
                     f"{among}  {s.mean_confidence:6.3f}  {spread}  {predicted}")
    lines.append("success: top class among every judge class; among emotions: top class among the four "
                 "emotions (chance 25 %)")
    return "\n".join(lines)


def scores_csv(scores: Sequence[PromptScore]) -> str:
    """The rows of ``success_rates.csv`` (header first) as one string."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["name", "prompt", "kind", "intended", "num_images", "success_rate", "emotion_rate",
                     "mean_confidence", "spread", "predicted", "folder"])
    for s in scores:
        writer.writerow([s.name, s.prompt, s.kind, s.intended, s.num_images, f"{s.success_rate:.4f}",
                         "" if s.emotion_rate is None else f"{s.emotion_rate:.4f}", f"{s.mean_confidence:.4f}",
                         "" if s.spread is None else f"{s.spread:.1f}", json.dumps(s.predicted), s.folder])
    return buffer.getvalue()


def write_scores(result: DemoResult, out_dir: str) -> None:
    """Write ``success_rates.json`` and ``success_rates.csv`` into ``out_dir`` and name them in ``result.files``."""
    write_json(os.path.join(out_dir, "success_rates.json"),
               {"success_rates": {s.name or row_label(s.prompt, s.kind): s.success_rate for s in result.scores},
                "scores": [asdict(s) for s in result.scores], "judge": result.judge,
                "chance": {"among_emotions": 0.25, "success": 1 / max(1, len(result.judge["class_names"]))}})
    with open(os.path.join(out_dir, "success_rates.csv"), "w", encoding="utf-8", newline="") as f:
        f.write(scores_csv(result.scores))
    result.files.update(success_json="success_rates.json", success_csv="success_rates.csv")


def write_json(path: str, obj: object) -> None:
    """``obj`` as indented JSON (anything else as its ``str``), ending in a newline."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, default=str)
        f.write("\n")
