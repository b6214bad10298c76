"""The recipe: its stages in order, each resumable from the run folder, and ``pretrain`` that runs them.

Stages (folders inside the run folder ``OUT``)::

    train_autoencoder    OUT/vae/            the VAE from random weights (L1 + L2 + KL); OUT/vae/vae.json
                                             holds its scaling factor and test PSNR
    replace_vae          OUT/vae_new/        with a warm start: a new VAE (``--config``'s VAE sizes) whose
                                             latents are held near the warm start's, so its text encoder
                                             and UNet stay useful
    tune_decoder         OUT/vae_decoder/    the decoder alone, encoder frozen, so the latents (and a
                                             UNet trained on them) stay valid
    train_text_to_image  OUT/text_to_image/  text encoder + UNet on cached latents (the shared loop);
                                             OUT/text_to_image/model/ is the finished model (float16)
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Mapping, Sequence

import keras
import numpy as np

from kerasemote import storage
from kerasemote.config import ModelConfig
from kerasemote.model import StableDiffusion
from kerasemote.pretrain.data import EmojiRow, read_prepared, text_to_image_set, train_and_test
from kerasemote.pretrain.settings import (
    DECODER_DIR,
    DECODER_SUMMARY,
    MODEL_DIR,
    REPLACEMENT_VAE_DIR,
    REPLACEMENT_VAE_SUMMARY,
    TEXT_TO_IMAGE_DIR,
    VAE_DIR,
    VAE_SUMMARY,
    PretrainResult,
    PretrainSettings,
)
from kerasemote.pretrain.text_to_image import TextToImage, copy_model, exporter, save_model, text_to_image_config
from kerasemote.pretrain.vae import latent_scaling_factor, load_vae_checkpoint, reconstruction_psnr, train_vae
from kerasemote.training.loop import train

logger = logging.getLogger(__name__)

# What a new VAE (replace_vae) may change in a warm start's config.
VAE_FIELDS = ("vae_channels", "vae_layers_per_block", "vae_norm_groups", "vae_norm_eps", "scaling_factor")


def build_model(config: ModelConfig, style_tokens: Sequence[str], seed: int) -> StableDiffusion:
    """A random model whose tokenizer knows the vendor style tokens (``<s0>``...)."""
    model = StableDiffusion.random(config, seed=seed)
    rng = np.random.default_rng(seed)
    for token in sorted(style_tokens):
        model.add_placeholder(token, 1, rng.normal(0.0, 0.02, (config.text_width,)).astype("float32"))
    return model


def pretrain(data_dir: str, out_dir: str, settings: PretrainSettings, resume: bool = True,
             init_from: str | None = None, export_dir: str | None = None, progress: bool = True) -> PretrainResult:
    """Run (or continue) the recipe's stages; see the module docstring for the folder layout.

    Args:
        data_dir: a prepared directory (``kerasemote data prepare ... --size 64``).
        out_dir: the run folder.
        settings: the recipe.
        resume: continue each stage from its newest checkpoint in ``out_dir``.
        init_from: warm start from a model directory written by this recipe (e.g. the
            committed ``weights/kerasemote-tiny``): the VAE is not trained from random weights,
            the text-to-image stage starts from its weights with a fresh optimizer and
            continues its step count. When ``settings.steps`` is not past its step count,
            the text-to-image stage is skipped and the model (with a decoder tuned by
            ``decoder_steps``) is written as it is. With ``settings.replace_vae_steps`` a
            new VAE replaces its own first and the text-to-image stage continues on the new
            latents.
        export_dir: also write the model directory here (float16) every ``export_every``
            steps and at the end.

    Returns:
        The PretrainResult.

    Example:
        >>> settings = PretrainSettings(vae_steps=1500, steps=4000)
        >>> result = pretrain("emoji64/", "runs/pretrain", settings, resume=True)
        >>> model = StableDiffusion.load(result.model_dir)
    """
    config = settings.model_config
    if settings.replace_vae_steps and not init_from:
        raise ValueError("replace_vae_steps (--replace-vae-steps) replaces a warm start's VAE; give init_from "
                         "(--init-from MODEL_DIR), or train a VAE from scratch with vae_steps (--vae-steps).")
    if settings.replace_vae_steps and export_dir and storage.same_path(init_from, export_dir):
        raise ValueError(f"--export {export_dir} is the --init-from folder: with --replace-vae-steps the warm "
                         "start's encoder is the anchor of a resumed run, so it must not be overwritten; "
                         "export elsewhere and copy the folder when the run is done.")
    images, rows, tokens = read_prepared(data_dir, config.image_size)
    if init_from:
        model, vae, initial = warm_start(init_from, config, new_vae=bool(settings.replace_vae_steps))
        if settings.replace_vae_steps:
            model, vae = replace_vae(model, images, rows, settings, storage.join(out_dir, REPLACEMENT_VAE_DIR),
                                     vae, resume, progress)
    else:
        model = build_model(config, list(tokens.values()), settings.seed)
        vae = train_autoencoder(model, images, rows, settings, storage.join(out_dir, VAE_DIR), resume, progress)
        initial = 0
        model.config = model.config.replace(scaling_factor=vae["scaling_factor"])
    if settings.decoder_steps:
        vae = tune_decoder(model, images, rows, settings, storage.join(out_dir, DECODER_DIR), vae, resume, progress)
    run_dir = storage.join(out_dir, TEXT_TO_IMAGE_DIR)
    if initial and settings.steps <= initial:  # a warm start with no text-to-image step left (a decoder refresh)
        logger.info("Text-to-image: the warm start is at step %d of %d already; writing the model.", initial,
                    settings.steps)
        model_dir = storage.join(run_dir, MODEL_DIR)
        for target in [model_dir] + ([export_dir] if export_dir else []):
            save_model(model, target, initial, None, "float16", {"vae": dict(vae)})
        return PretrainResult(vae=vae, step=initial, losses=[], model_dir=model_dir)
    return train_text_to_image(model, images, rows, tokens, settings, run_dir, vae, initial, resume, export_dir,
                               progress)


def train_text_to_image(model: StableDiffusion, images: np.ndarray, rows: Sequence[EmojiRow],
                        tokens: Mapping[str, str], settings: PretrainSettings, run_dir: str, vae: Mapping[str, Any],
                        initial: int = 0, resume: bool = True, export_dir: str | None = None,
                        progress: bool = True) -> PretrainResult:
    """Train text encoder + UNet with the shared loop on the oversampled, captioned images.

    Args:
        vae: the facts of the VAE the latents come from (written into every model manifest).
        initial: steps already done by warm-start weights.
    """
    data = text_to_image_set(images, rows, tokens, settings)
    logger.info("Text-to-image: %d examples (%d images, faces repeated).", len(data), len(rows))
    strategy = TextToImage(initial_steps=initial)
    callbacks = [exporter(model, export_dir, settings.export_every, vae)] if export_dir else []
    result = train(model, strategy, data, text_to_image_config(settings, progress), run_dir, resume=resume,
                   callbacks=callbacks)
    model_dir = storage.join(run_dir, MODEL_DIR)
    if export_dir and result.outputs:
        copy_model(model_dir, export_dir, vae)
    return PretrainResult(vae=dict(vae), step=result.step, losses=result.losses, model_dir=model_dir)


def _finished_stage(model, stage_dir: str, summary_path: str, steps: int, flag: str) -> dict[str, Any] | None:
    """The summary of a VAE stage that ended before, its weights put into ``model``; None if it has not ended.

    Raises:
        ValueError: it ended with another step count (the text-to-image stage was built on that VAE).
    """
    if not storage.exists(summary_path):
        return None
    summary = json.loads(storage.read_bytes(summary_path))
    if summary["steps"] != steps:
        raise ValueError(f"{summary_path}: key 'steps' expected {steps} ({flag}), found "
                         f"{summary['steps']}; the text-to-image stage was built on that VAE, so it cannot "
                         "change now.")
    load_vae_checkpoint(model, stage_dir)
    return summary


def _write_summary(path: str, summary: Mapping[str, Any]) -> None:
    storage.write_bytes(path, json.dumps(summary, indent=2).encode())


def train_autoencoder(model: StableDiffusion, images: np.ndarray, rows: Sequence[EmojiRow],
                      settings: PretrainSettings, vae_dir: str, resume: bool = True,
                      progress: bool = True) -> dict[str, Any]:
    """Train (or finish training) the VAE of ``model`` from random weights on the train split.

    Returns:
        The stage's summary (``vae.json``: steps, loss, scaling factor, test PSNR), written
        once when the stage ends and read back (with the weights) by a resumed run.
    """
    summary_path = storage.join(vae_dir, VAE_SUMMARY)
    if resume and (summary := _finished_stage(model, vae_dir, summary_path, settings.vae_steps, "--vae-steps")):
        return summary
    train_images, test = train_and_test(images, rows)
    started = time.time()
    losses = train_vae(model, train_images, settings, vae_dir, resume, progress)
    summary = {
        "steps": settings.vae_steps,
        "final_loss": float(np.mean(losses[-50:])),
        "scaling_factor": latent_scaling_factor(model, train_images),
        "test_psnr_db": reconstruction_psnr(model, test) if len(test) else None,
        "test_images": int(len(test)),
        "seconds_this_session": round(time.time() - started, 1),
    }
    _write_summary(summary_path, summary)
    return summary


def _psnr_so_far(model: StableDiffusion, vae: Mapping[str, Any], test: np.ndarray) -> float | None:
    """Test PSNR of the VAE before a stage: from its facts, else measured (None without test images)."""
    before = vae.get("test_psnr_db")
    return reconstruction_psnr(model, test) if before is None and len(test) else before


def replace_vae(warm: StableDiffusion, images: np.ndarray, rows: Sequence[EmojiRow], settings: PretrainSettings,
                new_dir: str, vae: Mapping[str, Any], resume: bool = True,
                progress: bool = True) -> tuple[StableDiffusion, dict[str, Any]]:
    """A new VAE for the warm start's text encoder and UNet, its latents anchored to the old VAE's.

    Returns:
        The model with the new VAE (trained, or read back when the stage finished before)
        and the VAE facts (``previous``: ``vae``); the scaling factor is measured anew on
        the new latents.
    """
    summary_path = storage.join(new_dir, REPLACEMENT_VAE_SUMMARY)
    train_images, test = train_and_test(images, rows)
    keras.utils.set_random_seed(settings.seed)
    model = StableDiffusion(settings.model_config.replace(scaling_factor=warm.config.scaling_factor),
                            warm.tokenizer, warm.text_encoder, warm.unet)  # a random VAE of the new sizes
    summary = (_finished_stage(model, new_dir, summary_path, settings.replace_vae_steps, "--replace-vae-steps")
               if resume else None)
    if summary is None:
        anchor = warm.vae_encoder
        anchor.trainable = False
        before = _psnr_so_far(warm, vae, test)
        started = time.time()
        losses = train_vae(model, train_images, settings, new_dir, resume, progress, anchor_encoder=anchor)
        summary = {
            "steps": settings.replace_vae_steps,
            "latent_anchor": settings.latent_anchor_weight,  # on-disk key
            "color_weight": settings.color_weight,
            "final_loss": float(np.mean(losses[-50:])),
            "scaling_factor_before": float(warm.config.scaling_factor),
            "scaling_factor": latent_scaling_factor(model, train_images),
            "test_psnr_db_before": before,
            "test_psnr_db": reconstruction_psnr(model, test) if len(test) else None,
            "seconds_this_session": round(time.time() - started, 1),
        }
        _write_summary(summary_path, summary)
        logger.info("New VAE: test PSNR %s -> %s dB; scaling factor %.4f -> %.4f.", before,
                    summary["test_psnr_db"], summary["scaling_factor_before"], summary["scaling_factor"])
    model.config = model.config.replace(scaling_factor=summary["scaling_factor"])
    facts = {"steps": settings.replace_vae_steps, "new_vae_of_warm_start": True,
             "latent_anchor": settings.latent_anchor_weight, "color_weight": settings.color_weight,
             "scaling_factor": summary["scaling_factor"], "test_psnr_db": summary["test_psnr_db"],
             "previous": dict(vae)}
    return model, facts


def tune_decoder(model: StableDiffusion, images: np.ndarray, rows: Sequence[EmojiRow], settings: PretrainSettings,
                 decoder_dir: str, vae: Mapping[str, Any], resume: bool = True,
                 progress: bool = True) -> dict[str, Any]:
    """Fine-tune the decoder alone (or finish doing so), encoder frozen; returns ``vae`` with its new facts."""
    train_images, test = train_and_test(images, rows)
    before = _psnr_so_far(model, vae, test)
    started = time.time()
    losses = train_vae(model, train_images, settings, decoder_dir, resume, progress, decoder_only=True)
    summary = {
        "steps": settings.decoder_steps,
        "final_loss": float(np.mean(losses[-50:])),
        "test_psnr_db_before": before,
        "test_psnr_db": reconstruction_psnr(model, test) if len(test) else None,
        "seconds_this_session": round(time.time() - started, 1),
    }
    _write_summary(storage.join(decoder_dir, DECODER_SUMMARY), summary)
    logger.info("Decoder fine-tune: test PSNR %s -> %s dB.", before, summary["test_psnr_db"])
    # ``vae`` holds the facts of the trained or warm-start weights, so steps add up across runs.
    return {**vae, "decoder_steps": int(vae.get("decoder_steps", 0)) + settings.decoder_steps,
            "test_psnr_db": summary["test_psnr_db"]}


def warm_start(init_from: str, config: ModelConfig,
               new_vae: bool = False) -> tuple[StableDiffusion, dict[str, Any], int]:
    """A model directory of this recipe as the start of a run: ``(model, its VAE facts, its steps)``.

    Raises:
        ValueError: its architecture differs from ``config`` (a new VAE may differ in ``VAE_FIELDS``).
    """
    model = StableDiffusion.load(init_from)
    manifest = json.loads(storage.read_bytes(storage.join(init_from, "config.json")))
    free = VAE_FIELDS if new_vae else ("scaling_factor",)  # what may differ from ``config``
    kept = {k: getattr(config, k) for k in free}
    if model.config.replace(**kept) != config:
        differ = sorted(k for k, v in config.to_dict().items() if model.config.to_dict().get(k) != v and k not in free)
        raise ValueError(f"{init_from}/config.json: key 'config' expected {config.name} sizes, found "
                         f"{model.config.name} (differs in {', '.join(differ)}); a warm start needs the same "
                         "architecture" + ("" if new_vae else " (a new VAE may differ: --replace-vae-steps)") + ".")
    vae = manifest.get("vae", {"scaling_factor": model.config.scaling_factor})
    return model, vae, int(manifest.get("training", {}).get("steps", 0))
