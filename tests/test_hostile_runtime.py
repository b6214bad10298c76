"""Hostile options and failing systems at run time: each is refused with one line naming the option or file,
exit code 1 and no traceback; a generation whose latents stop being finite stops before decoding."""

from __future__ import annotations

import errno
import json
import re
import zipfile

import numpy as np
import pytest

from kerasemote import pipeline, storage_gcs
from kerasemote.cli import _common, main
from kerasemote.model import StableDiffusion


@pytest.fixture(scope="module")
def tiny_model():
    return StableDiffusion.random("tiny", seed=0)


@pytest.fixture(autouse=True)
def _commands_use_the_tiny_model(tiny_model, monkeypatch):
    """Every command that loads a model gets the tiny one, without reading it from disk each time."""
    for module in ("generate", "interpolate", "classify"):
        monkeypatch.setattr(f"kerasemote.cli.{module}.load_model_from_args", lambda args: tiny_model)


@pytest.fixture(scope="module")
def nan_noise(tmp_path_factory):
    path = tmp_path_factory.mktemp("noise") / "nan_noise.npy"
    noise = np.zeros((1, 8, 8, 4), "float32")
    noise[0, 1, 2, 3] = np.nan
    np.save(path, noise)
    return str(path)


def _one_line_error(capsys, command: str) -> str:
    # Progress bars share stderr; what the command says besides them is the one error line.
    lines = [line for line in re.split(r"[\r\n]", capsys.readouterr().err)
             if line.strip() and not line.startswith("sampling")]
    assert not any("Traceback" in line for line in lines), lines
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"kerasemote {command}: error: "), lines
    return lines[0]


# (words after `kerasemote`, words the one-line error must hold); {model} is a tiny model directory.
HOSTILE_OPTIONS = [
    (["generate", "x", "--guidance", "nan"], ["--guidance", "finite", "nan"]),
    (["generate", "x", "--guidance=-inf"], ["--guidance", "finite", "-inf"]),
    (["generate", "x", "--lora", "style.npz:1e999"], ["--lora style.npz:1e999", "finite", "inf"]),
    (["generate", "x", "--num-images", "0"], ["--num-images", "at least 1", "0"]),
    (["generate", "x", "--num-images", "-3"], ["--num-images", "-3"]),
    (["generate", "x", "--height", "0"], ["--height", "2048", "0"]),
    (["generate", "x", "--width", "1000000"], ["--width", "2048", "1000000"]),
    (["generate", "x", "--height", "30"], ["--height", "in multiples of 4", "30"]),  # the tiny VAE's factor
    (["generate", "x", "--steps", "0"], ["--steps", "at least 1", "0"]),
    (["generate", "x", "--strength", "1.5"], ["--strength", "[0, 1]", "1.5"]),
    (["generate", "x", "--strength", "nan"], ["--strength", "finite"]),
    (["generate", "x", "--eta", "nan"], ["--eta", "finite"]),
    (["generate", "x", "--num-images", "1000000", "--height", "2048", "--width", "2048"],
     ["--num-images", "GiB of memory", "1000000"]),
    (["interpolate", "--prompts", "a", "b", "--guidance", "inf"], ["--guidance", "finite"]),
    (["interpolate", "--prompts", "a", "b", "--width", "0"], ["--width", "0"]),
    (["interpolate", "--prompts", "a", "b", "--num", "1"], ["--num", "at least 2", "1"]),
    (["evaluate-concepts", "--classifier", "c", "--concepts", "happy", "--n", "0"], ["--n", "at least 1"]),
    (["evaluate-concepts", "--classifier", "c", "--concepts", "happy", "--guidance", "nan"], ["--guidance"]),
]


@pytest.mark.parametrize("words, expected", HOSTILE_OPTIONS, ids=[" ".join(w) for w, _ in HOSTILE_OPTIONS])
def test_a_hostile_option_is_refused_with_one_line_naming_it(words, expected, tmp_path, capsys):
    code = main([*words, "--out", str(tmp_path / "out")])
    err = _one_line_error(capsys, words[0])
    assert code == 1
    for word in expected:
        assert word in err, (word, err)
    assert not (tmp_path / "out").exists()


def test_non_finite_init_noise_is_refused_naming_the_file(nan_noise, tmp_path, capsys):
    code = main(["generate", "x", "--steps", "1", "--init-noise", nan_noise,
                 "--height", "32", "--width", "32", "--out", str(tmp_path / "out")])
    err = _one_line_error(capsys, "generate")
    assert code == 1 and "--init-noise" in err and "nan_noise.npy" in err and "NaN" in err
    assert not (tmp_path / "out").exists()


