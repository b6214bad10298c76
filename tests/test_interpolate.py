"""Mixing two concepts: endpoints reproduce each concept, slerp keeps norms, outputs are written."""

import numpy as np
import pytest
from PIL import Image

from kerasemote import interpolate
from kerasemote.model import StableDiffusion

GEN = dict(steps=2, height=32, width=32, progress=False)


@pytest.fixture(scope="module")
def model():
    m = StableDiffusion.random("tiny", seed=0)
    rng = np.random.default_rng(1)
    m.add_placeholder("<broccoli>", 2, init=rng.normal(0, 0.5, (2, 64)).astype("float32"))
    m.add_placeholder("<happy>", 2, init=rng.normal(0, 2.0, (2, 64)).astype("float32"))
    m.add_placeholder("<one>", 1, init="face")
    return m


def test_lerp_and_slerp_are_exact_at_both_ends():
    a, b = np.random.default_rng(0).normal(size=(2, 3, 8)).astype("float32")
    for method in interpolate.METHODS:
        np.testing.assert_array_equal(interpolate.mix(a, b, 0.0, method), a)
        np.testing.assert_array_equal(interpolate.mix(a, b, 1.0, method), b)


def test_slerp_keeps_the_norm_between_the_endpoints_where_lerp_shrinks_it():
    a = np.array([[3.0, 0.0, 0.0]], "float32")
    b = np.array([[0.0, -1.0, 0.0]], "float32")
    for alpha in np.linspace(0.05, 0.95, 10):
        norm = np.linalg.norm(interpolate.slerp(a, b, alpha))
        assert 1.0 - 1e-5 <= norm <= 3.0 + 1e-5
    assert np.linalg.norm(interpolate.lerp(a, b, 0.9)) < 1.0  # why slerp exists
    # slerp's direction stays on the great circle: orthogonal endpoints, 45 degrees at alpha 0.5.
    mid = interpolate.slerp(a, b, 0.5)[0]
    np.testing.assert_allclose(mid / np.linalg.norm(mid), [np.sqrt(0.5), -np.sqrt(0.5), 0.0], atol=1e-6)


def test_mixing_tokens_with_different_vector_counts_is_refused(model):
    with pytest.raises(ValueError, match="same count"):
        interpolate.add_mixed_token(model, "<broccoli>", "<one>", 0.5)


def test_token_sweep_endpoints_reproduce_each_concepts_own_image(model):
    sweep = interpolate.token_sweep(model, "<broccoli>", "<happy>", "a {} sticker", [0.0, 0.3, 1.0], seed=5, **GEN)
    noise = interpolate._fixed_noise(model, 1, 5, GEN)
    own_a = model.generate("a <broccoli> sticker", init_latents=noise, **GEN)
    own_b = model.generate("a <happy> sticker", init_latents=noise, **GEN)
    np.testing.assert_array_equal(sweep[0], own_a[0])
    np.testing.assert_array_equal(sweep[2], own_b[0])
    assert np.abs(sweep[1].astype(int) - own_a[0].astype(int)).max() > 0


def test_progress_false_silences_the_sweep_bar_and_true_shows_one_bar(model, capsys):
    quiet = dict(GEN, progress=False)
    interpolate.token_sweep(model, "<broccoli>", "<happy>", "a {} sticker", [0.0, 1.0], **quiet)
    interpolate.context_sweep(model, "a cat", "a dog", [0.0, 1.0], **quiet)
    assert capsys.readouterr().err == ""
    interpolate.context_sweep(model, "a cat", "a dog", [0.0, 1.0], **dict(GEN, progress=True))
    err = capsys.readouterr().err
    assert "interpolating" in err and "sampling" not in err  # one bar, none per image


def test_context_sweep_endpoints_reproduce_each_prompt(model):
    sweep = interpolate.context_sweep(model, "a cat", "a dog", [0.0, 1.0], method="lerp", seed=2, **GEN)
    noise = interpolate._fixed_noise(model, 1, 2, GEN)
    np.testing.assert_array_equal(sweep[1], model.generate("a dog", init_latents=noise, **GEN)[0])


def test_context_grid_corners_are_the_four_prompts(model):
    prompts = ["a cat", "a dog", "a <happy> face", "a <broccoli>"]
    grid = interpolate.context_grid(model, prompts, 3, seed=1, **GEN)
    assert grid.shape == (9, 32, 32, 3)
    noise = interpolate._fixed_noise(model, 1, 1, GEN)
    np.testing.assert_array_equal(grid[8], model.generate(prompts[3], init_latents=noise, **GEN)[0])


def test_save_sweep_writes_pngs_a_labelled_grid_and_a_gif(tmp_path):
    images = np.random.default_rng(0).integers(0, 255, (3, 16, 16, 3), dtype=np.uint8)
    sweep = interpolate.save_sweep(images, [0.0, 0.5, 1.0], str(tmp_path))
    assert len(sweep.paths) == 3
    assert Image.open(sweep.grid).size[0] > 3 * 16
    gif = Image.open(sweep.gif)
    assert gif.is_animated and gif.n_frames == 4  # forth and back


def test_prompt_template_needs_a_slot(model):
    with pytest.raises(ValueError, match="needs a"):
        interpolate.token_sweep(model, "<broccoli>", "<happy>", "a sticker", [0.5], **GEN)


@pytest.mark.slow
def test_interpolate_command_writes_sweep_and_mixed_token(tmp_path):
    from kerasemote.cli import main
    from kerasemote.embeddings import read_embeddings

    StableDiffusion.random("tiny", seed=0).save(str(tmp_path / "m"))
    rng = np.random.default_rng(0)
    np.save(tmp_path / "broccoli.npy", rng.normal(size=(1, 64)).astype("float32"))
    np.save(tmp_path / "happy.npy", rng.normal(size=(1, 64)).astype("float32"))
    common = ["interpolate", "--model", str(tmp_path / "m"), "--embeddings", str(tmp_path / "broccoli.npy"),
              str(tmp_path / "happy.npy"), "--prompt", "a {} sticker", "--steps", "2", "--height", "32",
              "--width", "32"]
    assert main(common + ["--num", "3", "--out", str(tmp_path / "sweep")]) == 0
    names = sorted(p.name for p in (tmp_path / "sweep").iterdir())
    assert names == ["grid.png", "mix_000.png", "mix_001.png", "mix_002.png", "sweep.gif"]
    assert main(common + ["--alpha", "0.3", "--method", "lerp", "--out", str(tmp_path / "one")]) == 0
    vectors, manifest = read_embeddings(str(tmp_path / "one" / "mixed"))
    (rows,) = vectors.values()
    expected = 0.7 * np.load(tmp_path / "broccoli.npy") + 0.3 * np.load(tmp_path / "happy.npy")
    np.testing.assert_allclose(rows, expected, atol=1e-6)
    assert manifest["alpha"] == 0.3


def test_interpolate_command_needs_one_kind_of_input(tmp_path, capsys):
    from kerasemote.cli import main

    assert main(["interpolate", "--model", "nowhere", "--out", str(tmp_path)]) == 1
    assert "--embeddings A B" in capsys.readouterr().err
