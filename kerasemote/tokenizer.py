"""CLIP BPE token ids with Stable Diffusion 1.x padding, plus placeholder tokens.

The BPE itself comes from ``instant-clip-tokenizer`` (the CLIP vocabulary ships
inside the wheel, so this works offline). This module adds what SD 1.x needs:

* the CLIP text cleaning (HTML unescape, whitespace collapse, lower case);
* ``<|startoftext|>`` (49406), the ids, ``<|endoftext|>`` (49407), then padding with
  49407 to ``max_length`` (77). keras-cv's ``StableDiffusion.encode_text`` and
  diffusers' SD 1.x ``CLIPTokenizer`` (``pad_token="<|endoftext|>"``) both pad
  with 49407; ``instant-clip-tokenizer``'s own ``tokenize_batch`` pads with 0,
  which is why it is not used here;
* truncation that keeps the end token at position ``max_length - 1``;
* placeholder tokens for textual inversion (``<broccoli>``), each owning one or
  more new ids after the 49,408 CLIP ids. Placeholders are cut out of the raw
  prompt before BPE, so ``"a <broccoli>, sticker"`` never splits the token.

Example:
    >>> tok = Tokenizer()
    >>> tok.add_placeholder("<broccoli>", num_vectors=3)
    [49408, 49409, 49410]
    >>> tok.encode("a <broccoli>, sticker")[0, :7].tolist()
    [49406, 320, 49408, 49409, 49410, 267, 11270]
"""

from __future__ import annotations

import html
import logging
import re
from collections import OrderedDict
from typing import Any, Sequence

import numpy as np

from kerasemote.config import CLIP_VOCAB_SIZE, ModelConfig

logger = logging.getLogger(__name__)

START_ID = 49406
END_ID = 49407
PAD_ID = END_ID  # SD 1.x pads with <|endoftext|>, not 0.
_SPECIAL_TEXT = {"<|startoftext|>": START_ID, "<|endoftext|>": END_ID}
_WHITESPACE = re.compile(r"\s+")


def clean_text(text: str) -> str:
    """Apply CLIP's text cleaning: HTML unescape (twice), collapse whitespace, lower case.

    OpenAI's tokenizer also runs ``ftfy.fix_text``; keras-cv does not, and neither do we
    (it only changes mojibake, which prompts do not contain).
    """
    text = html.unescape(html.unescape(text))
    return _WHITESPACE.sub(" ", text).strip().lower()


