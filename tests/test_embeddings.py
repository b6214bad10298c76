"""Textual-inversion files: formats, checks that name file/key/expected/found, loading into a model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kerasemote import weights
from kerasemote.embeddings import load_embeddings, norm_summary, read_embeddings, save_embeddings, token_file_name
from kerasemote.model import StableDiffusion


@pytest.fixture(scope="module")
def model() -> StableDiffusion:
    m = StableDiffusion.random("tiny", seed=0)
    m.add_placeholder("<happy>", 2, init="smile")
    m.add_placeholder("<in-love>", 1, init="heart")
    return m


def test_token_file_names_are_safe():
    assert token_file_name("<in-love>") == "in-love.npy"
    assert token_file_name("<a/b c>") == "a_b_c.npy"


def test_saved_formats_hold_the_rows_and_manifest(model, tmp_path, gcs_bucket):
    for out in (str(tmp_path), gcs_bucket + "/run"):
        paths = save_embeddings(model, out, ["<happy>", "<in-love>"], {"<happy>": "smile"}, steps=7)
        assert [p.rsplit("/", 1)[-1] for p in paths] == ["embeddings.npz", "embeddings.json", "happy.npy", "in-love.npy"]
        for path in (out, paths[0], paths[1]):
            vectors, manifest = read_embeddings(path)
            assert sorted(vectors) == ["<happy>", "<in-love>"]
            np.testing.assert_array_equal(vectors["<happy>"], model.placeholder_rows("<happy>"))
            assert manifest["steps"] == 7 and manifest["dims"] == 64
        vectors, manifest = read_embeddings(paths[3])  # one .npy: token found in the manifest beside it
        assert list(vectors) == ["<in-love>"] and vectors["<in-love>"].shape == (1, 64)
    manifest = json.loads((tmp_path / "embeddings.json").read_text())
    happy = model.placeholder_rows("<happy>")
    smile = model.text_encoder.token_embedding.table()[model.tokenizer.token_ids("smile")[0]]
    assert manifest["tokens"][0] == {
        "token": "<happy>", "file": "happy.npy", "num_vectors": 2, "initializer": "smile",
        "norms": [round(float(np.linalg.norm(r)), 4) for r in happy],
        "initializer_norm": round(float(np.linalg.norm(smile)), 4)}
    assert manifest["tokens"][1]["initializer_norm"] is None  # no initializer recorded for <in-love>
    assert manifest["base_model"]["config"] == "tiny" and manifest["format"] == "kerasemote-embeddings"


@pytest.fixture(scope="module")
def smile_model() -> StableDiffusion:
    m = StableDiffusion.random("tiny", seed=0)
    m.add_placeholder("<t>", 1, init="smile")
    return m


def _token_from_smile(m: StableDiffusion, scale: float):
    """``m``'s <t>, started at 'smile', now at ``scale`` times that word's norm."""
    word = m.text_encoder.token_embedding.table()[m.tokenizer.token_ids("smile")[0]]
    m.set_placeholder_rows("<t>", scale * np.asarray(word)[None])
    return m, float(np.linalg.norm(word))


def test_norm_summary_names_each_token_and_its_starting_word(smile_model):
    m, start = _token_from_smile(smile_model, 1.0)
    assert norm_summary(m, ["<t>"], {"<t>": "smile"}) == f"<t> norm {start:.2f} (from 'smile', {start:.2f})"
    assert norm_summary(m, ["<t>"]) == f"<t> norm {start:.2f}"


def test_norm_summary_warns_with_the_ratio_only_when_the_token_is_far_above_its_word(smile_model):
    near, start = _token_from_smile(smile_model, 0.19 / 0.17)  # 0.19 from a word of 0.17: ordinary movement
    assert norm_summary(near, ["<t>"], {"<t>": "smile"}) == (
        f"<t> norm {0.19 / 0.17 * start:.2f} (from 'smile', {start:.2f})")
    demo, start = _token_from_smile(smile_model, 0.65 / 0.42)  # the demo's concept token at its own settings
    assert "wandered" not in norm_summary(demo, ["<t>"], {"<t>": "smile"})
    far, start = _token_from_smile(smile_model, 0.80 / 0.42)  # 0.80 from 0.42: wandered
    assert norm_summary(far, ["<t>"], {"<t>": "smile"}) == (
        f"<t> norm {0.80 / 0.42 * start:.2f} (from 'smile', {start:.2f}) is 1.9x its starting word's norm: "
        "it has likely wandered (try a larger batch or a lower learning rate)")


def test_loading_adds_new_tokens_and_overwrites_known_ones(model, tmp_path):
    rows = np.random.default_rng(0).normal(0, 0.1, (3, 64)).astype("float32")
    weights.save_npy(str(tmp_path / "star.npy"), rows)  # seed-style: no manifest, token "<star>"
    weights.save_npy(str(tmp_path / "happy.npy"), rows[:2])
    other = model  # has "<happy>" with 2 rows, no "<star>"
    assert load_embeddings(other, [str(tmp_path / "star.npy"), str(tmp_path / "happy.npy")]) == ["<star>", "<happy>"]
    np.testing.assert_array_equal(other.placeholder_rows("<star>"), rows)
    np.testing.assert_array_equal(other.placeholder_rows("<happy>"), rows[:2])
    assert other.tokenize("a <star>")[0, 2:5].tolist() == other.tokenizer.placeholders["<star>"]


def test_bad_files_are_refused_with_file_key_expected_found(model, tmp_path):
    weights.save_npy(str(tmp_path / "wide.npy"), np.zeros((1, 768), "float32"))
    with pytest.raises(weights.WeightFileError, match=r"wide.npy: key '<wide>' expected shape \(1, 64\) .* found \(1, 768\)"):
        load_embeddings(model, str(tmp_path / "wide.npy"))
    weights.save_npy(str(tmp_path / "ints.npy"), np.zeros((1, 64), "int32"))
    with pytest.raises(weights.WeightFileError, match="ints.npy: key '<ints>' expected a float dtype, found int32"):
        load_embeddings(model, str(tmp_path / "ints.npy"))
    np.save(tmp_path / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(weights.WeightFileError, match="pickled.npy"):
        load_embeddings(model, str(tmp_path / "pickled.npy"))
    weights.save_npy(str(tmp_path / "happy.npy"), np.zeros((3, 64), "float32"))
    with pytest.raises(weights.WeightFileError, match=r"key '<happy>' expected 2 vectors .* found 3"):
        load_embeddings(model, str(tmp_path / "happy.npy"))
    weights.save_arrays(str(tmp_path / "e.npz"), {"<a>": np.zeros((1, 64), "float32")}, {"format": "kerasemote-lora"})
    with pytest.raises(weights.WeightFileError, match="key 'format' expected 'kerasemote-embeddings', found 'kerasemote-lora'"):
        load_embeddings(model, str(tmp_path / "e.npz"))