def test_the_size_limits_live_in_the_pipeline_and_the_cli_names_its_options():
    with pytest.raises(ValueError, match=r"^width: .*2048 pixels, found 4096"):
        pipeline.check_generation(steps=1, guidance=7.5, width=pipeline.MAX_IMAGE_SIDE * 2)
    with pytest.raises(ValueError, match=r"^--num-images: .*found 0"):
        pipeline.check_generation(steps=1, guidance=7.5, num_images=0, name=_common.option_flag)
    pipeline.check_generation(steps=1, guidance=7.5, num_images=2, height=64, width=64, factor=8)


# ---------------------------------------------------------------------- latents that stop being finite


def _no_decoding(model, monkeypatch):
    def decode(latents):
        raise AssertionError("decoded non-finite latents")

    monkeypatch.setattr(model, "decode_latents", decode)


def test_a_nan_unet_weight_stops_generate_before_decoding_and_names_the_weight(tiny_model, monkeypatch):
    variable = tiny_model.unet.weights[3]
    kept = variable.numpy()
    variable.assign(np.full(variable.shape, np.nan, "float32"))
    _no_decoding(tiny_model, monkeypatch)
    try:
        with pytest.raises(pipeline.NonFiniteError,
                           match=rf"became NaN or infinite.*UNet weight {variable.path} holds NaN.*--lora"):
            tiny_model.generate("x", steps=2, seed=0, height=32, width=32, progress=False)
    finally:
        variable.assign(kept)


def test_non_finite_starting_latents_or_prompts_are_refused_before_sampling(tiny_model, monkeypatch):
    _no_decoding(tiny_model, monkeypatch)
    monkeypatch.setattr(tiny_model, "unet", None)  # sampling would fail on it: the refusal comes first
    noise = np.zeros((1, 8, 8, 4), "float32")
    noise[0, 0, 0, 0] = np.inf
    with pytest.raises(pipeline.NonFiniteError, match="init_latents holds NaN or infinite"):
        tiny_model.generate("x", steps=2, init_latents=noise, height=32, width=32, progress=False)
    context = np.full((1, 77, tiny_model.config.text_width), np.nan, "float32")
    with pytest.raises(pipeline.NonFiniteError, match="encoded prompt holds NaN.*token embedding"):
        tiny_model.generate(context=context, steps=2, height=32, width=32, progress=False)


def test_a_nan_latent_from_sampling_fails_the_cli_with_one_line(tmp_path, monkeypatch, capsys):
    from kerasemote.schedulers.ddim import DDIMSampler

    step = DDIMSampler.step
    monkeypatch.setattr(DDIMSampler, "step", lambda self, *a, **k: step(self, *a, **k) * np.nan)
    code = main(["generate", "x", "--steps", "1", "--height", "32", "--width", "32", "--out", str(tmp_path / "out")])
    err = _one_line_error(capsys, "generate")
    assert code == 1 and "NaN or infinite during sampling" in err
    assert not list(tmp_path.glob("out/*.png"))


# ---------------------------------------------------------------------- every error class a command can raise


def _raising(error: BaseException):
    def run(args):
        raise error

    return run


def _safetensor_error():
    safetensors = pytest.importorskip("safetensors")
    return safetensors.SafetensorError("Error while deserializing header: HeaderTooLarge")


def _op_error():
    import tensorflow as tf

    return tf.errors.InvalidArgumentError(None, None, "Incompatible shapes: [1,8] vs. [1,9]\n\t [[node add]]")


