"""The project's one emotion table: labels, their face emoji, prompts, tokens and starting words.

Every part of kerasemote that names an emotion takes it from here, spelled one way
(``happy``, ``sad``, ``angry``, ``in love``); where a name cannot hold a space (a token,
a token's folder) :func:`emotion_slug` derives it (``in love`` -> ``<in-love>``).

Emotion labels come from emoji names too, so a labelled emotion set exists offline.

The mapping is an explicit table of face emoji, not keyword matching: keywords
mislabel ("smiling face with horns" is not happy, "smiling face with tear" is not
clearly happy or sad). Each emoji is looked up by its characters, its CLDR short
name (what the ``emoji`` package and the Kaggle CSV use) and its Unicode character
name (older datasets), so the same labels come out of every source.

=========  ===================================================================
label      emoji
=========  ===================================================================
happy      😀 😃 😄 😁 😆 😂 🤣 🙂 😊 ☺️ 😺 😸 😹
sad        😢 😭 😞 😔 ☹️ 🙁 😟 😥 😿 😓 😩 😫 😖 😣
angry      😠 😡 🤬 👿 😾 😤 (steam from nose: CLDR keywords list it as anger)
in love    😍 🥰 😘 😻 😚 😗 😙 😽
surprised  😮 😯 😲 🙀
=========  ===================================================================
"""

from __future__ import annotations

import functools
import unicodedata

from kerasemote.data.names import VARIATION_SELECTOR, clean_name, emoji_name

EMOTION_EMOJI: dict[str, str] = {
    "happy": "😀😃😄😁😆😂🤣🙂😊☺😺😸😹",
    "sad": "😢😭😞😔☹🙁😟😥😿😓😩😫😖😣",
    "angry": "😠😡🤬👿😾😤",
    "in love": "😍🥰😘😻😚😗😙😽",
    "surprised": "😮😯😲🙀",
}
EMOTIONS: tuple[str, ...] = tuple(EMOTION_EMOJI)
# The emotions that are taught and judged: label -> the prompt that asks for it with words.
EMOTION_PROMPTS: dict[str, str] = {
    "happy": "a grinning face emoji",
    "sad": "a crying face emoji",
    "angry": "an angry face emoji",
    "in love": "a smiling face with heart-eyes emoji",
}
# The one-CLIP-token word each emotion token starts from (the model's captions say "a happy face emoji").
EMOTION_WORDS: dict[str, str] = {"happy": "happy", "sad": "sad", "angry": "angry", "in love": "love"}


def emotion_slug(label: str) -> str:
    """Label without spaces, for tokens and folder names (``"in love"`` -> ``"in-love"``)."""
    return "-".join(label.split())


# label -> the token learned for it (``"in love"`` -> ``"<in-love>"``).
EMOTION_TOKENS: dict[str, str] = {label: f"<{emotion_slug(label)}>" for label in EMOTION_PROMPTS}

# Names that older releases used and that neither table above yields.
_EXTRA_NAMES = {"enraged face": "angry", "pouting face": "angry", "face with look of triumph": "angry"}


def normalize_name(name: str) -> str:
    """Lower-case clean name without a trailing ``emoji`` or a ``: skin tone`` suffix."""
    name = clean_name(name).lower()
    name = name.split(":")[0].strip()
    if name.endswith(" emoji"):
        name = name[: -len(" emoji")].strip()
    return name


@functools.lru_cache(maxsize=1)
def _name_table() -> dict[str, str]:
    table = dict(_EXTRA_NAMES)
    for label, chars in EMOTION_EMOJI.items():
        for char in chars:
            for name in (emoji_name(char), unicodedata.name(char, "")):
                if not name:
                    continue
                key = normalize_name(name)
                if table.setdefault(key, label) != label:
                    raise AssertionError(f"Emotion name {key!r} maps to both {table[key]!r} and {label!r}.")
    return table


def emotion_for_emoji(text: str) -> str | None:
    """Emotion of an emoji string (``"😍"`` -> ``"in love"``), ``None`` if not an emotion face."""
    chars = text.replace(VARIATION_SELECTOR, "")
    for label, members in EMOTION_EMOJI.items():
        if len(chars) == 1 and chars in members:
            return label
    return None


def emotion_for_name(name: str) -> str | None:
    """Emotion of an emoji name (``"Smiling face with heart-eyes"`` -> ``"in love"``)."""
    return _name_table().get(normalize_name(name))


def emotion_label(emoji: str = "", name: str = "") -> str | None:
    """Emotion from the characters when given, else from the name."""
    return (emotion_for_emoji(emoji) if emoji else None) or (emotion_for_name(name) if name else None)
