"""What the demo runs: its settings (:class:`DemoConfig`), stage names, judge classes and prompt rows.

Every other module of ``kerasemote.demo`` reads these; this one imports none of them. Each
DemoConfig field carries its command-line help in ``metadata["help"]``, so ``kerasemote demo``
builds one option per field (``metadata["option"] = False`` keeps a field off the command line).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kerasemote.data.emotions import EMOTION_PROMPTS, EMOTION_TOKENS

DEFAULT_MODEL = "kerasemote-tiny"
# Noto from the sample shipped in dataset/noto-emoji: the same images with or without the system font.
DEFAULT_SOURCES = ("twemoji", "openmoji", "noto-sample")
OTHER_CLASS = "other"  # the judge's class for generations that are neither an emotion face nor the concept
FACE_CLASS = "face"  # the judge's gate class of every emotion face, which its emotion members split
STAGES = ("data", "textual inversion", "lora", "generations", "interpolation", "judge", "report")
# The concept's adapters: attention and convs (attention alone barely moved the tiny model's shapes).
CONCEPT_LORA_TARGETS = ("attention", "convs")
LORA_KIND = "concept+lora"  # the row kind drawn by the model copy that carries the concept's LoRA
STICKER_KIND = "sticker"  # rows drawn by the model copy that carries the sticker tokens' LoRA
COMBINED_KIND = "combined"  # the body token and an emotion token in one prompt, drawn by that copy too
STYLE_KIND = "style"  # "X emoji in <sN> style" rows, judged by the vendor judge
STICKER_SUFFIX = " broccoli"  # judge class of an emotion's sticker: "happy broccoli"...; "neutral broccoli"
BODY_TOKEN = "<broccoli-sticker>"  # the sticker without a face, learned beside the four sticker tokens


@dataclass(frozen=True)
class Row:
    """One scored row of the demo.

    Attributes:
        name: how tables call it (``"a <happy> emoji"``, ``"happy broccoli"``, ``"style <s0>"``).
        prompts: what is drawn; the row's images are split evenly over them.
        kind: which model draws it (``words``, ``token``, ``concept``, ``concept+lora``,
            ``sticker``, ``combined``, ``style``).
        intended: the judge class it asks for.
        judge: ``"content"`` (emotions, stickers, the concept) or ``"style"`` (the vendor judge).
    """

    name: str
    prompts: tuple[str, ...]
    kind: str
    intended: str
    judge: str = "content"


def concept_slug(concept: str) -> str:
    """``"Broccoli"`` -> ``"broccoli"``, ``"hot pepper"`` -> ``"hot-pepper"``."""
    return "-".join(concept.strip().strip("<>").lower().split())


def _opt(default: Any, help: str, **more: Any) -> Any:
    """A field whose ``metadata`` holds its command-line help (and ``metavar`` / ``choices`` / ``option``)."""
    return field(default=default, metadata={"help": help, **more})


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs; the judge's training takes most of the time (``classifier`` reuses one).

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
        drawn_per_class: drawn broccoli stickers and emotion faces of each class; the judge
            trains on their train split and is checked on their test split.
        sticker_per_emotion: training stickers of each emotion (and faceless ones) for the
            sticker tokens and their LoRA.
        sticker_steps: textual-inversion steps of the sticker tokens.
        sticker_lora_steps, sticker_lora_batch_size, sticker_lora_rank, sticker_lora_learning_rate:
            the sticker LoRA; 0 steps: the sticker rows are drawn by the tokens alone.
        samples: generations of each row shown in the sample grid (its first ones).
        sample_steps: sampler steps of every generated image.
        guidance: classifier-free guidance scale.
        sticker_guidance: the guidance scale of the sticker and combined rows.
        mix_with: the emotion the concept is interpolated towards.
        mix_points: fractions in the interpolation sweep.
        combined_alphas: shares of the ``<happy>`` face token mixed (slerp) into the faceless
            ``<broccoli-sticker>`` token; each is one more scored row, drawn by the stickers' model.
        classifier: a trained classifier folder to use instead of training one.
        classifier_epochs: epochs of each of the judge's ResNet-50s (trained from scratch).
        judge_size: the content and sticker judges' input side (generations are resized to it).
        judge_stickers: stickers of each class in the sticker judge.
        judge_drawn_faces: drawn faces of each emotion beside the real ones in the judge.
        sticker_judge_epochs: epochs of the sticker judge.
        sticker_judge_members: ResNet-50s in the sticker judge (one seed each, averaged): networks
            trained alike and right on 99 % of the held-out stickers each put 0-84 % of one saved
            row of generations in its intended class, by seed (docs/demo.md).
        style_judge_epochs: epochs of the vendor judge.
        style_judge_size: the vendor judge's input side.
        judge_members: ResNet-50s trained on the four emotions' faces (one seed each) whose
            averaged probabilities split the gate's ``face`` class; see
            :func:`kerasemote.demo.judge.train_judge`.
        judge_faces: emotion faces in the gate's ``face`` class (a seeded draw, even over the
            emotions); None: all of them.
        judge_other: images of other emoji (no face, person or hand; not the concept) in the gate's
            ``other`` class; 0: no such class (every generation is then called one of the
            four emotions or the concept).
        num_images: generations scored per prompt.
        seed: seed of training and generation.
        progress: progress bars.
    """

    model: str = _opt(DEFAULT_MODEL, "preset name or model directory")
    sources: tuple[str, ...] = _opt(DEFAULT_SOURCES,
                                    "packaged emoji sets, comma-separated; missing ones are skipped; noto "
                                    "needs apt-get install -y fonts-noto-color-emoji")
    data: str | None = _opt(None, "a prepared directory (kerasemote data prepare --size 64) instead of --sources")
    size: int = _opt(64, "image side in pixels", option=False)
    concept: str = _opt("broccoli", "emoji name (or character) learned from its packaged images, one per set")
    max_concept_images: int = _opt(5, "at most this many images of the concept", option=False)
    init_token: str = _opt("emoji", "initializer word of the concept token, one CLIP token")
    emotion_init: str | None = _opt(None, "initializer word of every emotion token (default: each its own "
                                          "word: happy, sad, angry, love)", metavar="WORD")
    steps: int = _opt(150, "textual-inversion steps of the emotion tokens")
    batch_size: int = _opt(4, "their batch size, and the concept LoRA's")
    learning_rate: float | None = _opt(None, "their learning rate (default the strategy's, 5e-3)")
    concept_steps: int = _opt(300, "textual-inversion steps of the concept token")
    concept_batch_size: int = _opt(8, "its batch size")
    concept_learning_rate: float = _opt(2e-3, "its learning rate")
    concept_lora_steps: int = _opt(150, "steps of LoRA adapters (UNet attention and convs) learned from the "
                                        "concept's images on top of its token, drawn as one more row; 0: none")
    concept_lora_rank: int = _opt(8, "their rank")
    concept_lora_learning_rate: float = _opt(2e-3, "their learning rate")
    drawn_per_class: int = _opt(200, "drawn broccoli stickers and emotion faces of each class (the sticker job's "
                                     "images and the judge's); 200 leave at least 20 of each class held out")
    sticker_per_emotion: int = _opt(16, "training stickers per emotion (and faceless ones for the body token), from "
                                        "the broccoli-stickers set's train split")
    sticker_steps: int = _opt(300, "textual-inversion steps of the sticker tokens (batch --concept-batch-size, "
                                   "learning rate --concept-learning-rate)")
    sticker_lora_steps: int = _opt(1000, "steps of LoRA adapters (UNet attention and convs) on top of the sticker "
                                         "tokens; 0: the sticker rows are drawn by the tokens alone")
    sticker_lora_batch_size: int = _opt(4, "their batch size")
    sticker_lora_rank: int = _opt(16, "their rank")
    sticker_lora_learning_rate: float = _opt(1e-3, "their learning rate")
    samples: int = _opt(4, "generations of each row shown in the sample grid")
    sample_steps: int = _opt(12, "sampler steps of every image")
    guidance: float = _opt(7.0, "guidance scale")
    sticker_guidance: float = _opt(3.0, "guidance scale of the sticker and combined rows (the sticker LoRA's model "
                                        "draws squashed, oversaturated stickers at 7)")
    mix_with: str = _opt("happy", "emotion the concept is interpolated towards", choices=tuple(EMOTION_PROMPTS))
    mix_points: int = _opt(5, "fractions in the interpolation sweep", option=False)
    combined_alphas: tuple[float, ...] = _opt((0.3, 0.5, 0.7), "shares of the <happy> face token mixed into the "
                                              "faceless <broccoli-sticker> token, comma-separated: one scored row "
                                              "each (0.3 mixes 3 parts face with 7 parts body)", metavar="ALPHAS")
    classifier: str | None = _opt(None, "a judge folder to use instead of training one: OUT/classifier of an "
                                        "earlier demo, or one written by kerasemote classify train")
    classifier_epochs: int = _opt(12, "epochs of each of the judge's ResNet-50s")
    sticker_judge_epochs: int = _opt(12, "epochs of the sticker judge, a ResNet-50 on the drawn stickers")
    sticker_judge_members: int = _opt(3, "ResNet-50s in the sticker judge, one seed each, their probabilities "
                                         "averaged (one network's verdicts on generations move with its seed)")
    judge_size: int = _opt(32, "the content and sticker judges' input side in pixels (generations are resized to it)")
    judge_stickers: int = _opt(120, "stickers of each class in the sticker judge (the rest of the train split "
                                    "is not used)")
    judge_drawn_faces: int = _opt(120, "drawn faces (the emotion-faces set) of each emotion beside the real faces in "
                                       "the judge")
    style_judge_epochs: int = _opt(8, "epochs of the vendor judge, a ResNet-50 on the style judge's names")
    style_judge_size: int = _opt(64, "the vendor judge's input side in pixels: a vendor's outlines and shading are "
                                     "a pixel or two wide, and at 32 px it tells the vendors apart far less often")
    judge_members: int = _opt(2, "ResNet-50s trained on the four emotions' faces, one seed each, whose averaged "
                                 "probabilities say which emotion a face shows")
    judge_faces: int | None = _opt(None, "emotion faces in the gate's 'face' class, drawn evenly over the "
                                         "emotions (default: all)")
    judge_other: int = _opt(60, "images of other emoji (no face, person or hand; not the concept) in the gate's "
                                "'other' class, so that a generation that is neither has a class of its own; 0: none")
    num_images: int = _opt(32, "generations scored per prompt")
    seed: int = _opt(0, "seed")
    progress: bool = _opt(True, "progress bars")

    def __post_init__(self) -> None:
        object.__setattr__(self, "sources", tuple(self.sources))
        object.__setattr__(self, "combined_alphas", tuple(float(a) for a in self.combined_alphas))
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
            (all(0.0 <= g < float("inf") for g in (self.guidance, self.sticker_guidance)),
             "guidance and sticker_guidance must be finite and >= 0"),
            (self.num_images >= 1, "num_images must be >= 1"),
            (self.mix_points >= 2, "mix_points must be >= 2"),
            (all(0.0 <= a <= 1.0 for a in self.combined_alphas), "every combined_alpha must be in 0..1"),
            (self.classifier is not None or self.classifier_epochs >= 1, "classifier_epochs must be >= 1"),
            (self.judge_members >= 1, "judge_members must be >= 1"),
            (self.judge_faces is None or self.judge_faces >= 1, "judge_faces must be >= 1 (or None: all)"),
            (self.judge_other >= 0, "judge_other must be >= 0"),
            (self.sticker_per_emotion >= 1 and self.sticker_steps >= 1, "sticker_per_emotion and sticker_steps must "
             "be >= 1"),
            (self.drawn_per_class >= self.sticker_per_emotion, "drawn_per_class must be >= sticker_per_emotion"),
            (self.sticker_lora_steps >= 0 and self.sticker_lora_batch_size >= 1 and self.sticker_lora_rank >= 1
             and self.sticker_lora_learning_rate > 0, "the sticker LoRA's steps must be >= 0, its batch size and "
             "rank >= 1 and its learning rate positive"),
            (self.judge_size >= 32 and self.style_judge_size >= 32 and self.judge_stickers >= 1
             and self.judge_drawn_faces >= 0,
             "judge_size and style_judge_size must be >= 32, judge_stickers >= 1 and judge_drawn_faces >= 0"),
            (self.style_judge_epochs >= 1 and self.sticker_judge_epochs >= 1 and self.sticker_judge_members >= 1,
             "style_judge_epochs, sticker_judge_epochs and sticker_judge_members must be >= 1"),
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