# (the error a command raises, words its one line must hold); {out} is the command's --out.
ERRORS = [
    ("ENOSPC", lambda: OSError(errno.ENOSPC, "No space left on device"), ["no space left", "{out}"]),
    ("read-only", lambda: PermissionError(errno.EROFS, "Read-only file system", "/ro/out/image_000.png"),
     ["/ro/out/image_000.png: Read-only file system"]),
    ("EOFError", lambda: EOFError("No data left in file"), ["EOFError: No data left in file"]),
    ("BadZipFile", lambda: zipfile.BadZipFile("File is not a zip file"), ["BadZipFile: File is not a zip file"]),
    ("JSONDecodeError", lambda: json.JSONDecodeError("Expecting value", "[", 1), ["JSONDecodeError: Expecting"]),
    ("UnicodeDecodeError", lambda: UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
     ["UnicodeDecodeError", "0xff"]),
    ("KeyError", lambda: KeyError("config"), ["missing key 'config'"]),
    ("StorageAuthError", lambda: storage_gcs.StorageAuthError("Access to gs://b/x was refused (403)."),
     ["gs://b/x was refused"]),
    ("MemoryError", MemoryError, ["MemoryError"]),
    ("unexpected", lambda: AttributeError("'list' object has no attribute 'get'"),
     ["AttributeError: 'list' object", "--debug"]),
    ("SafetensorError", _safetensor_error, ["SafetensorError: Error while deserializing header: HeaderTooLarge"]),
    ("OpError", _op_error, ["InvalidArgumentError: Incompatible shapes: [1,8] vs. [1,9]"]),
]


@pytest.mark.parametrize("make_error, expected", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_an_error_a_command_raises_prints_as_one_line(make_error, expected, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("kerasemote.cli.model.run_init_model", _raising(make_error()))
    out = str(tmp_path / "model")
    assert main(["init-model", "--out", out]) == 1
    err = _one_line_error(capsys, "init-model")
    for word in expected:
        assert word.format(out=out) in err, (word, err)


def test_debug_shows_the_traceback_and_interrupts_pass_through(tmp_path, monkeypatch):
    monkeypatch.setattr("kerasemote.cli.model.run_init_model", _raising(EOFError("No data left in file")))
    with pytest.raises(EOFError):
        main(["--debug", "init-model", "--out", str(tmp_path / "m")])
    monkeypatch.setattr("kerasemote.cli.model.run_init_model", _raising(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        main(["init-model", "--out", str(tmp_path / "m")])


def test_an_output_that_cannot_be_written_fails_before_the_work(tmp_path, monkeypatch, capsys):
    ran = []
    monkeypatch.setattr("kerasemote.cli.model.run_init_model", lambda args: ran.append(args) or 0)
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    real_access = _common.os.access
    monkeypatch.setattr(_common.os, "access", lambda p, mode: p != str(read_only) and real_access(p, mode))
    assert main(["init-model", "--out", str(read_only / "model")]) == 1
    err = _one_line_error(capsys, "init-model")
    assert f"--out {read_only / 'model'}" in err and "read-only" in err and not ran


# ---------------------------------------------------------------------- gs:// outputs


# (command words, the module function that does its work)
GCS_COMMANDS = [
    (["generate", "x"], "generate.run"),
    (["convert", "model"], "model.run_convert"),
    (["init-model"], "model.run_init_model"),
    (["demo"], "demo.run"),
    (["classify", "train", "--data", "faces"], "classify.run_train"),
    (["train", "textual-inversion", "--data", "faces", "--steps", "1"], "train.run_textual_inversion"),
    (["pretrain", "--data", "faces"], "pretrain.run"),
]


@pytest.mark.parametrize("words, work", GCS_COMMANDS, ids=[w for _, w in GCS_COMMANDS])
def test_a_gs_output_without_credentials_fails_before_the_work(words, work, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-such-key.json"))
    storage_gcs._make_client.cache_clear()
    ran = []
    monkeypatch.setattr(f"kerasemote.cli.{work}", lambda args: ran.append(args) or 0)
    try:
        code = main([*words, "--out", "gs://kerasemote-test/run"])
    finally:
        storage_gcs._make_client.cache_clear()
    err = _one_line_error(capsys, words[0])
    assert code == 1 and "gs://kerasemote-test/run" in err and "credentials" in err and not ran


def test_a_writable_gs_output_passes_the_probe_and_keeps_no_object(gcs_bucket):
    from kerasemote import storage

    _common.check_output_writable(gcs_bucket + "/run")
    assert not storage.exists(gcs_bucket + "/run")


def test_a_gs_output_the_account_may_not_write_is_refused_naming_it(gcs_bucket, monkeypatch):
    from google.api_core import exceptions

    def forbidden(self, *args, **kwargs):
        raise exceptions.Forbidden("caller does not have storage.objects.create access")

    monkeypatch.setattr("google.cloud.storage.Blob.upload_from_string", forbidden)
    with pytest.raises(storage_gcs.StorageAuthError, match=f"Access to {gcs_bucket}/run was refused"):
        _common.check_output_writable(gcs_bucket + "/run")
