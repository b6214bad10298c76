"""Captions, style tokens, stable splits, emoji names and emotion labels (no images)."""

import collections

import pytest

from kerasemote.data import captions, emotions, names, split


def test_single_vendor_caption_is_description_plus_emoji():
    assert captions.build_caption("grinning face") == "grinning face emoji"


def test_mixed_vendor_caption_names_the_style_token():
    tokens = captions.style_tokens(["twemoji", "apple", "noto"])
    assert tokens == {"apple": "<s0>", "noto": "<s1>", "twemoji": "<s2>"}
    assert captions.caption_for("red heart", "noto", tokens) == "red heart emoji in <s1> style"


def test_one_vendor_table_gives_captions_without_token():
    assert captions.caption_for("red heart", "apple", {"apple": "<s0>"}) == "red heart emoji"


def test_caption_does_not_double_the_word_emoji():
    assert captions.build_caption("  Happy   emoji ") == "Happy emoji"


def test_empty_description_is_an_error():
    with pytest.raises(ValueError, match="empty description"):
        captions.build_caption("   ")


def test_split_is_stable_and_close_to_100_1_20():
    keys = [f"key-{i}" for i in range(24200)]
    first = [split.split_for_key(k) for k in keys]
    assert first == [split.split_for_key(k) for k in keys]
    counts = collections.Counter(first)
    assert abs(counts["train"] / len(keys) - 100 / 121) < 0.01
    assert abs(counts["validation"] / len(keys) - 1 / 121) < 0.003
    assert abs(counts["test"] / len(keys) - 20 / 121) < 0.01


def test_split_pins_known_keys_so_a_hash_change_is_noticed():
    # Changing the hash or the bucketing would silently move rows between splits.
    assert split.split_for_key("emoji:😢") == "test"
    assert split.split_for_key("emoji:😀") == "train"
    assert [split.split_for_key(k) for k in ("k71", "k161", "k233")] == ["validation"] * 3


def test_split_rejects_bad_ratios():
    with pytest.raises(ValueError, match="ratios"):
        split.split_for_key("a", (0, 0, 0))


def test_codepoint_file_names_round_trip():
    family = "\U0001F468\u200d\U0001F469\u200d\U0001F467"
    assert names.emoji_to_codepoints(family) == "1f468-200d-1f469-200d-1f467"
    assert names.codepoints_to_emoji("1F468-200D-1F469-200D-1F467") == family
    assert names.parse_unicode_column("U+1F468 U+200D U+1F469 U+200D U+1F467") == family
    with pytest.raises(ValueError, match="hex code points"):
        names.codepoints_to_emoji("smile")


def test_emoji_names_come_from_cldr():
    assert names.emoji_name("\U0001F600") == "grinning face"
    assert names.emoji_name("\u2764") == "red heart"  # without the variation selector
    assert names.clean_name(":smiling_face_with_heart-eyes:") == "smiling face with heart-eyes"


@pytest.mark.parametrize(
    "name, label",
    [
        ("grinning face", "happy"),
        ("Face With Tears Of Joy", "happy"),
        ("loudly crying face", "sad"),
        ("pouting face", "angry"),  # Unicode name of 😡, used by older datasets
        ("enraged face", "angry"),
        ("smiling face with heart-eyes", "in love"),
        ("smiling face with heart-shaped eyes", "in love"),
        ("face blowing a kiss emoji", "in love"),
        ("astonished face", "surprised"),
        ("smiling face with horns", None),
        ("red heart", None),
    ],
)
def test_emotion_from_name(name, label):
    assert emotions.emotion_for_name(name) == label


def test_emotion_from_characters_wins_over_name():
    assert emotions.emotion_label("😢", "whatever") == "sad"
    assert emotions.emotion_label("", "angry face") == "angry"
    assert emotions.emotion_label("☹\ufe0f") == "sad"


def test_every_required_emotion_has_members():
    for label in ("happy", "sad", "angry", "in love"):
        assert len(emotions.EMOTION_EMOJI[label]) >= 4
    all_chars = "".join(emotions.EMOTION_EMOJI.values())
    assert len(all_chars) == len(set(all_chars)), "an emoji is listed under two emotions"
