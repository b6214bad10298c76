"""``kerasemote demo``: the whole mission on the embedded tiny model, offline, in minutes.

Stages (each timed; ``OUT`` is the output folder):

1. data: the packaged emoji sets at 64 px -> ``OUT/data`` (``kerasemote.data.prepare``).
2. textual inversion: ``<broccoli>`` from the concept's packaged images (one per vendor,
   at most five) and ``<happy> <sad> <angry> <in-love>`` from the labelled faces ->
   ``OUT/ti/<run>/embeddings.npz`` (+ one ``.npy`` per token, ``loss.png``).
3. LoRA: adapters on the UNet learned from the same concept images, on top of the
   ``<broccoli>`` token, in a second copy of the model -> ``OUT/lora/<concept>/lora.npz``
   (``concept_lora_steps=0`` skips it). The token alone can only steer what the model already
   draws; the adapters change how it draws, so the two rows show what each adds.
4. samples: the four emotion prompts, the four emotion tokens, the concept and the concept
   with its LoRA, a few seeds each (the same noise down each column) -> ``OUT/samples.png``.
5. interpolation: ``<broccoli>`` -> ``<happy>`` in token space -> ``OUT/interpolation/``.
6. judge: ResNet-50s trained from scratch (a gate: face / the concept / other emoji; three
   more on the four emotions' faces, averaged), or a given judge, score N generations per
   prompt -> ``OUT/classifier/``, ``OUT/success_rates.json`` / ``.csv``.
7. report: ``OUT/index.html`` with every figure, the table and the timings.

Example:
    >>> result = run_demo("demo")                     # kerasemote-tiny, about 8 minutes on 2 cores
    >>> print(result.format_table())
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

DEFAULT_MODEL = "kerasemote-tiny"
DEFAULT_SOURCES = ("twemoji", "openmoji", "noto")
# Intended class -> the prompt that asks for it with words, and the token learned for it.
EMOTION_PROMPTS = {
    "happy": "a grinning face emoji",
    "sad": "a crying face emoji",
    "angry": "an angry face emoji",
    "in love": "a smiling face with heart-eyes emoji",
}
EMOTION_TOKENS = {label: f"<{label.replace(' ', '-')}>" for label in EMOTION_PROMPTS}
# The one-CLIP-token word each emotion token starts from (the model's captions say "a happy face emoji").
EMOTION_WORDS = {"happy": "happy", "sad": "sad", "angry": "angry", "in love": "love"}
OTHER_CLASS = "other"  # the judge's class for generations that are neither an emotion face nor the concept
FACE_CLASS = "face"  # the judge's gate class of every emotion face, which its emotion members split
EMOJI_EXTRA_HINT = 'pip install "kerasemote[emoji]"'
STAGES = ("data", "textual inversion", "lora", "samples", "interpolation", "judge", "report")
# The concept's adapters: attention and convs (attention alone barely moved the tiny model's shapes).
CONCEPT_LORA_TARGETS = ("attention", "convs")


def concept_slug(concept: str) -> str:
    """``"Broccoli"`` -> ``"broccoli"``, ``"hot pepper"`` -> ``"hot-pepper"``."""
    return "-".join(concept.strip().strip("<>").lower().split())


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs; the defaults take about 8 minutes on 2 CPU cores (machines vary).

    Args:
        model: preset name or model directory (a text-to-image model trained on emoji).
        sources: packaged emoji sets to prepare; unavailable ones are skipped and named.
        data: an already prepared directory to use instead of preparing one.
        size: image side in pixels (the model's and the judge's).
        concept: the emoji name (or character) of the concept learned from its images.
        max_concept_images: at most this many images of it (one per vendor).
        init_token: initializer word of the concept token (one CLIP token).
        emotion_init: initializer word of every emotion token; None: each starts from its
            own emotion's word (``EMOTION_WORDS``: happy, sad, angry, love).
        steps: textual-inversion steps of the emotion tokens.
        batch_size: their batch size (and the concept LoRA's).
        learning_rate: their learning rate; None takes the strategy's default (5e-3).
        concept_steps: textual-inversion steps of the concept token.
        concept_batch_size: its batch size. A few images give a noisy gradient at batch 4:
            with Adam the token then mostly wanders (its norm grew to about twice a word's)
            and draws a plain average of its images (broccoli: a smooth green blob); batch 8
            at 2e-3 kept broccoli's floret texture.
        concept_learning_rate: its learning rate.
        concept_lora_steps: steps of the concept's LoRA (on top of its token); 0: no LoRA.
        concept_lora_rank: its rank (alpha = rank).
        concept_lora_learning_rate: its learning rate.
        samples: seeds per prompt in the sample grid.
        sample_steps: sampler steps of every generated image.
        guidance: classifier-free guidance scale.
        mix_with: the emotion the concept is interpolated towards.
        mix_points: fractions in the interpolation sweep.
        classifier: a trained classifier folder to use instead of training one.
        classifier_epochs: epochs of each of the judge's ResNet-50s (trained from scratch).
        judge_members: ResNet-50s trained on the four emotions' faces (one seed each) whose
            averaged probabilities split the gate's ``face`` class; see :func:`train_judge`.
        judge_faces: emotion faces in the gate's ``face`` class (a seeded draw, even over the
            emotions); None: all of them.
        judge_other: images of other emoji (no face, not the concept) in the gate's
            ``other`` class; 0: no such class (every generation is then called one of the
            four emotions or the concept).
        num_images: generations scored per prompt.
        seed: seed of training and generation.
        progress: progress bars.
    """

    model: str = DEFAULT_MODEL
    sources: tuple[str, ...] = DEFAULT_SOURCES
    data: str | None = None
    size: int = 64
    concept: str = "broccoli"
    max_concept_images: int = 5
    init_token: str = "emoji"
    emotion_init: str | None = None
    steps: int = 150
    batch_size: int = 4
    learning_rate: float | None = None
    concept_steps: int = 300
    concept_batch_size: int = 8
    concept_learning_rate: float = 2e-3
    concept_lora_steps: int = 300
    concept_lora_rank: int = 8
    concept_lora_learning_rate: float = 2e-3
    samples: int = 4
    sample_steps: int = 25
    guidance: float = 7.0
    mix_with: str = "happy"
    mix_points: int = 5
    classifier: str | None = None
    classifier_epochs: int = 30
    judge_members: int = 2
    judge_faces: int | None = None
    judge_other: int = 60
    num_images: int = 32
    seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", tuple(self.sources))
        checks = [
            (self.data is not None or bool(self.sources), "give at least one source, or a prepared --data folder"),
            (1 <= self.max_concept_images <= 5, "max_concept_images must be in 1..5"),
            (self.steps >= 1 and self.batch_size >= 1, "steps and batch_size must be >= 1"),
            (self.concept_steps >= 1 and self.concept_batch_size >= 1,
             "concept_steps and concept_batch_size must be >= 1"),
            (self.concept_learning_rate > 0, "concept_learning_rate must be positive"),
            (self.concept_lora_steps >= 0, "concept_lora_steps must be >= 0"),
            (self.concept_lora_rank >= 1 and self.concept_lora_learning_rate > 0,
             "concept_lora_rank and concept_lora_learning_rate must be positive"),
            (self.samples >= 1 and self.sample_steps >= 1, "samples and sample_steps must be >= 1"),
            (self.num_images >= 1, "num_images must be >= 1"),
            (self.mix_points >= 2, "mix_points must be >= 2"),
            (self.classifier is not None or self.classifier_epochs >= 1, "classifier_epochs must be >= 1"),
            (self.judge_members >= 1, "judge_members must be >= 1"),
            (self.judge_faces is None or self.judge_faces >= 1, "judge_faces must be >= 1 (or None: all)"),
            (self.judge_other >= 0, "judge_other must be >= 0"),
            (concept_slug(self.concept) not in EMOTION_PROMPTS and concept_slug(self.concept) != FACE_CLASS,
             f"the concept may not be called {FACE_CLASS!r} or an emotion: the judge has those classes"),
            (not self.judge_other or concept_slug(self.concept) != OTHER_CLASS,
             f"the concept may not be called {OTHER_CLASS!r} while the judge has an {OTHER_CLASS!r} class"),
            (self.mix_with in EMOTION_PROMPTS, f"mix_with must be one of {list(EMOTION_PROMPTS)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"DemoConfig: {message}.")

    @property
    def concept_token(self) -> str:
        return f"<{concept_slug(self.concept)}>"


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


# ---------------------------------------------------------------------- the whole run


def run_demo(out_dir: str, config: DemoConfig = DemoConfig(), log: Callable[[str], None] = print) -> DemoResult:
    """Run every stage (see the module docstring) and write ``out_dir/index.html``.

    Args:
        out_dir: output folder (created; files from an earlier run are overwritten).
        config: what to run.
        log: where stage messages go.

    Returns:
        The DemoResult (also written as ``out_dir/demo.json``).

    Raises:
        ImportError: no packaged emoji set is installed (``pip install "kerasemote[emoji]"``).
        ValueError: the concept has no packaged image, or the data holds no emotion faces.
    """
    from kerasemote import data as emoji_data
    from kerasemote.model import load_model

    os.makedirs(out_dir, exist_ok=True)
    result = DemoResult(out_dir, config)
    clock = _Clock(result, log)

    with clock.stage("data"):
        data_dir = _data_stage(out_dir, config, result, log)
        concept_set = concept_images(data_dir, config.concept, config.size, config.max_concept_images)
        faces = emotion_images(data_dir, config.size)
        log(f"  concept {config.concept!r}: {len(concept_set)} images ({', '.join(concept_set.concepts)}); "
            f"emotion faces: {_counts(faces.concepts)}")
        result.data.update(concept_images=list(concept_set.files), emotion_faces=_counts(faces.concepts))
        emoji_data.contact_sheet(data_dir, os.path.join(out_dir, "data", "contact_sheet.png"), count=48)
        result.files["contact_sheet"] = "data/contact_sheet.png"

    with clock.stage("textual inversion"):
        log(f"  loading {config.model}")
        model = load_model(config.model)
        _learn_concepts(model, concept_set, faces, out_dir, config, result, log)

    models = {"": model}
    if config.concept_lora_steps:
        with clock.stage("lora"):
            models[LORA_KIND] = _learn_concept_lora(concept_set, out_dir, config, result, log)
    rows = prompt_rows(config.concept_token, lora=LORA_KIND in models)
    with clock.stage("samples"):
        path = sample_grid(models, rows, config, os.path.join(out_dir, "samples.png"))
        result.files["samples"] = os.path.relpath(path, out_dir)

    with clock.stage("interpolation"):
        sweep = _interpolate(model, config, os.path.join(out_dir, "interpolation"))
        result.files["interpolation_grid"] = os.path.relpath(sweep.grid, out_dir)
        if sweep.gif:
            result.files["interpolation_gif"] = os.path.relpath(sweep.gif, out_dir)

    with clock.stage("judge"):
        classifier = _judge(data_dir, concept_set, out_dir, config, result, log)
        result.scores = score_prompts(models, classifier, rows, config, out_dir, result.notes, log)
        _write_scores(result, out_dir)
        log(result.format_table())

    with clock.stage("report"):
        from kerasemote.demo_page import write_page

        result.files["index"] = "index.html"
        result.files["summary"] = "demo.json"
        write_page(result, os.path.join(out_dir, "index.html"))
    _write_json(os.path.join(out_dir, "demo.json"), result.to_dict())
    log(f"demo done in {result.total_seconds:.0f} s: open {os.path.join(out_dir, 'index.html')}")
    return result


class _Clock:
    """Times each stage into ``result.timings`` and says when it starts and ends."""

    def __init__(self, result: DemoResult, log: Callable[[str], None]):
        self.result, self.log = result, log

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        number = STAGES.index(name) + 1
        self.log(f"[{number}/{len(STAGES)}] {name}")
        start = time.perf_counter()
        yield
        self.result.timings[name] = round(time.perf_counter() - start, 1)
        self.log(f"[{number}/{len(STAGES)}] {name}: {self.result.timings[name]:.1f} s")


# ---------------------------------------------------------------------- 1. data


def open_sources(names: Sequence[str], size: int) -> tuple[dict[str, Iterator], dict[str, str]]:
    """Open each packaged source; one that is not installed is skipped with the reason.

    Returns:
        (name -> its records, name -> why it was skipped).

    Raises:
        ImportError: none of them is available.
    """
    from kerasemote import data as emoji_data

    opened, skipped = {}, {}
    for name in names:
        if name not in emoji_data.PACKAGED_SOURCES:
            raise ValueError(f"Source {name!r} is not a packaged emoji set; choose from "
                             f"{list(emoji_data.PACKAGED_SOURCES)} (or pass a prepared folder as --data).")
        try:
            opened[name] = emoji_data.source_records(name, render_size=size)
        except (ImportError, FileNotFoundError, OSError) as err:
            skipped[name] = str(err)
    if not opened:
        reasons = "; ".join(f"{n}: {why}" for n, why in skipped.items())
        raise ImportError(f"No packaged emoji set is available ({reasons}). Install them with "
                          f"{EMOJI_EXTRA_HINT} (Noto also needs apt-get install -y fonts-noto-color-emoji).")
    return opened, skipped


def _data_stage(out_dir: str, config: DemoConfig, result: DemoResult, log) -> str:
    import itertools

    from kerasemote import data as emoji_data

    if config.data:
        log(f"  using the prepared directory {config.data}")
        result.sources = ["(prepared) " + config.data]
        return config.data
    opened, result.skipped_sources = open_sources(config.sources, config.size)
    result.sources = list(opened)
    for name, why in result.skipped_sources.items():
        log(f"  skipped {name}: {why}")
    data_dir = os.path.join(out_dir, "data")
    log(f"  preparing {', '.join(opened)} at {config.size} px into {data_dir}")
    report = emoji_data.prepare(itertools.chain(*opened.values()), data_dir, size=config.size, overwrite=True,
                                progress=config.progress)
    result.data.update(written=report.written, skipped_rows=dict(report.skipped))
    log(f"  {report.written} images written, {report.total_skipped} rows skipped "
        f"({', '.join(f'{n} {r}' for r, n in sorted(report.skipped.items())) or 'none'})")
    return data_dir


def concept_images(data_dir: str, concept: str, size: int, limit: int = 5):
    """The images of one emoji (by name or character) in a prepared directory, one per vendor.

    Returns:
        An ImageSet whose concepts are the vendors and whose captions say "``{}`` emoji"
        in each vendor's style (``{}`` is filled with the token when training).

    Raises:
        ValueError: no image of that emoji.
    """
    from kerasemote.data import read_metadata

    rows = [r for r in read_metadata(data_dir) if _is_concept(r, concept)]
    rows = list({r["vendor"]: r for r in rows}.values())[:limit]
    if not rows:
        raise ValueError(f"{data_dir}: no image of the emoji {concept!r} (matched against each row's "
                         "'description' and 'emoji'); choose another --concept, e.g. broccoli.")
    images = _read_rows(data_dir, rows, size, concept_of=lambda r: r["vendor"])
    return images


def _is_concept(row: dict, concept: str) -> bool:
    """Whether a metadata row is the emoji named (or written as the character) ``concept``."""
    return concept.strip().lower() in (str(row.get("description", "")).lower(), row.get("emoji"))


def emotion_images(data_dir: str, size: int):
    """The labelled faces of the four emotions (every split); concepts are the labels.

    Raises:
        ValueError: the directory has no such faces.
    """
    from kerasemote.data import read_metadata

    rows = [r for r in read_metadata(data_dir) if r.get("label") in EMOTION_PROMPTS]
    if not rows:
        raise ValueError(f"{data_dir}: no faces labelled {list(EMOTION_PROMPTS)} in metadata.jsonl.")
    return _read_rows(data_dir, rows, size, concept_of=lambda r: r["label"])


def _read_rows(data_dir: str, rows: list[dict], size: int, concept_of):
    from kerasemote.training import ImageSet
    from kerasemote.training.data import read_square_image

    images = np.stack([read_square_image(os.path.join(data_dir, r["file"]), size, "white") for r in rows])
    return ImageSet(
        images=images,  # (N, size, size, 3) uint8
        captions=tuple(_token_captions(r) for r in rows),
        concepts=tuple(str(concept_of(r)) for r in rows),
        files=tuple(os.path.join(data_dir, r["file"]) for r in rows),
    )


def _token_captions(row: dict) -> tuple[str, ...]:
    """``"grinning face emoji in <s2> style"`` -> ``("{} emoji in <s2> style", "a {} emoji")``.

    The model was trained on its set's captions, so the token takes the emoji's name's
    place in them (the style token stays: the learned token need not carry the vendor).
    """
    caption, name = str(row.get("caption") or ""), str(row.get("description") or "")
    own = (caption.replace(name, "{}", 1),) if name and name in caption else ()
    return own + ("a {} emoji",)


def _counts(names: Sequence[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return counts


# ---------------------------------------------------------------------- 2. textual inversion


def _learn_concepts(model, concept_set, faces, out_dir: str, config: DemoConfig, result: DemoResult, log) -> None:
    from kerasemote import images as image_io
    from kerasemote.embeddings import BUNDLE_FILE, norm_summary
    from kerasemote.training import TextualInversion, TrainConfig

    emotion_settings = TrainConfig(steps=config.steps, batch_size=config.batch_size,
                                   learning_rate=config.learning_rate, seed=config.seed, progress=config.progress)
    concept_settings = replace(emotion_settings, steps=config.concept_steps, batch_size=config.concept_batch_size,
                               learning_rate=config.concept_learning_rate)
    token = config.concept_token
    runs = [
        ("concept", _as_token_set(concept_set, token), TextualInversion({token: token}, init=config.init_token),
         concept_settings),
        ("emotions", faces, TextualInversion({label: EMOTION_TOKENS[label] for label in faces.concept_names},
                                             init=config.emotion_init or EMOTION_WORDS), emotion_settings),
    ]
    for name, images, strategy, settings in runs:
        run_dir = os.path.join(out_dir, "ti", concept_slug(config.concept) if name == "concept" else name)
        log(f"  {' '.join(strategy.placeholders)}: {len(images)} images, {settings.steps} steps of "
            f"{settings.batch_size} -> {run_dir}")
        key = f"ti_{name}"
        _train_run(model, strategy, images, settings, run_dir, out_dir, result, key,
                   (f"{key}_embeddings", BUNDLE_FILE),
                   failed=f"Textual inversion of {strategy.placeholders}", advice="try a lower learning rate")
        log(f"    {norm_summary(model, strategy.placeholders, strategy.init)}")
    strip = image_io.save_grid(concept_set.images, os.path.join(out_dir, "ti", "concept_images.png"),
                               cols=len(concept_set), labels=list(concept_set.concepts))
    result.files["concept_images"] = os.path.relpath(strip, out_dir)


def _as_token_set(concept_set, token: str):
    """The concept's images, each captioned by the concept's token."""
    return replace(concept_set, concepts=(token,) * len(concept_set))


def _train_run(model, strategy, images, settings, run_dir: str, out_dir: str, result: DemoResult, key: str,
               output: tuple[str, str], failed: str, advice: str) -> None:
    """Train one run of the demo and record it: ``output`` (files key, file name in ``run_dir``),
    ``{key}_loss`` (its loss plot, when written) and ``result.data[{key}_final_loss]``.

    Raises:
        RuntimeError: the loss went NaN/inf (``failed`` names the run, ``advice`` what to try).
    """
    from kerasemote.training import train

    outcome = train(model, strategy, images, settings, run_dir)
    if outcome.status != "completed":
        raise RuntimeError(f"{failed} stopped: {outcome.status} loss at step {outcome.step + 1}; {advice}.")
    files_key, name = output
    result.files[files_key] = os.path.relpath(os.path.join(run_dir, name), out_dir)
    if os.path.exists(os.path.join(run_dir, "loss.png")):
        result.files[f"{key}_loss"] = os.path.relpath(os.path.join(run_dir, "loss.png"), out_dir)
    result.data[f"{key}_final_loss"] = float(np.mean(outcome.losses[-20:]))


# ---------------------------------------------------------------------- 3. LoRA

LORA_KIND = "concept+lora"  # the row kind drawn by the model copy that carries the concept's LoRA


def _learn_concept_lora(concept_set, out_dir: str, config: DemoConfig, result: DemoResult, log):
    """A second copy of the model with the concept's token, and LoRA adapters trained on its images.

    The first copy stays as it was, so every other row is drawn without the adapters.
    """
    from kerasemote.embeddings import load_embeddings
    from kerasemote.model import load_model
    from kerasemote.training import LoRA, TrainConfig
    from kerasemote.training.lora import LORA_FILE

    token = config.concept_token
    model = load_model(config.model)
    load_embeddings(model, os.path.join(out_dir, result.files["ti_concept_embeddings"]))
    strategy = LoRA(rank=config.concept_lora_rank, targets=CONCEPT_LORA_TARGETS, words={token: token},
                    seed=config.seed)
    run_dir = os.path.join(out_dir, "lora", concept_slug(config.concept))
    log(f"  {token} + LoRA (rank {config.concept_lora_rank}, {', '.join(CONCEPT_LORA_TARGETS)}): "
        f"{len(concept_set)} images, {config.concept_lora_steps} steps -> {run_dir}")
    settings = TrainConfig(steps=config.concept_lora_steps, batch_size=config.batch_size,
                           learning_rate=config.concept_lora_learning_rate, seed=config.seed, progress=config.progress)
    _train_run(model, strategy, _as_token_set(concept_set, token), settings, run_dir, out_dir, result,
               "lora_concept", ("lora_concept", LORA_FILE), failed=f"The LoRA of {token}",
               advice="try a lower concept_lora_learning_rate")
    return model


# ---------------------------------------------------------------------- 4. samples


def prompt_rows(concept_token: str, lora: bool = False) -> list[tuple[str, str, str]]:
    """(prompt, kind, intended class) of every prompt the demo draws and scores.

    With ``lora`` the concept's prompt comes twice: kind ``concept`` (the token alone) and
    ``concept+lora`` (drawn by the model that also carries the concept's adapters).
    """
    rows = [(prompt, "words", label) for label, prompt in EMOTION_PROMPTS.items()]
    rows += [(f"a {token} emoji", "token", label) for label, token in EMOTION_TOKENS.items()]
    rows.append((f"a {concept_token} emoji", "concept", concept_slug(concept_token)))
    if lora:
        rows.append((f"a {concept_token} emoji", LORA_KIND, concept_slug(concept_token)))
    return rows


def row_label(prompt: str, kind: str) -> str:
    """How a row is named in grids and tables: the prompt, ``+ LoRA`` for the adapted model's row."""
    return f"{prompt} + LoRA" if kind == LORA_KIND else prompt


def _as_models(models) -> Mapping[str, object]:
    """One model, or kind -> model with ``""`` the model of every kind without its own entry."""
    return models if isinstance(models, Mapping) else {"": models}


def _model_key(models: Mapping[str, object], kind: str) -> str:
    """The key of the model that draws rows of ``kind``: the kind's own entry, else ``""``."""
    return kind if kind in models else ""


def _generate_kwargs(config: DemoConfig) -> dict:
    return dict(steps=config.sample_steps, guidance=config.guidance)


def sample_grid(models, rows: Sequence[tuple[str, str, str]], config: DemoConfig, path: str) -> str:
    """One row per prompt, one column per seed; every column starts from the same noise.

    ``models``: one model, or kind -> model (``""``: the model of every other kind).
    """
    from tqdm.auto import tqdm

    from kerasemote import images as image_io
    from kerasemote.pipeline import initial_noise

    models = _as_models(models)
    plain = models[""]
    factor, size = plain.config.vae_downsample, plain.config.image_size
    groups: dict[str, list[int]] = {}  # model key -> the rows it draws, so each model draws its rows in one batch
    for r, (_, kind, _) in enumerate(rows):
        groups.setdefault(_model_key(models, kind), []).append(r)
    columns = []
    for s in tqdm(range(config.samples), desc="samples", disable=not config.progress, leave=False):
        noise = initial_noise((1, size // factor, size // factor, plain.config.latent_channels), config.seed + s)
        column = np.zeros((len(rows), size, size, 3), np.uint8)
        for key, members in groups.items():
            column[members] = models[key].generate([rows[r][0] for r in members], seed=config.seed + s,
                                                   init_latents=np.repeat(noise, len(members), axis=0),
                                                   progress=False, **_generate_kwargs(config))
        columns.append(column)
    images = np.stack(columns, axis=1).reshape(-1, size, size, 3)  # (prompts * seeds, S, S, 3), row-major
    labels = [row_label(prompt, kind) if s == 0 else "" for prompt, kind, _ in rows for s in range(config.samples)]
    return image_io.save_grid(images, path, cols=config.samples, labels=labels)


# ---------------------------------------------------------------------- 5. interpolation


def _interpolate(model, config: DemoConfig, out_dir: str):
    from kerasemote import interpolate

    alphas = interpolate.fractions(config.mix_points)
    images = interpolate.token_sweep(model, config.concept_token, EMOTION_TOKENS[config.mix_with], "a {} emoji",
                                     alphas, seed=config.seed, progress=False, **_generate_kwargs(config))
    return interpolate.save_sweep(images, alphas, out_dir)


# ---------------------------------------------------------------------- 6. judge and success rates


def judge_emotion_set(data_dir: str, size: int, splits: Sequence[str]):
    """The four-emotion faces of ``splits``: what each emotion judge learns (classes in sorted order)."""
    from kerasemote.data import read_metadata

    rows = [r for r in read_metadata(data_dir) if r.get("label") in EMOTION_PROMPTS and r.get("split") in splits]
    classes = sorted(EMOTION_PROMPTS)
    return _labelled([os.path.join(data_dir, r["file"]) for r in rows], [classes.index(r["label"]) for r in rows],
                     classes, size)


def judge_gate_set(data_dir: str, concept_set, concept: str, size: int, splits: Sequence[str],
                   faces: int | None = None, other: int = 0, seed: int = 0):
    """What the gate learns: ``face``, the concept, and (with ``other`` > 0) ``other``.

    ``face`` holds the four-emotion faces of ``splits`` (``faces``: a seeded draw of that many,
    round robin over the emotions so that the rare ones are all in); the concept
    class (the concept's slug, ``broccoli``) all of its images; ``other`` that many images of
    the other emoji of ``splits`` (no face, not the concept), so that a generation that is
    neither has a class of its own instead of landing on the nearer of the two.
    """
    from kerasemote.data import read_metadata

    metadata = read_metadata(data_dir)
    rng = np.random.default_rng(seed)
    face_rows = [r for r in metadata if r.get("label") in EMOTION_PROMPTS and r.get("split") in splits]
    # As even a draw over the four emotions as their counts allow: a plain draw of 60 could hold
    # few of the 15 angry faces, and the gate then calls red angry faces "other".
    groups = [rng.permutation([i for i, r in enumerate(face_rows) if r["label"] == label])
              for label in sorted(EMOTION_PROMPTS)]
    # faces=None keeps them all.
    picked = sorted([g[k] for k in range(max(map(len, groups))) for g in groups if k < len(g)][:faces])
    classes = [FACE_CLASS, concept_slug(concept)]
    files = [os.path.join(data_dir, face_rows[i]["file"]) for i in picked] + list(concept_set.files)
    labels = [0] * len(picked) + [1] * len(concept_set)
    pool = other_emoji_rows(metadata, concept, concept_set.files, splits) if other else []
    if pool:  # no class without an image
        drawn = rng.choice(len(pool), size=min(other, len(pool)), replace=False)
        classes.append(OTHER_CLASS)
        files += [os.path.join(data_dir, pool[i]["file"]) for i in sorted(drawn)]
        labels += [2] * len(drawn)
    return _labelled(files, labels, classes, size)


def _labelled(files: Sequence[str], labels: Sequence[int], classes: list[str], size: int):
    from kerasemote.classification import LabelledImages
    from kerasemote.classification.images import load_image

    if not files:
        raise ValueError(f"No images for the judge's classes {classes}.")
    images = np.stack([load_image(f, size) for f in files])  # (N, S, S, 3)
    return LabelledImages(images, np.asarray(labels, np.int64), classes, list(files))


def other_emoji_rows(metadata: Sequence[dict], concept: str, concept_files: Sequence[str],
                     splits: Sequence[str]) -> list[dict]:
    """Rows of ``splits`` that are neither a face (no label, no "face" in the name) nor the concept."""
    taken = {os.path.basename(f) for f in concept_files}
    return [r for r in metadata
            if r.get("split") in splits and r.get("label") is None
            and "face" not in str(r.get("description", "")).lower()
            and not _is_concept(r, concept) and os.path.basename(r["file"]) not in taken]


def held_out_faces(data_dir: str, class_names: Sequence[str], size: int):
    """Test-split faces of the four emotions in the judge's class order, or None if there are none."""
    from kerasemote.classification import LabelledImages, concept_label
    from kerasemote.classification.images import load_image
    from kerasemote.data import read_metadata

    rows = [r for r in read_metadata(data_dir) if r.get("label") in EMOTION_PROMPTS and r.get("split") == "test"]
    if not rows:
        return None
    labels = [list(class_names).index(concept_label(r["label"], class_names)) for r in rows]
    files = [os.path.join(data_dir, r["file"]) for r in rows]
    return LabelledImages(np.stack([load_image(f, size) for f in files]), np.asarray(labels, np.int64),
                          list(class_names), files)


def _judge(data_dir: str, concept_set, out_dir: str, config: DemoConfig, result: DemoResult, log):
    from kerasemote import classification as clf

    if config.classifier:
        log(f"  loading the judge {config.classifier}")
        classifier = clf.load_classifier(config.classifier)
        result.judge.update(source=config.classifier)
    else:
        judge_dir = os.path.join(out_dir, "classifier")
        classifier = train_judge(data_dir, concept_set, judge_dir, config, result.judge, log)
        result.files["classifier_history"] = os.path.relpath(os.path.join(judge_dir, "history.png"), out_dir)
    result.judge["class_names"] = list(classifier.class_names)
    _evaluate_judge(classifier, data_dir, out_dir, result, log)
    return classifier


def train_judge(data_dir: str, concept_set, judge_dir: str, config: DemoConfig, facts: dict | None = None,
                log: Callable[[str], None] = print):
    """Train the demo's judge from scratch and save it to ``judge_dir`` (``--classifier`` reloads it).

    The judge is a ResNet-50 gate (face / the concept / other) whose ``face`` class is split by
    ``config.judge_members`` ResNet-50s trained on the four emotions' faces alone, each from its
    own seed, their probabilities averaged: P(angry) = P(face) * mean P(angry | face). One
    network for all six classes and one seed was unsteady: five trainings scored the same
    plainly angry faces 28 to 69 % "angry"; see the README.

    Args:
        facts: filled with what was trained (runs, images, epochs, seconds).

    Returns:
        The judge (a GatedClassifier) with classes (four emotions, the concept, ``other``).
    """
    from kerasemote import classification as clf
    from kerasemote.classification.plots import plot_histories

    facts = {} if facts is None else facts
    splits = ("train", "validation")
    emotions = judge_emotion_set(data_dir, config.size, splits)
    gate_set = judge_gate_set(data_dir, concept_set, config.concept, config.size, splits, faces=config.judge_faces,
                              other=config.judge_other, seed=config.seed)
    runs = [("gate", gate_set, config.seed)]
    runs += [(f"emotions {i + 1}", emotions, config.seed + i) for i in range(config.judge_members)]
    trained, histories, facts["runs"] = {}, {}, {}
    for r, (name, data, seed) in enumerate(runs):
        counts = _counts([data.class_names[i] for i in data.labels])
        log(f"  judge {r + 1}/{len(runs)}, {name}: ResNet-50 from scratch, {len(data.labels)} images {counts}, "
            f"{config.classifier_epochs} epochs, seed {seed}")
        settings = clf.ClassifierTrainConfig(image_size=config.size, weights="none", epochs=config.classifier_epochs,
                                             patience=config.classifier_epochs, val_fraction=0.0, seed=seed)
        started = time.perf_counter()
        bar = _epoch_bar(f"judge {r + 1}/{len(runs)}", config.classifier_epochs, config.progress)
        trained[name], histories[name], _, _ = clf.fit_classifier(data, settings, verbose=0, callbacks=[bar])
        bar.close()
        facts["runs"][name] = {"images": counts, "seed": seed, "seconds": round(time.perf_counter() - started, 1),
                               "final_train_accuracy": histories[name].get("accuracy", [None])[-1]}
        log(f"    {facts['runs'][name]['seconds']:.0f} s, training accuracy "
            f"{facts['runs'][name]['final_train_accuracy']:.0%}")
    members = [trained[name] for name, _, _ in runs[1:]]
    judge = clf.GatedClassifier(trained["gate"], clf.EnsembleClassifier(members), FACE_CLASS)
    clf.save_classifier(judge, judge_dir, {"histories": histories})
    plot_histories(histories, os.path.join(judge_dir, "history.png"))
    facts.update(source="trained", epochs=config.classifier_epochs, members=config.judge_members)
    return judge


def _epoch_bar(desc: str, epochs: int, enabled: bool):
    """A Keras callback that moves a tqdm bar one step per epoch; ``close()`` ends the bar."""
    import keras
    from tqdm.auto import tqdm

    class EpochBar(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.bar = tqdm(total=epochs, desc=desc, unit="epoch", disable=not enabled, leave=False)

        def on_epoch_end(self, epoch, logs=None):
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{(logs or {}).get('loss', float('nan')):.3f}")

        def close(self):
            self.bar.close()

    return EpochBar()


def _evaluate_judge(classifier, data_dir: str, out_dir: str, result: DemoResult, log) -> None:
    from kerasemote import classification as clf

    try:
        test = held_out_faces(data_dir, classifier.class_names, classifier.image_size)
    except ValueError as err:  # a given judge without the four emotions
        result.notes.append(f"judge not evaluated on held-out faces: {err}")
        return
    if test is None:
        result.notes.append("no test-split faces to evaluate the judge on")
        return
    folder = os.path.join(out_dir, "classifier", "evaluation")
    report = clf.evaluate_and_write(classifier, test, folder)
    # The split keeps every vendor of an emoji together, so few faces (not every class) are held out.
    result.judge.update(test_images=len(test.labels), test_accuracy=report.accuracy,
                        test_classes=_counts([test.class_names[i] for i in test.labels]))
    result.files["confusion_matrix"] = os.path.relpath(os.path.join(folder, "confusion_matrix.png"), out_dir)
    result.files["misclassified"] = os.path.relpath(os.path.join(folder, "misclassified.png"), out_dir)
    log(f"  judge accuracy on {len(test.labels)} held-out real faces {result.judge['test_classes']}: "
        f"{report.accuracy:.1%}")


def score_prompts(models, classifier, rows: Sequence[tuple[str, str, str]], config: DemoConfig, out_dir: str,
                  notes: list[str], log=print) -> list[PromptScore]:
    """Generate ``config.num_images`` per prompt, classify them and score each prompt.

    ``models``: one model, or kind -> model as in ``sample_grid``. A prompt whose intended
    class the judge lacks is skipped and noted.
    """
    from tqdm.auto import tqdm

    from kerasemote import classification as clf
    from kerasemote import images as image_io

    models = _as_models(models)
    scores = []
    emotion_classes = [_class_or_none(label, classifier.class_names) for label in EMOTION_PROMPTS]
    emotion_index = [classifier.class_names.index(c) for c in emotion_classes if c is not None]
    for r, (prompt, kind, intended) in enumerate(tqdm(rows, desc="judging", disable=not config.progress)):
        label = _class_or_none(intended, classifier.class_names)
        if label is None:
            notes.append(f"{prompt!r} not scored: the judge has no class {intended!r} "
                         f"(its classes: {classifier.class_names})")
            log(f"  {notes[-1]}")
            continue
        images = _generate_many(models[_model_key(models, kind)], prompt, config, seed=config.seed + 1000 * (r + 1))
        report = clf.score_images(classifier, images, label)
        folder = os.path.join(out_dir, "scores", f"{r:02d}_{_file_slug(row_label(prompt, kind))}")
        image_io.save_images(images, folder)
        image_io.save_grid(images, os.path.join(folder, "grid.png"), cols=min(8, len(images)))
        clf.write_score(report, folder)
        scores.append(_prompt_score(prompt, kind, label, report, emotion_index, os.path.relpath(folder, out_dir)))
    return scores


def _class_or_none(concept: str, class_names: Sequence[str]) -> str | None:
    from kerasemote.classification import concept_label

    try:
        return concept_label(concept, class_names)
    except ValueError:
        return None


def _generate_many(model, prompt: str, config: DemoConfig, seed: int) -> np.ndarray:
    batches, batch = [], min(config.num_images, 32)
    for b, start in enumerate(range(0, config.num_images, batch)):
        n = min(batch, config.num_images - start)
        batches.append(model.generate(prompt, num_images=n, seed=seed + b, progress=False,
                                      **_generate_kwargs(config)))
    return np.concatenate(batches, axis=0)  # (N, S, S, 3) uint8


def _prompt_score(prompt, kind, label, report, emotion_index: list[int], folder: str) -> PromptScore:
    names = report.class_names
    probs = report.probabilities  # (N, C)
    top = probs.argmax(axis=-1)
    wanted = names.index(label)
    emotion_rate = None
    if wanted in emotion_index:
        among = np.asarray(emotion_index)[probs[:, emotion_index].argmax(axis=-1)]
        emotion_rate = float(np.mean(among == wanted))
    predicted = {name: int(np.sum(top == i)) for i, name in enumerate(names) if np.any(top == i)}
    return PromptScore(prompt, kind, label, len(probs), float(np.mean(top == wanted)), emotion_rate,
                       float(probs[:, wanted].mean()), predicted, folder)


def _file_slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.replace("<", "").replace(">", "")).strip("-")[:48]


def format_scores(scores: Sequence[PromptScore]) -> str:
    """Plain-text success-rate table: one row per prompt."""
    names = [row_label(s.prompt, s.kind) for s in scores]
    width = max([len("prompt")] + [len(name) for name in names])
    lines = [f"{'prompt':<{width}}  {'intended':<9} {'n':>4}  success  among emotions  mean p  predicted"]
    for name, s in zip(names, scores):
        among = f"{s.emotion_rate:14.1%}" if s.emotion_rate is not None else f"{'-':>14}"
        predicted = ", ".join(f"{k} {v}" for k, v in sorted(s.predicted.items(), key=lambda kv: -kv[1]))
        lines.append(f"{name:<{width}}  {s.intended:<9} {s.num_images:4d}  {s.success_rate:7.1%}  "
                     f"{among}  {s.mean_confidence:6.3f}  {predicted}")
    lines.append("success: top class among every judge class; among emotions: top class among the four "
                 "emotions (chance 25 %)")
    return "\n".join(lines)


def scores_csv(scores: Sequence[PromptScore]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["prompt", "kind", "intended", "num_images", "success_rate", "emotion_rate",
                     "mean_confidence", "predicted", "folder"])
    for s in scores:
        writer.writerow([s.prompt, s.kind, s.intended, s.num_images, f"{s.success_rate:.4f}",
                         "" if s.emotion_rate is None else f"{s.emotion_rate:.4f}", f"{s.mean_confidence:.4f}",
                         json.dumps(s.predicted), s.folder])
    return buffer.getvalue()


def _write_scores(result: DemoResult, out_dir: str) -> None:
    _write_json(os.path.join(out_dir, "success_rates.json"),
                {"scores": [asdict(s) for s in result.scores], "judge": result.judge,
                 "chance": {"among_emotions": 0.25, "success": 1 / max(1, len(result.judge["class_names"]))}})
    with open(os.path.join(out_dir, "success_rates.csv"), "w", encoding="utf-8", newline="") as f:
        f.write(scores_csv(result.scores))
    result.files.update(success_json="success_rates.json", success_csv="success_rates.csv")


def _write_json(path: str, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, default=str)
        f.write("\n")
