"""Prompt templates for textual inversion: ``{}`` is replaced by the placeholder token.

``object`` templates describe a thing (``"an emoji of a <broccoli>"``); ``style``
templates describe a look (``"a sticker in the style of <s0>"``). Each training
example draws one template at random (keyed by seed and step), so the embedding learns
the concept rather than one sentence.
"""

from __future__ import annotations

OBJECT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}",
    "a picture of a {}",
    "an emoji of a {}",
    "a {} emoji",
    "a {} icon",
    "a small {}",
    "a close-up picture of a {}",
    "a rendering of a {}",
    "a clean picture of the {}",
    "a cropped picture of a {}",
    "a bright picture of the {}",
    "a good picture of a {}",
    "an illustration of a {}",
    "a {} sticker",
    "a flat drawing of a {}",
    "a {} on a white background",
)

STYLE_TEMPLATES: tuple[str, ...] = (
    "an emoji in the style of {}",
    "a picture in the style of {}",
    "a drawing in the style of {}",
    "an icon in the style of {}",
    "a sticker in the style of {}",
    "a rendering in the style of {}",
    "a cartoon in the style of {}",
    "an illustration in the style of {}",
    "a small picture in the style of {}",
    "a clean drawing in the style of {}",
    "art in the style of {}",
    "a {} style emoji",
)

TEMPLATES: dict[str, tuple[str, ...]] = {"object": OBJECT_TEMPLATES, "style": STYLE_TEMPLATES}


def fill_templates(token: str, kind: str = "object") -> list[str]:
    """Every template of one kind with ``token`` put in.

    Args:
        token: the placeholder, e.g. ``"<happy>"``.
        kind: ``"object"`` or ``"style"``.

    Returns:
        The prompts, e.g. ``["a photo of a <happy>", ...]``.

    Example:
        >>> fill_templates("<happy>")[2]
        'an emoji of a <happy>'
    """
    if kind not in TEMPLATES:
        raise ValueError(f"template kind must be one of {sorted(TEMPLATES)}, got {kind!r}.")
    return [template.format(token) for template in TEMPLATES[kind]]