def generate_kwargs(config: DemoConfig, kind: str | None = None) -> dict:
    """The sampler settings of the images of rows of ``kind`` (``None``: every other image the demo draws):
    the sticker and combined rows take ``config.sticker_guidance``, all else ``config.guidance``."""
    guidance = config.sticker_guidance if kind in (STICKER_KIND, COMBINED_KIND) else config.guidance
    return dict(steps=config.sample_steps, guidance=guidance)


def prompt_rows(concept_token: str, lora: bool = False) -> list[Row]:
    """The emotion and concept rows: the four emotions in words, the four emotion tokens, the concept.

    With ``lora`` the concept's prompt comes twice: kind ``concept`` (the token alone) and
    ``concept+lora`` (drawn by the model that also carries the concept's adapters). The sticker
    rows (:func:`kerasemote.demo.stickers.sticker_rows`) and the style rows
    (:func:`kerasemote.demo.styles.style_rows`) come after these.
    """
    rows = [Row(prompt, (prompt,), "words", label) for label, prompt in EMOTION_PROMPTS.items()]
    rows += [Row(f"a {token} emoji", (f"a {token} emoji",), "token", label) for label, token in EMOTION_TOKENS.items()]
    concept = f"a {concept_token} emoji"
    rows.append(Row(concept, (concept,), "concept", concept_slug(concept_token)))
    if lora:
        rows.append(Row(row_label(concept, LORA_KIND), (concept,), LORA_KIND, concept_slug(concept_token)))
    return rows


def row_label(prompt: str, kind: str) -> str:
    """How a row is named in grids and tables: the prompt, ``+ LoRA`` for the adapted model's row."""
    return f"{prompt} + LoRA" if kind == LORA_KIND else prompt
