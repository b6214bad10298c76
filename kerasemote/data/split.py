"""Deterministic train/validation/test split by a stable hash (100:1:20 by default).

The hash is SHA-256 of a key string, so a row lands in the same split on every
machine, Python version and run, and adding rows never moves old ones. With
``key = emoji`` (the default in :func:`kerasemote.data.prepare`) all vendors of one
emoji share a split: no emoji seen in training appears in validation or test.
"""

from __future__ import annotations

import hashlib

SPLITS: tuple[str, ...] = ("train", "validation", "test")
DEFAULT_RATIOS: tuple[int, int, int] = (100, 1, 20)


def split_for_key(key: str, ratios: tuple[int, int, int] = DEFAULT_RATIOS) -> str:
    """Which split a key belongs to.

    Args:
        key: any stable string (an emoji, a file name...).
        ratios: integer weights of train, validation and test.

    Returns:
        ``"train"``, ``"validation"`` or ``"test"``.
    """
    if len(ratios) != 3 or min(ratios) < 0 or sum(ratios) == 0:
        raise ValueError(f"ratios must be three non-negative integers, not all zero; got {ratios}.")
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    bucket = int.from_bytes(digest[:8], "big") % sum(ratios)
    if bucket < ratios[0]:
        return "train"
    if bucket < ratios[0] + ratios[1]:
        return "validation"
    return "test"
