"""Emoji names: characters <-> readable descriptions, code-point file names.

Names come from the ``emoji`` package (CLDR short names) when it is installed and
from :mod:`unicodedata` for single code points otherwise.
"""

from __future__ import annotations

import functools
import re
import unicodedata

VARIATION_SELECTOR = "\ufe0f"


def clean_name(name: str) -> str:
    """Turn ``":smiling_face_with_heart-eyes:"`` or ``"Grinning Face"`` into plain words.

    Underscores become spaces, surrounding colons and whitespace go, case is kept.
    """
    name = name.strip().strip(":").replace("_", " ")
    name = name.replace("\u2019", "'").replace("\u201c", '"').replace("\u201d", '"')
    return re.sub(r"\s+", " ", name).strip()


def codepoints_to_emoji(codepoints: str) -> str:
    """``"1f468-200d-1f469"`` (twemoji / OpenMoji file stem) -> the characters."""
    try:
        return "".join(chr(int(part, 16)) for part in re.split(r"[-_ ]", codepoints.strip()) if part)
    except ValueError:
        raise ValueError(
            f"Expected hex code points separated by '-', like '1f600' or '1f468-200d-1f469'; "
            f"found {codepoints!r}."
        ) from None


def emoji_to_codepoints(text: str) -> str:
    """The characters -> ``"1f600"`` style stem (lower case, ``-`` separated)."""
    return "-".join(f"{ord(char):x}" for char in text)


def parse_unicode_column(value: str) -> str:
    """Kaggle ``unicode`` column (``"U+1F468 U+200D U+1F469"``) -> the characters."""
    parts = re.findall(r"[0-9A-Fa-f]{4,6}", value.replace("U+", " "))
    return "".join(chr(int(part, 16)) for part in parts)


@functools.lru_cache(maxsize=1)
def emoji_index() -> dict[str, str]:
    """Characters (variation selectors removed) -> clean CLDR name, fully qualified first."""
    try:
        import emoji as emoji_package
    except ImportError:
        return {}
    index: dict[str, str] = {}
    # Fully qualified (status 2) first so it wins over the minimally qualified spelling.
    for char, data in sorted(emoji_package.EMOJI_DATA.items(), key=lambda kv: kv[1]["status"] != 2):
        index.setdefault(char.replace(VARIATION_SELECTOR, ""), clean_name(data["en"]))
    return index


def emoji_name(text: str) -> str | None:
    """Readable name of an emoji string, or ``None`` when nothing knows it.

    Example:
        >>> emoji_name("\\U0001F600")
        'grinning face'
    """
    name = emoji_index().get(text.replace(VARIATION_SELECTOR, ""))
    if name:
        return name
    chars = text.replace(VARIATION_SELECTOR, "")
    if len(chars) == 1:
        fallback = unicodedata.name(chars, "")
        return fallback.lower() or None
    return None


def fully_qualified_emoji() -> list[str]:
    """Every fully qualified emoji the ``emoji`` package knows, in a stable order.

    Raises:
        ImportError: the optional ``emoji`` package is missing.
    """
    try:
        import emoji as emoji_package
    except ImportError:
        raise ImportError(
            "Listing emoji needs the optional 'emoji' package: pip install 'kerasemote[emoji]'."
        ) from None
    return sorted(char for char, data in emoji_package.EMOJI_DATA.items() if data["status"] == 2)


def safe_id(text: str) -> str:
    """A string usable as a file name: letters, digits, ``-`` and ``_`` only."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "item"
