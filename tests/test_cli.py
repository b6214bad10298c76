"""The command line as a new user runs it: init-model, generate, convert, presets offline."""

import argparse
import json

import numpy as np
import pytest
from PIL import Image

from kerasemote import presets
from kerasemote.cli import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("models") / "tiny"
    assert main(["init-model", "--config", "tiny", "--seed", "3", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def loaded(model_dir):
    """The model in ``model_dir``, loaded once for the tests that run ``generate`` on it again and again."""
    from kerasemote.model import StableDiffusion

    return StableDiffusion.load(str(model_dir))


@pytest.fixture
def loaded_once(loaded, monkeypatch):
    """``generate`` takes the model loaded once (its graphs traced once) instead of reading the folder on every
    call; test_generate_writes_one_png_per_image_and_a_grid runs the command's own load."""
    monkeypatch.setattr("kerasemote.cli.generate.load_model_from_args", lambda args: loaded)


def test_init_model_writes_a_model_directory(model_dir):
    manifest = json.loads((model_dir / "config.json").read_text())
    assert manifest["config"]["name"] == "tiny" and manifest["init_seed"] == 3
    assert sorted(p.name for p in model_dir.glob("*.npz")) == [
        "text_encoder.npz", "unet.npz", "vae_decoder.npz", "vae_encoder.npz"]


def test_generate_writes_one_png_per_image_and_a_grid(model_dir, tmp_path):
    out = tmp_path / "gen"
    code = main(["generate", "a happy emoji", "--model", str(model_dir), "--num-images", "2", "--steps", "2",
                 "--seed", "1", "--height", "32", "--width", "32", "--sampler", "euler", "--out", str(out)])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["grid.png", "image_000.png", "image_001.png"]
    assert Image.open(out / "image_001.png").size == (32, 32)


def test_generate_from_init_noise_is_reproducible(model_dir, loaded_once, tmp_path):
    noise = np.random.default_rng(0).standard_normal((1, 8, 8, 4)).astype("float32")
    np.save(tmp_path / "noise.npy", noise)
    for name in ("a", "b"):
        assert main(["generate", "x", "--model", str(model_dir), "--steps", "2", "--init-noise",
                     str(tmp_path / "noise.npy"), "--height", "32", "--width", "32",
                     "--out", str(tmp_path / name)]) == 0
    a = np.asarray(Image.open(tmp_path / "a" / "image_000.png"))
    b = np.asarray(Image.open(tmp_path / "b" / "image_000.png"))
    np.testing.assert_array_equal(a, b)


def test_wrong_init_noise_shape_is_a_clear_error(model_dir, loaded_once, tmp_path, capsys):
    np.save(tmp_path / "noise.npy", np.zeros((1, 8, 8, 3), "float32"))
    code = main(["generate", "x", "--model", str(model_dir), "--steps", "1", "--init-noise",
                 str(tmp_path / "noise.npy"), "--out", str(tmp_path / "o")])
    assert code == 1
    assert "noise.npy" in capsys.readouterr().err


def test_convert_of_a_folder_with_no_model_names_what_it_looked_for(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["convert", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "kcv_diffusion_model.h5" in err and "model_index.json" in err


def test_convert_of_a_model_directory_copies_it(model_dir, tmp_path):
    assert main(["convert", str(model_dir), "--out", str(tmp_path / "copy"), "--dtype", "float16"]) == 0
    assert json.loads((tmp_path / "copy" / "config.json").read_text())["dtype"] == "float16"


def test_preset_without_internet_fails_fast_naming_file_and_way_round(tmp_path, monkeypatch, capsys):
    # A closed local port stands in for an unreachable hub.
    fake = presets.Preset(
        "sd-test", "test", "single_file",
        (presets.RemoteFile("v1-5-pruned-emaonly.safetensors", "http://127.0.0.1:9/v1.safetensors", "0" * 64),),
    )
    monkeypatch.setitem(presets.PRESETS, "sd-test", fake)
    monkeypatch.setenv("KERASEMOTE_CACHE", str(tmp_path / "cache"))
    code = main(["generate", "x", "--model", "sd-test", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 1
    assert "v1-5-pruned-emaonly.safetensors" in err and "--weights PATH" in err and "kerasemote convert" in err


def test_preset_download_checks_the_sha256(tmp_path, monkeypatch):
    source = tmp_path / "weights.bin"
    source.write_bytes(b"not the weights")
    file = presets.RemoteFile("weights.bin", source.as_uri(), "0" * 64)
    with pytest.raises(presets.PresetUnavailable, match="sha256 expected"):
        presets.download(file, str(tmp_path / "cache"))
    good = presets.RemoteFile("weights.bin", source.as_uri(), presets.sha256_of(str(source)))
    assert open(presets.download(good, str(tmp_path / "cache")), "rb").read() == b"not the weights"


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("generate", "convert", "init-model"):
        assert command in out


def _choices(parser, path, flag):
    """The choices of ``flag`` in the sub-command ``path`` of ``parser``."""
    for name in path:
        (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parser = sub.choices[name]
    (action,) = [a for a in parser._actions if flag in a.option_strings]
    return list(action.choices)


def test_sampler_and_dtype_choices_come_from_the_library_tables(monkeypatch):
    from kerasemote import schedulers, weights
    from kerasemote.cli import build_parser

    monkeypatch.setattr(schedulers, "SAMPLERS", ["ddim", "new-sampler"])
    monkeypatch.setattr(weights, "SAVE_DTYPES", ("float32", "bfloat16"))
    parser = build_parser()
    for path in (["generate"], ["interpolate"], ["evaluate-concepts"]):
        assert _choices(parser, path, "--sampler") == ["ddim", "new-sampler"], path
    for path, flag in ((["convert"], "--dtype"), (["export", "lora"], "--dtype"),
                       (["export", "embeddings"], "--dtype"), (["train", "finetune"], "--save-dtype")):
        assert _choices(parser, path, flag) == ["float32", "bfloat16"], path


def test_mixed_precision_takes_float16_bare_or_bfloat16_by_name(model_dir, monkeypatch, capsys):
    import keras

    from kerasemote.cli import _common, build_parser

    monkeypatch.setattr(_common, "precision_warning", lambda dtype: None)
    monkeypatch.setattr("kerasemote.presets.load_model", lambda name, weights=None: name)
    parser = build_parser()
    policies = []
    try:
        for extra in ([], ["--mixed-precision"], ["--mixed-precision", "bfloat16"]):
            keras.mixed_precision.set_global_policy("float32")
            args = parser.parse_args(["generate", "a face", "--model", str(model_dir), *extra])
            assert _common.load_model_from_args(args) == str(model_dir)
            policies.append(keras.mixed_precision.global_policy().name)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert policies == ["float32", "mixed_float16", "mixed_bfloat16"]
    with pytest.raises(SystemExit):
        parser.parse_args(["generate", "a face", "--mixed-precision", "float64"])
    assert "invalid choice: 'float64'" in capsys.readouterr().err


def test_mixed_precision_warns_where_it_would_run_slower_than_float32():
    from kerasemote.cli._common import precision_warning

    assert precision_warning("bfloat16", {"avx512f", "amx_bf16"}, accelerator=False) is None
    assert precision_warning("bfloat16", {"avx512f", "avx512_bf16"}, accelerator=False) is None
    assert "emulated" in precision_warning("bfloat16", {"avx2", "fma"}, accelerator=False)
    assert precision_warning("bfloat16", set(), accelerator=False) is None  # flags unknown (not Linux): no guess
    assert "without a GPU" in precision_warning("float16", {"amx_bf16"}, accelerator=False)
    assert precision_warning("float16", {"avx2"}, accelerator=True) is None
    assert precision_warning("bfloat16", {"avx2"}, accelerator=True) is None


@pytest.mark.parity
def test_convert_a_diffusers_folder_then_generate_with_it(tmp_path):
    pytest.importorskip("diffusers")
    from reference import diffusers_parts

    from kerasemote.config import TINY

    unet, vae, text = diffusers_parts(TINY, seed=2, randomize=True)
    for name, part in (("unet", unet), ("vae", vae), ("text_encoder", text)):
        part.save_pretrained(tmp_path / "sd" / name)
    assert main(["convert", str(tmp_path / "sd"), "--out", str(tmp_path / "model")]) == 0
    assert main(["generate", "a happy emoji", "--model", str(tmp_path / "model"), "--steps", "2",
                 "--height", "32", "--width", "32", "--out", str(tmp_path / "gen")]) == 0
    image = np.asarray(Image.open(tmp_path / "gen" / "image_000.png"))
    assert image.shape == (32, 32, 3) and image.std() > 0
