"""``run_demo``: the whole workflow on the embedded tiny model, offline, in minutes.

Stages (each timed; ``OUT`` is the output folder):

1. data: the packaged emoji sets at 64 px -> ``OUT/data`` (``kerasemote.data.prepare``), and the drawn
   broccoli-stickers and emotion-faces sets -> ``OUT/stickers``, ``OUT/faces``.
2. textual inversion: ``<broccoli>`` from the concept's packaged images (one per vendor,
   at most five), ``<happy> <sad> <angry> <in-love>`` from the labelled faces, and the sticker tokens
   (``<happy-broccoli>``... and the faceless ``<broccoli-sticker>``) from drawn stickers ->
   ``OUT/ti/<run>/embeddings.npz`` (+ one ``.npy`` per token, ``loss.png``).
3. LoRA: adapters on the UNet learned from the same concept images, on top of the
   ``<broccoli>`` token, in a second copy of the model -> ``OUT/lora/<concept>/lora.npz``; and adapters on
   top of the sticker tokens in a third copy -> ``OUT/lora/stickers/lora.npz`` (0 steps skips either).
   The token alone can only steer what the model already draws; the adapters change how it draws.
4. generations: ``num_images`` of every scored row, drawn in full batches -> ``OUT/scores/NN_<row>/``
   (PNGs, ``grid.png``), and the first few of each row in one grid (the same noise down each column) ->
   ``OUT/samples.png``.
5. interpolation: ``<broccoli>`` -> ``<happy>`` in token space -> ``OUT/interpolation/``.
6. judges: a content judge (ResNet-50s trained from scratch: a gate, face / the concept / other
   emoji, and ``judge_members`` networks on the four emotions' real and drawn faces, averaged), a sticker
   judge and a vendor judge, each checked on held-out images; they score the generations of every row (the
   emotion and concept rows, ``happy broccoli``..., ``combined happy broccoli``, ``style <s0>``...) ->
   ``OUT/classifier/``, ``OUT/sticker_classifier/``, ``OUT/style_classifier/``,
   ``OUT/success_rates.json`` / ``.csv``.
7. report: ``OUT/index.html`` with every figure, the table and the timings.

Example:
    >>> result = run_demo("demo")                     # kerasemote-tiny; minutes on a CPU
    >>> print(result.format_table())
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import replace
from typing import Callable, Iterator

import numpy as np

from kerasemote.data.emotions import EMOTION_TOKENS, EMOTION_WORDS
from kerasemote.demo.judge import judge_for_run
from kerasemote.demo.page import write_page
from kerasemote.demo.result import DemoResult, write_json, write_scores
from kerasemote.demo.scoring import draw_rows, sample_grid, score_prompts
from kerasemote.demo.sets import concept_images, count_names, emotion_images, open_sources
from kerasemote.demo.spec import (BODY_TOKEN, COMBINED_KIND, CONCEPT_LORA_TARGETS, LORA_KIND, STAGES,
                                  STICKER_KIND, DemoConfig, concept_slug, generate_kwargs, prompt_rows)
from kerasemote.demo.stickers import (NEUTRAL, STICKER_JUDGE, STICKER_TOKENS, add_combined_tokens,
                                      sticker_judge_for_run, sticker_rows, sticker_set)
from kerasemote.demo.styles import style_judge_for_run, style_rows


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
    from kerasemote.presets import load_model

    os.makedirs(out_dir, exist_ok=True)
    result = DemoResult(out_dir, config)
    clock = _Clock(result, log)

    with clock.stage("data"):
        data_dir = _data_stage(out_dir, config, result, log)
        drawn_dirs = _drawn_sets(out_dir, config, result, log)
        concept_set = concept_images(data_dir, config.concept, config.size, config.max_concept_images)
        faces = emotion_images(data_dir, config.size)
        log(f"  concept {config.concept!r}: {len(concept_set)} images ({', '.join(concept_set.concepts)}); "
            f"emotion faces: {count_names(faces.concepts)}")
        result.data.update(concept_images=list(concept_set.files), emotion_faces=count_names(faces.concepts))
        emoji_data.contact_sheet(data_dir, os.path.join(out_dir, "data", "contact_sheet.png"), count=48)
        result.files["contact_sheet"] = "data/contact_sheet.png"

    with clock.stage("textual inversion"):
        log(f"  loading {config.model}")
        model = load_model(config.model)
        stickers = sticker_set(drawn_dirs["stickers"], config.sticker_per_emotion, config.size)
        _learn_concepts(model, concept_set, faces, stickers, out_dir, config, result, log)

    models = {"": model}
    with clock.stage("lora"):
        if config.concept_lora_steps:
            models[LORA_KIND] = _learn_concept_lora(concept_set, out_dir, config, result, log)
        if config.sticker_lora_steps:
            models[STICKER_KIND] = models[COMBINED_KIND] = _learn_sticker_lora(stickers, out_dir, config, result,
                                                                                log)
    add_combined_tokens(models.get(COMBINED_KIND, model), config.combined_alphas)
    rows = (prompt_rows(config.concept_token, lora=LORA_KIND in models) + sticker_rows(config.combined_alphas)
            + style_rows())
    with clock.stage("generations"):
        drawn = draw_rows(models, rows, config, out_dir)
        path = sample_grid(drawn, rows, config, os.path.join(out_dir, "samples.png"))
        result.files["samples"] = os.path.relpath(path, out_dir)

    with clock.stage("interpolation"):
        sweep = _interpolate(model, config, os.path.join(out_dir, "interpolation"))
        result.files["interpolation_grid"] = os.path.relpath(sweep.grid, out_dir)
        if sweep.gif:
            result.files["interpolation_gif"] = os.path.relpath(sweep.gif, out_dir)

    with clock.stage("judge"):
        from kerasemote.classification import CompiledNetworks

        networks = CompiledNetworks()  # one kept network per judge input size: each graph is traced once
        judges = {"content": judge_for_run(data_dir, concept_set, out_dir, config, result, log,
                                           faces_dir=drawn_dirs["faces"], networks=networks),
                  STICKER_JUDGE: sticker_judge_for_run(drawn_dirs["stickers"], data_dir, out_dir, config, result,
                                                       log, networks)}
        style_judge = style_judge_for_run(data_dir, out_dir, config, result, log, networks)
        if style_judge is not None:
            judges["style"] = style_judge
        result.scores = score_prompts(drawn, judges, rows, config, out_dir, result.notes, log)
        write_scores(result, out_dir)
        log(result.format_table())

    with clock.stage("report"):
        result.files["index"] = "index.html"
        result.files["summary"] = "demo.json"
        write_page(result, os.path.join(out_dir, "index.html"))
    write_json(os.path.join(out_dir, "demo.json"), result.to_dict())
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


def _drawn_sets(out_dir: str, config: DemoConfig, result: DemoResult, log) -> dict[str, str]:
    """The broccoli-stickers and emotion-faces sets, drawn at ``config.size`` into ``out_dir/stickers`` and
    ``out_dir/faces`` (seed ``config.seed``): the sticker job's images and the judge's sticker and drawn-face
    classes, each with a held-out test split."""
    from kerasemote import data as emoji_data

    folders = {}
    for key, source in (("stickers", "broccoli-stickers"), ("faces", "emotion-faces")):
        folder = os.path.join(out_dir, key)
        records = emoji_data.source_records(source, render_size=config.size, seed=config.seed,
                                            per_class=config.drawn_per_class)
        report = emoji_data.prepare(records, folder, size=config.size, overwrite=True, progress=config.progress)
        log(f"  {source}: {report.written} images drawn into {folder}")
        result.data[f"{key}_written"] = report.written
        folders[key] = folder
    return folders


# ---------------------------------------------------------------------- 2. textual inversion


def _learn_concepts(model, concept_set, faces, stickers, out_dir: str, config: DemoConfig, result: DemoResult,
                    log) -> None:
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
        ("stickers", stickers, TextualInversion(_sticker_words(), init="broccoli"),
         replace(concept_settings, steps=config.sticker_steps)),
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


def _sticker_words() -> dict[str, str]:
    """Sticker label -> its token: the four emotions' and the faceless body's."""
    return {**STICKER_TOKENS, NEUTRAL: BODY_TOKEN}


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

    outcome = train(model, strategy, images, settings, run_dir, overwrite=True)  # a rerun replaces its runs
    if outcome.status != "completed":
        raise RuntimeError(f"{failed} stopped: {outcome.status} loss at step {outcome.step + 1}; {advice}.")
    files_key, name = output
    result.files[files_key] = os.path.relpath(os.path.join(run_dir, name), out_dir)
    if os.path.exists(os.path.join(run_dir, "loss.png")):
        result.files[f"{key}_loss"] = os.path.relpath(os.path.join(run_dir, "loss.png"), out_dir)
    result.data[f"{key}_final_loss"] = float(np.mean(outcome.losses[-20:]))


# ---------------------------------------------------------------------- 3. LoRA


def _learn_concept_lora(concept_set, out_dir: str, config: DemoConfig, result: DemoResult, log):
    """A second copy of the model with the concept's token, and LoRA adapters trained on its images.

    The first copy stays as it was, so every other row is drawn without the adapters.
    """
    from kerasemote.embeddings import load_embeddings
    from kerasemote.presets import load_model
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


def _learn_sticker_lora(stickers, out_dir: str, config: DemoConfig, result: DemoResult, log):
    """A model copy with the sticker tokens, the emotion tokens and LoRA adapters trained on the stickers.

    It draws the sticker rows and the combined row (the body token beside the ``<happy>`` face token,
    which the adapters never saw on a sticker).
    """
    from kerasemote.embeddings import load_embeddings
    from kerasemote.presets import load_model
    from kerasemote.training import LoRA, TrainConfig
    from kerasemote.training.lora import LORA_FILE

    model = load_model(config.model)
    for key in ("ti_stickers_embeddings", "ti_emotions_embeddings"):
        load_embeddings(model, os.path.join(out_dir, result.files[key]))
    strategy = LoRA(rank=config.sticker_lora_rank, targets=CONCEPT_LORA_TARGETS, words=_sticker_words(),
                    seed=config.seed)
    run_dir = os.path.join(out_dir, "lora", "stickers")
    log(f"  sticker tokens + LoRA (rank {config.sticker_lora_rank}): {len(stickers)} stickers, "
        f"{config.sticker_lora_steps} steps of {config.sticker_lora_batch_size} -> {run_dir}")
    settings = TrainConfig(steps=config.sticker_lora_steps, batch_size=config.sticker_lora_batch_size,
                           learning_rate=config.sticker_lora_learning_rate, seed=config.seed,
                           progress=config.progress)
    _train_run(model, strategy, stickers, settings, run_dir, out_dir, result, "lora_stickers",
               ("lora_stickers", LORA_FILE), failed="The stickers' LoRA",
               advice="try a lower sticker_lora_learning_rate")
    return model


# ---------------------------------------------------------------------- 5. interpolation (4. generations: scoring.py)


def _interpolate(model, config: DemoConfig, out_dir: str):
    from kerasemote import interpolate

    alphas = interpolate.fractions(config.mix_points)
    images = interpolate.token_sweep(model, config.concept_token, EMOTION_TOKENS[config.mix_with], "a {} emoji",
                                     alphas, seed=config.seed, progress=False, **generate_kwargs(config))
    return interpolate.save_sweep(images, alphas, out_dir)
