"""The from-scratch recipe (kerasemote.pretrain) on a few real emoji at 16 px, a smaller-than-tiny config."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil

import numpy as np
import pytest

from kerasemote import data
from kerasemote.cli import pretrain as cli_pretrain
from kerasemote.config import KERASEMOTE_TINY, TINY
from kerasemote.model import StableDiffusion
from kerasemote.pretrain.settings import REPLACEMENT_VAE_DIR
from kerasemote.training import checkpoints
from kerasemote.pretrain import (
    EmojiRow,
    PretrainSettings,
    build_model,
    captions_for,
    latent_scaling_factor,
    opponent_colors,
    pretrain,
    read_prepared,
    reconstruction_psnr,
    save_model,
    text_to_image_set,
    train_vae,
)

# Smaller than tiny so that tracing is quick: one text layer, a 2x VAE, 16 px images, 8x8 latents.
CONFIG = TINY.replace(image_size=16, text_layers=1, vae_channels=(32, 32))
SIZE = CONFIG.image_size


def settings(**changes) -> PretrainSettings:
    base = dict(config=CONFIG, vae_steps=4, vae_batch_size=4, steps=2, batch_size=4, warmup_steps=1,
                checkpoint_every=2, validate_every=0, export_every=1, seed=3)
    return PretrainSettings(**{**base, **changes})


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("emoji16")
    records = itertools.chain(data.source_records("twemoji", limit=10), data.source_records("openmoji", limit=6))
    data.prepare(records, out, size=SIZE)
    return str(out)


def test_captions_give_name_style_emotion_and_one_empty_draw_in_ten():
    row = EmojiRow("images/x.png", "grinning face", "twemoji", "happy", "train")
    captions = captions_for(row, "<s2>")
    assert "a grinning face emoji" in captions and "grinning face emoji" in captions
    assert "a grinning face emoji in <s2> style" in captions and "a happy face emoji" in captions
    assert captions.count("") == 1 and len(captions) >= 9
    assert "an angry face emoji" in captions_for(EmojiRow("f", "angry face", "noto", "angry", "test"), None)


def test_text_to_image_set_repeats_emotion_faces_most_then_other_faces():
    rows = [EmojiRow("a", "grinning face", "noto", "happy", "train"), EmojiRow("b", "cat face", "noto", None, "train"),
            EmojiRow("c", "broccoli", "noto", None, "train")]
    images = np.arange(3, dtype=np.uint8)[:, None, None, None] * np.ones((1, 8, 8, 3), np.uint8)
    out = text_to_image_set(images, rows, {"noto": "<s0>"}, settings(emotion_repeat=5, face_repeat=2))
    assert out.files.count("a") == 5 and out.files.count("b") == 2 and out.files.count("c") == 1
    assert out.images[out.files.index("c")].max() == 2  # the pixels follow their rows


def test_text_to_image_set_balances_the_emotions_so_rare_ones_are_drawn_as_often():
    rows = [EmojiRow(f"h{i}", "grinning face", "noto", "happy", "train") for i in range(4)]
    rows += [EmojiRow("a0", "angry face", "noto", "angry", "train")]
    images = np.zeros((5, 8, 8, 3), np.uint8)
    out = text_to_image_set(images, rows, {}, settings(emotion_repeat=3))
    assert out.files.count("h0") == 3 and out.files.count("a0") == 12
    plain = text_to_image_set(images, rows, {}, settings(emotion_repeat=3, balance_emotions=False))
    assert plain.files.count("a0") == 3


@pytest.mark.slow  # trains the VAE on real emoji (~25 s)
def test_vae_stage_raises_reconstruction_psnr_on_real_emoji(prepared, tmp_path):
    images, rows, tokens = read_prepared(prepared, SIZE)
    assert len(images) >= 12 and set(tokens) == {"twemoji", "openmoji"}
    model = build_model(CONFIG, list(tokens.values()), seed=0)
    before = reconstruction_psnr(model, images)
    losses = train_vae(model, images, settings(vae_steps=40, vae_batch_size=8, vae_learning_rate=2e-3),
                       str(tmp_path), progress=False)
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])
    assert reconstruction_psnr(model, images) > before + 3.0
    assert 0.01 < latent_scaling_factor(model, images) < 100.0


@pytest.mark.slow  # 40-100 s on 2 cores (the fast suite stays under 15 minutes)
def test_vae_stage_resumed_from_a_checkpoint_matches_the_uninterrupted_run(prepared, tmp_path):
    images, _, tokens = read_prepared(prepared, SIZE)
    whole = build_model(CONFIG, list(tokens.values()), seed=0)
    full = train_vae(whole, images, settings(vae_steps=4), str(tmp_path / "whole"), progress=False)
    shutil.copytree(tmp_path / "whole", tmp_path / "part")
    os.remove(checkpoints.checkpoint_path(str(tmp_path / "part"), 4))  # as if stopped after step 2
    fresh = build_model(CONFIG, list(tokens.values()), seed=1)  # the state comes only from the checkpoint
    resumed = train_vae(fresh, images, settings(vae_steps=4), str(tmp_path / "part"), progress=False)
    assert resumed == full
    for a, b in zip(whole.vae_decoder.weights + whole.vae_encoder.weights,
                    fresh.vae_decoder.weights + fresh.vae_encoder.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_vae_resume_with_other_settings_names_the_file_and_key(prepared, tmp_path):
    images, _, tokens = read_prepared(prepared, SIZE)
    model = build_model(CONFIG, list(tokens.values()), seed=0)
    train_vae(model, images, settings(vae_steps=2), str(tmp_path), progress=False)
    with pytest.raises(ValueError, match=r"step-00000002\.npz: key 'settings.kl_weight' expected 0.5"):
        train_vae(model, images, settings(vae_steps=4, kl_weight=0.5), str(tmp_path), progress=False)


def test_opponent_colors_tell_green_from_grey_of_the_same_brightness():
    green = np.zeros((1, 8, 8, 3), np.float32)
    green[..., 1] = 0.6
    grey = np.full((1, 8, 8, 3), 0.2, np.float32)  # the same mean brightness
    axes = opponent_colors(green, 4).numpy()
    assert axes.shape == (1, 2, 2, 2)
    np.testing.assert_allclose(axes[..., 0], 0.6)  # green - (red + blue) / 2
    np.testing.assert_allclose(axes[..., 1], 0.0)  # red - blue
    np.testing.assert_allclose(opponent_colors(grey, 4).numpy(), 0.0, atol=1e-7)


def test_color_weight_is_a_resume_fact_only_when_set():
    assert "color_weight" not in settings().vae_facts()  # checkpoints from before the term still resume
    assert settings(color_weight=2.0).vae_facts(REPLACEMENT_VAE_DIR)["color_weight"] == 2.0


def test_replacement_vae_resume_facts_keep_their_on_disk_keys():
    # Checkpoints in vae_new/ and model manifests (weights/kerasemote-tiny) carry these keys; resume compares them.
    facts = settings(replace_vae_steps=2, latent_anchor_weight=0.3).vae_facts(REPLACEMENT_VAE_DIR)
    assert facts["new_vae_of_warm_start"] is True and facts["latent_anchor"] == 0.3
    assert REPLACEMENT_VAE_DIR == "vae_new"


def _pretrain_args(*flags: str):
    parser = argparse.ArgumentParser(prog="kerasemote")
    cli_pretrain.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["pretrain", "--data", "d", "--out", "o", *flags]), parser


def test_pretrain_cli_takes_the_earlier_flag_spellings_as_hidden_aliases(capsys):
    new, _ = _pretrain_args("--replace-vae-steps", "5", "--latent-anchor-weight", "0.3")
    old, parser = _pretrain_args("--new-vae-steps", "5", "--latent-anchor", "0.3")
    assert (new.replace_vae_steps, new.latent_anchor_weight) == (5, 0.3)
    assert (old.replace_vae_steps, old.latent_anchor_weight) == (5, 0.3)
    unset, _ = _pretrain_args()
    assert (unset.replace_vae_steps, unset.latent_anchor_weight) == (0, PretrainSettings().latent_anchor_weight)
    with pytest.raises(SystemExit):
        parser.parse_args(["pretrain", "--help"])
    shown = capsys.readouterr().out
    assert "--replace-vae-steps" in shown and "--latent-anchor-weight" in shown
    assert "--new-vae-steps" not in shown and "--latent-anchor " not in shown


def _latent_drift(model, anchor, images) -> float:
    x = images.astype("float32") / 127.5 - 1.0
    return float(np.mean(np.square(model.vae_encoder(x)[..., :4] - anchor(x)[..., :4])))


@pytest.mark.slow
def test_replacement_vae_anchor_holds_its_latents_near_the_warm_starts(prepared, tmp_path):
    images, _, tokens = read_prepared(prepared, SIZE)
    drifts = {}
    for weight in (0.0, 100.0):
        model = build_model(CONFIG, list(tokens.values()), seed=0)
        anchor = build_model(CONFIG, list(tokens.values()), seed=1).vae_encoder  # the old VAE's encoder
        anchor.trainable = False
        stage = settings(replace_vae_steps=20, vae_batch_size=8, vae_learning_rate=2e-3, latent_anchor_weight=weight)
        losses = train_vae(model, images, stage, str(tmp_path / str(weight)), progress=False, anchor_encoder=anchor)
        assert len(losses) == 20 and all(np.isfinite(losses))
        drifts[weight] = _latent_drift(model, anchor, images)
    assert drifts[100.0] < 0.2 * drifts[0.0]  # without the anchor the new latents lie anywhere


def test_replace_vae_needs_a_warm_start_that_it_does_not_overwrite(prepared, tmp_path):
    with pytest.raises(ValueError, match="--init-from"):
        pretrain(prepared, str(tmp_path / "a"), settings(replace_vae_steps=2), progress=False)
    with pytest.raises(ValueError, match="must not be overwritten"):
        pretrain(prepared, str(tmp_path / "a"), settings(replace_vae_steps=2), init_from=str(tmp_path / "m"),
                 export_dir=str(tmp_path / "m/"), progress=False)


@pytest.mark.slow
def test_replace_vae_keeps_the_warm_starts_text_encoder_and_unet(prepared, tmp_path):
    _, _, tokens = read_prepared(prepared, SIZE)
    start_dir, out = str(tmp_path / "start"), str(tmp_path / "run")
    save_model(build_model(CONFIG, list(tokens.values()), seed=0), start_dir, 2, dtype="float16",
               extra={"vae": {"scaling_factor": 1.0, "steps": 4}})
    grouped = CONFIG.replace(vae_norm_groups=8)  # the new VAE may have other VAE sizes
    with pytest.raises(ValueError, match=r"differs in vae_norm_groups.*--replace-vae-steps"):
        pretrain(prepared, out, settings(config=grouped, steps=2), init_from=start_dir, progress=False)
    stage = settings(config=grouped, steps=2, replace_vae_steps=3, color_weight=1.0)
    result = pretrain(prepared, out, stage, init_from=start_dir, progress=False)
    start, model = StableDiffusion.load(start_dir), StableDiffusion.load(result.model_dir)
    same = lambda a, b: all(np.array_equal(x.numpy(), y.numpy()) for x, y in zip(a.weights, b.weights))  # noqa: E731
    assert same(model.unet, start.unet) and same(model.text_encoder, start.text_encoder)
    assert model.config.vae_norm_groups == 8 and not same(model.vae_encoder, start.vae_encoder)
    summary = json.loads(open(os.path.join(out, "vae_new", "vae_new.json")).read())
    assert summary["steps"] == 3 and summary["test_psnr_db_before"] is not None
    assert result.vae["new_vae_of_warm_start"] and result.vae["previous"]["steps"] == 4
    assert model.config.scaling_factor == pytest.approx(summary["scaling_factor"])  # measured on the new latents
    files = checkpoints.list_checkpoints(os.path.join(out, "vae_new"))
    again = pretrain(prepared, out, stage, init_from=start_dir, resume=True, progress=False)
    assert checkpoints.list_checkpoints(os.path.join(out, "vae_new")) == files  # read back, not trained again
    assert same(StableDiffusion.load(again.model_dir).vae_encoder, model.vae_encoder)


@pytest.fixture(scope="module")
def first_run(prepared, tmp_path_factory):
    """Both stages from scratch: 4 VAE steps, 2 text-to-image steps."""
    out = str(tmp_path_factory.mktemp("first") / "run")
    return out, pretrain(prepared, out, settings(), progress=False)


@pytest.mark.slow  # 40-100 s on 2 cores (the fast suite stays under 15 minutes)
def test_pretrain_writes_a_loadable_model_and_resumes_both_stages(prepared, first_run, tmp_path):
    out, export = str(tmp_path / "run"), str(tmp_path / "export")
    shutil.copytree(first_run[0], out)
    first = first_run[1]
    assert first.step == 2 and first.vae["steps"] == 4 and first.vae["test_psnr_db"] is not None
    vae_files = checkpoints.list_checkpoints(os.path.join(out, "vae"))
    second = pretrain(prepared, out, settings(steps=3), export_dir=export, progress=False)
    assert second.step == 3 and second.losses[:2] == first.losses
    assert checkpoints.list_checkpoints(os.path.join(out, "vae")) == vae_files  # the VAE is not trained again
    model = StableDiffusion.load(export)
    manifest = json.loads(open(os.path.join(export, "config.json")).read())
    assert manifest["training"]["steps"] == 3 and manifest["dtype"] == "float16" and manifest["vae"]["steps"] == 4
    assert model.config.scaling_factor == pytest.approx(first.vae["scaling_factor"])
    assert set(model.tokenizer.placeholders) == {"<s0>", "<s1>"}
    assert model.generate("a grinning face emoji in <s1> style", steps=2, seed=0).shape == (1, SIZE, SIZE, 3)


@pytest.mark.slow
def test_warm_start_continues_the_step_count_from_the_model_directory(prepared, first_run, tmp_path):
    first = first_run[1]
    warm = pretrain(prepared, str(tmp_path / "b"), settings(steps=3), init_from=first.model_dir, progress=False)
    assert warm.step == 3 and len(warm.losses) == 1
    assert not os.path.exists(tmp_path / "b" / "vae")


def test_kerasemote_tiny_config_has_16x16_latents_and_fits_under_50_mb_in_float16():
    assert KERASEMOTE_TINY.image_size // KERASEMOTE_TINY.vae_downsample == 16
    # Every VAE GroupNorm group holds several channels: one channel a group (SD's 32 groups on a
    # 32-channel level) normalized each channel alone and the first VAE lost green.
    assert min(KERASEMOTE_TINY.vae_channels) // KERASEMOTE_TINY.vae_norm_groups >= 4
    model = StableDiffusion.random(KERASEMOTE_TINY, seed=0)
    count = sum(int(np.prod(v.shape)) for m in model.parts.values() for v in m.weights)
    assert 2 * count < 50e6


@pytest.mark.slow  # 40-100 s on 2 cores (the fast suite stays under 15 minutes)
def test_decoder_stage_trains_only_the_decoder_and_keeps_the_latents(prepared, first_run, tmp_path):
    first = first_run[1]
    start = StableDiffusion.load(first.model_dir)
    out = str(tmp_path / "b")
    result = pretrain(prepared, out, settings(steps=2, decoder_steps=3), init_from=first.model_dir, progress=False)
    model = StableDiffusion.load(result.model_dir)
    same = lambda a, b: all(np.array_equal(x.numpy(), y.numpy()) for x, y in zip(a.weights, b.weights))  # noqa: E731
    assert same(model.vae_encoder, start.vae_encoder)  # the latent space is unchanged
    assert not same(model.vae_decoder, start.vae_decoder)
    assert result.vae["decoder_steps"] == 3 and result.vae["test_psnr_db"] is not None
    summary = json.loads(open(os.path.join(out, "vae_decoder", "vae_decoder.json")).read())
    assert summary["steps"] == 3 and summary["test_psnr_db_before"] is not None
    assert [step for step, _ in checkpoints.list_checkpoints(os.path.join(out, "vae_decoder"))][-1] == 3


@pytest.mark.slow  # shares first_run (40-100 s on 2 cores)
def test_a_decoder_refresh_of_a_warm_start_skips_stage_2_and_writes_the_model(prepared, first_run, tmp_path):
    first = first_run[1]
    start = StableDiffusion.load(first.model_dir)
    out, export = str(tmp_path / "b"), str(tmp_path / "export")
    result = pretrain(prepared, out, settings(steps=first.step, decoder_steps=2), init_from=first.model_dir,
                      export_dir=export, progress=False)
    assert result.step == first.step and result.losses == []
    assert not os.path.exists(os.path.join(out, "text_to_image", "checkpoints"))  # the text-to-image stage did not run
    for folder in (result.model_dir, export):
        model = StableDiffusion.load(folder)
        manifest = json.loads(open(os.path.join(folder, "config.json")).read())
        assert manifest["training"]["steps"] == first.step and manifest["vae"]["decoder_steps"] == 2
        for part in ("text_encoder", "unet", "vae_encoder"):
            for a, b in zip(getattr(model, part).weights, getattr(start, part).weights):
                np.testing.assert_array_equal(a.numpy(), b.numpy())
        assert any(not np.array_equal(a.numpy(), b.numpy())
                   for a, b in zip(model.vae_decoder.weights, start.vae_decoder.weights))
