"""Captions the way the users trained, and the vendor-to-style-token table.

One vendor: ``"<description> emoji"``. Several vendors (mixed training): each vendor
gets a style token ``<s0>``, ``<s1>``... (in sorted vendor order, so the same vendor
set always gives the same table) and the caption is
``"<description> emoji in <sN> style"``.
"""

from __future__ import annotations

from typing import Iterable, Mapping


def style_tokens(vendors: Iterable[str]) -> dict[str, str]:
    """Vendor -> style token, ``<s0>`` for the first vendor in sorted order."""
    return {vendor: f"<s{i}>" for i, vendor in enumerate(sorted(set(vendors)))}


def build_caption(description: str, style_token: str | None = None) -> str:
    """``"grinning face"`` -> ``"grinning face emoji"`` (or ``"... emoji in <s1> style"``).

    A description that already ends with ``emoji`` does not get a second one.
    """
    description = " ".join(description.split())
    if not description:
        raise ValueError("Cannot build a caption from an empty description.")
    if description.lower().endswith(" emoji") or description.lower() == "emoji":
        description = description[: -len("emoji")].rstrip()
    caption = f"{description} emoji" if description else "emoji"
    return f"{caption} in {style_token} style" if style_token else caption


def caption_for(description: str, vendor: str, tokens: Mapping[str, str]) -> str:
    """Caption for one image given the table; style tokens only when it has 2+ vendors."""
    return build_caption(description, tokens[vendor] if len(tokens) > 1 else None)