class Tokenizer:
    """CLIP tokenizer producing SD 1.x ``(B, max_length)`` int32 id arrays.

    Args:
        max_length: tokens per prompt, start and end tokens included (77 for CLIP).

    Placeholders are matched case-sensitively and exactly as added, in the raw
    prompt text (before lower-casing), longest first.
    """

    def __init__(self, max_length: int = 77) -> None:
        import instant_clip_tokenizer  # shipped vocabulary, no download

        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 (start + end token), got {max_length}.")
        self.max_length = int(max_length)
        self._bpe = instant_clip_tokenizer.Tokenizer()
        self._placeholders: OrderedDict[str, list[int]] = OrderedDict()
        self._split_pattern: re.Pattern[str] | None = None
        self._rebuild_pattern()

    @classmethod
    def from_config(cls, config: ModelConfig) -> "Tokenizer":
        """Build a tokenizer whose ``max_length`` matches ``config``."""
        if config.vocab_size != CLIP_VOCAB_SIZE:
            raise ValueError(
                f"ModelConfig {config.name!r} has vocab_size {config.vocab_size}, but the CLIP "
                f"tokenizer has {CLIP_VOCAB_SIZE} ids; placeholders are added on the tokenizer."
            )
        return cls(max_length=config.max_length)

    # ------------------------------------------------------------------ vocabulary

    @property
    def vocab_size(self) -> int:
        """CLIP ids plus one row per placeholder vector."""
        return CLIP_VOCAB_SIZE + sum(len(ids) for ids in self._placeholders.values())

    @property
    def placeholders(self) -> OrderedDict[str, list[int]]:
        """Placeholder token -> its ids, in the order they were added (a copy)."""
        return OrderedDict((token, list(ids)) for token, ids in self._placeholders.items())

    def add_placeholder(self, token: str, num_vectors: int = 1) -> list[int]:
        """Add a placeholder token owning ``num_vectors`` new consecutive ids.

        Args:
            token: the text users write in prompts, e.g. ``"<broccoli>"``.
            num_vectors: how many embedding rows the token expands to.

        Returns:
            The new ids, e.g. ``[49408, 49409, 49410]`` for the first token with 3 vectors.

        Raises:
            ValueError: the token is empty, contains whitespace, was already added,
                or already is a single CLIP token (it would hijack that word in every
                prompt, and its embedding could not be told apart from the word's).
        """
        if not isinstance(token, str) or not token:
            raise ValueError(f"Placeholder token must be a non-empty string, got {token!r}.")
        if _WHITESPACE.search(token):
            raise ValueError(f"Placeholder token {token!r} contains whitespace; use e.g. '<my-emoji>'.")
        if num_vectors < 1:
            raise ValueError(f"num_vectors for {token!r} must be >= 1, got {num_vectors}.")
        if token in self._placeholders:
            raise ValueError(
                f"Placeholder {token!r} was already added with ids {self._placeholders[token]}."
            )
        if token in _SPECIAL_TEXT:
            raise ValueError(f"{token!r} is a CLIP special token, not a valid placeholder.")
        existing = self._bpe.encode(clean_text(token))
        if len(existing) == 1:
            raise ValueError(
                f"Placeholder {token!r} already is the CLIP token {existing[0]}; choose a string "
                f"that is not one CLIP word, e.g. '<{token.strip('<>')}>'."
            )
        first = self.vocab_size
        ids = list(range(first, first + num_vectors))
        self._placeholders[token] = ids
        self._rebuild_pattern()
        return list(ids)

    def _rebuild_pattern(self) -> None:
        # Longest first so "<s10>" wins over "<s1>".
        literals = sorted([*self._placeholders, *_SPECIAL_TEXT], key=len, reverse=True)
        self._split_pattern = re.compile("(" + "|".join(re.escape(t) for t in literals) + ")")

    # ------------------------------------------------------------------ encoding

    def token_ids(self, word: str) -> list[int]:
        """BPE ids of ``word`` without start/end tokens (placeholders expanded).

        Used to check that an initializer word is ONE CLIP token.
        """
        return self._ids_without_specials(word)

    def _ids_without_specials(self, text: str) -> list[int]:
        ids: list[int] = []
        # re.split with a capture group alternates plain text and matched literals.
        for i, piece in enumerate(self._split_pattern.split(text)):
            if i % 2:
                ids.extend(self._placeholders.get(piece) or [_SPECIAL_TEXT[piece]])
            elif piece:
                ids.extend(self._bpe.encode(clean_text(piece)))
        return ids

    def encode_one(self, prompt: str) -> list[int]:
        """Ids of one prompt: start, ids, end, padded with 49407 to ``max_length``."""
        if not isinstance(prompt, str):
            raise TypeError(f"Prompts must be str, got {type(prompt).__name__}: {prompt!r}.")
        body = self._ids_without_specials(prompt)
        room = self.max_length - 2
        if len(body) > room:
            logger.warning(
                "Prompt truncated to %d tokens (it had %d): %r", self.max_length, len(body) + 2, prompt
            )
            body = body[:room]
        ids = [START_ID, *body, END_ID]
        return ids + [PAD_ID] * (self.max_length - len(ids))

    def encode(self, prompts: str | Sequence[str]) -> np.ndarray:
        """Token ids for one prompt or a batch.

        Args:
            prompts: a prompt or a list of prompts.

        Returns:
            int32 array of shape ``(B, max_length)``; ``B == 1`` for a single string.
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        rows = [self.encode_one(p) for p in prompts]
        return np.asarray(rows, dtype=np.int32).reshape(len(rows), self.max_length)  # (B, 77)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Text of a sequence of ids; start/end/padding dropped, placeholders restored.

        Decoding is for debugging: CLIP lower-cases and re-spaces, so
        ``decode(encode(text))`` is not always ``text``.
        """
        by_first_id = {ids_[0]: token for token, ids_ in self._placeholders.items()}
        owned = {i for ids_ in self._placeholders.values() for i in ids_}
        words: list[str] = []
        run: list[int] = []

        def flush() -> None:
            if run:
                words.append(self._bpe.decode(run).strip())
                run.clear()

        for i in np.asarray(ids).reshape(-1).tolist():
            if i in (START_ID, END_ID):
                continue
            if i in owned:
                flush()
                if i in by_first_id:
                    words.append(by_first_id[i])
            elif 0 <= i < START_ID:
                run.append(i)
            else:
                raise ValueError(f"Token id {i} is outside the vocabulary (size {self.vocab_size}).")
        flush()
        return " ".join(w for w in words if w)

    # ------------------------------------------------------------------ serialization

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state: max_length and placeholders (token -> ids)."""
        return {
            "max_length": self.max_length,
            "base_vocab_size": CLIP_VOCAB_SIZE,
            "placeholders": [{"token": t, "ids": list(ids)} for t, ids in self._placeholders.items()],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "tokenizer dict") -> "Tokenizer":
        """Rebuild a tokenizer saved with ``to_dict``; ids are checked, not trusted.

        Args:
            data: the dict from ``to_dict`` (e.g. read from a model's JSON manifest).
            source: what the dict came from, named in error messages.
        """
        base = data.get("base_vocab_size", CLIP_VOCAB_SIZE)
        if base != CLIP_VOCAB_SIZE:
            raise ValueError(f"{source}: base_vocab_size expected {CLIP_VOCAB_SIZE}, found {base}.")
        tok = cls(max_length=int(data.get("max_length", 77)))
        for entry in data.get("placeholders", []):
            token, ids = entry.get("token"), list(entry.get("ids", []))
            if not ids:
                raise ValueError(f"{source}: placeholder {token!r} has no ids.")
            try:
                got = tok.add_placeholder(token, num_vectors=len(ids))
            except ValueError as err:
                raise ValueError(f"{source}: {err}") from None
            if got != ids:
                raise ValueError(
                    f"{source}: placeholder {token!r} expected ids {got}, found {ids}; ids must "
                    f"follow each other from {CLIP_VOCAB_SIZE} in the order the tokens were added."
                )
        return tok
