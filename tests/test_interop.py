"""Concept interop without torch: names, layouts, round trips, refusals, the export/import CLI.

(tests/test_interop_parity.py proves that diffusers itself loads the files and computes what we do.)
"""

from __future__ import annotations

import argparse
import io
import json
import pickle
import zipfile

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from kerasemote import weights
from kerasemote.cli import export as export_cli
from kerasemote.config import KERASEMOTE_TINY, SD_V1, TINY
from kerasemote.convert import naming
from kerasemote.convert.embeddings_interop import (
    export_embeddings,
    import_embeddings,
    read_foreign_embeddings,
)
from kerasemote.convert.lora_interop import export_lora, read_foreign_lora, to_diffusers_state, to_kohya_state
from kerasemote.convert.lora_names import kohya_name, layer_path, ldm_kohya_names, module_from_kohya, module_name
from kerasemote.convert.torchfile import UnsafePickleError
from kerasemote.embeddings import load_embeddings, read_embeddings
from kerasemote.lora_files import A_SUFFIX, B_SUFFIX, LoRAWeights, apply_lora, model_layers, read_lora

TO_Q = "unet/down_blocks.0/attentions.0/transformer_blocks.0/attn1/to_q"
CONV = "unet/down_blocks.0/resnets.0/conv1"
FF = "unet/mid_block/attentions.0/transformer_blocks.0/ff/net.0.proj"
TEXT_Q = "text_encoder/text_model/encoder.layers.1/self_attn/q_proj"


def _kernel_layers(config, parts=("unet", "text_encoder")):
    return {p[: -len("/kernel")]: s for part in parts
            for p, s in naming.variable_shapes(config, part).items() if p.endswith("/kernel")}


def synthetic_lora(rank: int = 3, alpha: float = 6.0, config=TINY, seed: int = 0) -> LoRAWeights:
    """Random non-zero A and B on a Dense, a 3x3 conv, a GEGLU projection and a text layer."""
    rng = np.random.default_rng(seed)
    shapes = _kernel_layers(config)
    arrays = {}
    for layer in (TO_Q, CONV, FF, TEXT_Q):
        kernel = shapes[layer]
        arrays[layer + A_SUFFIX] = rng.normal(0, 0.2, kernel[:-1] + (rank,)).astype("float32")
        arrays[layer + B_SUFFIX] = rng.normal(0, 0.2, (rank, kernel[-1])).astype("float32")
    return LoRAWeights(arrays, rank, alpha, ["attention"], {"format": "kerasemote-lora"})


def _deltas(lora: LoRAWeights) -> dict[str, np.ndarray]:
    return {layer: lora.delta(layer) for layer in lora.layers}


# ---------------------------------------------------------------------- names


@pytest.mark.parametrize("config", [TINY, SD_V1, KERASEMOTE_TINY], ids=lambda c: c.name)
def test_every_adaptable_layer_name_survives_diffusers_and_kohya_names(config):
    for layer in _kernel_layers(config):
        module = module_name(layer)
        assert layer_path(module) == layer
        assert module_from_kohya(kohya_name(module)) == module


def test_names_follow_the_published_layouts():
    assert module_name(TO_Q) == "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    assert kohya_name(module_name(TO_Q)) == "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    assert kohya_name(module_name(TEXT_Q)) == "lora_te_text_model_encoder_layers_1_self_attn_q_proj"
    assert kohya_name(module_name(FF)) == "lora_unet_mid_block_attentions_0_transformer_blocks_0_ff_net_0_proj"
    ldm = ldm_kohya_names(SD_V1)
    assert ldm["lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q"] == TO_Q
    assert ldm["lora_unet_middle_block_1_proj_in"] == "unet/mid_block/attentions.0/proj_in"
    assert ldm["lora_unet_output_blocks_3_1_transformer_blocks_0_attn2_to_out_0"] == (
        "unet/up_blocks.1/attentions.0/transformer_blocks.0/attn2/to_out.0")
    assert ldm["lora_unet_input_blocks_1_0_in_layers_2"] == CONV


# ---------------------------------------------------------------------- LoRA layouts


def test_diffusers_export_holds_peft_keys_in_torch_layout_with_the_scale_in_b():
    lora = synthetic_lora(rank=3, alpha=6.0)
    state = to_diffusers_state(lora)
    module = module_name(TO_Q)
    a, b = lora.arrays[TO_Q + A_SUFFIX], lora.arrays[TO_Q + B_SUFFIX]
    np.testing.assert_array_equal(state[module + ".lora_A.weight"], a.T)  # (r, in)
    np.testing.assert_allclose(state[module + ".lora_B.weight"], 2.0 * b.T)  # (out, r), alpha / r = 2
    conv = module_name(CONV)
    assert state[conv + ".lora_A.weight"].shape == (3, 32, 3, 3)  # (r, in, kh, kw)
    assert state[conv + ".lora_B.weight"].shape == (32, 3, 1, 1)  # (out, r, 1, 1)
    assert len(state) == 8


def test_kohya_export_keeps_alpha_and_torch_layout():
    lora = synthetic_lora(rank=3, alpha=6.0)
    state = to_kohya_state(lora, dtype="float16")
    name = "lora_te_text_model_encoder_layers_1_self_attn_q_proj"
    np.testing.assert_array_equal(state[name + ".lora_down.weight"], lora.arrays[TEXT_Q + A_SUFFIX].T.astype("float16"))
    assert state[name + ".lora_up.weight"].shape == (64, 3) and state[name + ".alpha"].shape == ()
    assert float(state[name + ".alpha"]) == 6.0 and state[name + ".alpha"].dtype == np.float16
    ldm = to_kohya_state(lora, ldm_config=TINY)
    assert "lora_unet_input_blocks_1_0_in_layers_2.lora_down.weight" in ldm
    assert name + ".alpha" in ldm  # the text encoder keeps its names


@pytest.mark.parametrize("fmt", ["diffusers", "kohya", "kohya-ldm"])
def test_every_lora_format_round_trips_the_deltas(fmt, tmp_path):
    lora = synthetic_lora(rank=3, alpha=6.0)
    path = export_lora(lora, str(tmp_path / "x.safetensors"), fmt, config=TINY)
    back = read_foreign_lora(path, config=TINY)
    assert back.layers == lora.layers and back.rank == 3
    for layer, delta in _deltas(lora).items():
        np.testing.assert_allclose(back.delta(layer), delta, rtol=1e-6, atol=1e-7, err_msg=layer)
    if fmt != "diffusers":  # kohya carries alpha: the very same A, B and alpha come back
        assert back.alpha == 6.0
        np.testing.assert_array_equal(back.arrays[CONV + A_SUFFIX], lora.arrays[CONV + A_SUFFIX])
    assert back.manifest["imported_from"]["format"] == fmt
    assert set(back.targets) == {"attention", "convs", "feedforward", "text"}


def test_kohya_file_with_mixed_ranks_and_alphas_imports_to_one_rank_with_the_same_deltas(tmp_path):
    rng = np.random.default_rng(1)
    q, c = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", "lora_unet_down_blocks_0_resnets_0_conv1"
    state = {
        f"{q}.lora_down.weight": rng.normal(size=(2, 32)).astype("float16"),
        f"{q}.lora_up.weight": rng.normal(size=(32, 2)).astype("float16"),
        f"{q}.alpha": np.array(1.0, "float16"),
        f"{c}.lora_down.weight": rng.normal(size=(4, 32, 3, 3)).astype("float32"),
        f"{c}.lora_up.weight": rng.normal(size=(32, 4, 1, 1)).astype("float32"),  # no alpha: scale 1
    }
    save_file(state, str(tmp_path / "mixed.safetensors"))
    lora = read_foreign_lora(str(tmp_path / "mixed.safetensors"))
    assert lora.rank == 4 and lora.alpha == 4.0 and lora.arrays[TO_Q + A_SUFFIX].shape == (32, 4)
    expected_q = 0.5 * state[f"{q}.lora_up.weight"].astype("float32") @ state[f"{q}.lora_down.weight"].astype("float32")
    np.testing.assert_allclose(lora.delta(TO_Q), expected_q.T, rtol=1e-5)
    up, down = state[f"{c}.lora_up.weight"][:, :, 0, 0], state[f"{c}.lora_down.weight"]
    expected_c = np.einsum("or,rikl->klio", up, down)  # torch (out, in, kh, kw) as Keras (kh, kw, in, out)
    np.testing.assert_allclose(lora.delta(CONV), expected_c, rtol=1e-5, atol=1e-5)


def test_diffusers_alpha_comes_from_saved_lora_config_and_old_key_styles_are_read(tmp_path):
    rng = np.random.default_rng(2)
    down, up = rng.normal(size=(4, 32)).astype("float32"), rng.normal(size=(32, 4)).astype("float32")
    module = module_name(TO_Q)
    config = {"unet.r": 4, "unet.lora_alpha": 8, "unet.alpha_pattern": {}, "unet.target_modules": ["to_q"]}
    save_file({f"{module}.lora_A.weight": down, f"{module}.lora_B.weight": up}, str(tmp_path / "peft.safetensors"),
              metadata={"format": "pt", "lora_adapter_metadata": json.dumps(config)})
    np.testing.assert_allclose(read_foreign_lora(str(tmp_path / "peft.safetensors")).delta(TO_Q), 2.0 * (up @ down).T,
                               rtol=1e-6)
    old = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora"  # diffusers < 0.20
    save_file({f"{old}.down.weight": down, f"{old}.up.weight": up}, str(tmp_path / "procs.safetensors"))
    assert read_foreign_lora(str(tmp_path / "procs.safetensors")).layers == [TO_Q[: -len("to_q")] + "to_out.0"]


@pytest.mark.parametrize(
    "state, message",
    [
        ({"lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": np.zeros((2, 8), "float32")},
         "key 'lora_te1_.*' belongs to SDXL text encoders"),
        ({"lora_unet_x.hada_w1_a": np.zeros((2, 8), "float32")}, "key 'lora_unet_x.hada_w1_a' belongs to LyCORIS LoHa"),
        ({"unet.conv_in.weight": np.zeros((2, 8), "float32")}, "no LoRA keys found; expected diffusers .* found 'unet.conv_in.weight'"),
        ({f"{module_name(TO_Q)}.lora_A.weight": np.zeros((2, 32), "float32")}, "the up weight of '.*to_q.lora_A.weight' expected, not found"),
        ({f"{module_name(TO_Q)}.lora_A.weight": np.zeros((2, 32), "float32"),
          f"{module_name(TO_Q)}.lora_B.weight": np.zeros((32, 3), "float32")},
         r"key '.*to_q.lora_A.weight' expected down \(r, in\[, kh, kw\]\) and up \(out, r\[, 1, 1\]\), found down \(2, 32\) and up \(32, 3\)"),
        ({"lora_unet_nonsense_layer.lora_down.weight": np.zeros((2, 8), "float32"),
          "lora_unet_nonsense_layer.extra": np.zeros((2,), "float32")}, "keys .*'lora_unet_nonsense_layer.extra'.* expected"),
    ],
)
def test_unusable_lora_files_are_refused_naming_file_and_key(state, message, tmp_path):
    path = str(tmp_path / "bad.safetensors")
    save_file(state, path)
    with pytest.raises(weights.WeightFileError, match="bad.safetensors: " + message):
        read_foreign_lora(path)


def test_lora_exports_are_safetensors_only(tmp_path):
    with pytest.raises(ValueError, match=r"x\.pt: LoRA exports are \.safetensors only"):
        export_lora(synthetic_lora(), str(tmp_path / "x.pt"))


@pytest.fixture(scope="module")
def model():
    from kerasemote.model import StableDiffusion

    return StableDiffusion.random("tiny", seed=0)


def test_imported_kohya_lora_applies_its_delta_to_our_kernels(model, tmp_path):
    lora = synthetic_lora()
    path = export_lora(lora, str(tmp_path / "k.safetensors"), "kohya")
    kernel = model_layers(model)[CONV]._kernel
    before = np.asarray(kernel).copy()
    apply_lora(model, read_foreign_lora(path), scale=0.5)
    np.testing.assert_allclose(np.asarray(kernel) - before, 0.5 * lora.delta(CONV), atol=1e-6)
    apply_lora(model, read_foreign_lora(path), scale=-0.5)


# ---------------------------------------------------------------------- embeddings


@pytest.fixture
def run_folder(tmp_path):
    from kerasemote.convert.embeddings_interop import write_embeddings

    rng = np.random.default_rng(0)
    rows = {"<happy>": rng.normal(size=(2, 64)).astype("float32"), "<in-love>": rng.normal(size=(1, 64)).astype("float32")}
    write_embeddings(str(tmp_path / "run"), rows, steps=12)
    return str(tmp_path / "run"), rows


def test_embedding_exports_hold_what_diffusers_and_a1111_read(run_folder, tmp_path):
    run, rows = run_folder
    files = export_embeddings(run, str(tmp_path / "out"), "a1111")
    assert [f.rsplit("/", 1)[-1] for f in files] == ["happy.safetensors", "in-love.safetensors"]  # A1111 triggers
    np.testing.assert_array_equal(load_file(files[0])["emb_params"], rows["<happy>"])
    (one,) = export_embeddings(run, str(tmp_path / "learned_embeds.safetensors"), "diffusers", ["<in-love>"], "float16")
    state = load_file(one)
    assert list(state) == ["<in-love>"] and state["<in-love>"].shape == (1, 64) and state["<in-love>"].dtype == np.float16


def test_one_embedding_file_takes_one_token(run_folder, tmp_path):
    run, _ = run_folder
    with pytest.raises(ValueError, match=r"one file holds one token but \['<happy>', '<in-love>'\] are selected"):
        export_embeddings(run, str(tmp_path / "x.safetensors"))
    with pytest.raises(ValueError, match=r"tokens \['<nope>'\] expected, found only"):
        export_embeddings(run, str(tmp_path / "x.safetensors"), tokens=["<nope>"])


@pytest.mark.parametrize("fmt", ["diffusers", "a1111"])
def test_embeddings_round_trip_through_both_formats_and_load(fmt, run_folder, tmp_path, model):
    run, rows = run_folder
    files = export_embeddings(run, str(tmp_path / fmt), fmt)
    out = str(tmp_path / "back")
    import_embeddings(files, out)
    vectors, manifest = read_embeddings(out)
    assert vectors.keys() == rows.keys()  # a1111: "<file stem>" gives the tokens back
    for token in rows:
        np.testing.assert_array_equal(vectors[token], rows[token])
    assert manifest["imported_from"][0]["format"] == fmt
    if fmt == "diffusers":
        assert load_embeddings(model, out) == ["<happy>", "<in-love>"]
        np.testing.assert_array_equal(model.placeholder_rows("<happy>"), rows["<happy>"])


def test_foreign_token_can_be_renamed_and_one_vector_files_are_read(tmp_path):
    save_file({"emb_params": np.ones((64,), "float32")}, str(tmp_path / "smile.safetensors"))
    assert read_foreign_embeddings(str(tmp_path / "smile.safetensors"))[:2][0] == "<smile>"
    token, rows, facts = read_foreign_embeddings(str(tmp_path / "smile.safetensors"), token="<grin>")
    assert token == "<grin>" and rows.shape == (1, 64) and facts == {"format": "a1111"}


@pytest.mark.parametrize(
    "state, message",
    [
        ({"clip_l": np.zeros((1, 768), "float32"), "clip_g": np.zeros((1, 1280), "float32")}, "keys 'clip_l'/'clip_g' are an SDXL embedding"),
        ({"<a>": np.zeros((1, 8), "float32"), "<b>": np.zeros((1, 8), "float32")},
         r"expected one tensor key .*, found \['<a>', '<b>'\]"),
        ({"<a>": np.zeros((1, 8), "int32")}, "key '<a>' expected a float dtype, found int32"),
        ({"<a>": np.zeros((1, 2, 8), "float32")}, r"key '<a>' expected shape \(num_vectors, dim\), found \(1, 2, 8\)"),
    ],
)
def test_unusable_embedding_files_are_refused_naming_file_and_key(state, message, tmp_path):
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(weights.WeightFileError, match="bad.safetensors: " + message):
        read_foreign_embeddings(str(tmp_path / "bad.safetensors"))


def test_pt_embedding_that_asks_for_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    buffer = io.BytesIO()
    pickle.dump({"string_to_param": {"*": Payload()}}, buffer, protocol=2)
    with zipfile.ZipFile(tmp_path / "evil.pt", "w") as zf:
        zf.writestr("evil/data.pkl", buffer.getvalue())
    with pytest.raises(UnsafePickleError, match=r"evil.pt: refusing to unpickle (__builtin__|builtins).print"):
        read_foreign_embeddings(str(tmp_path / "evil.pt"))


# ---------------------------------------------------------------------- CLI


def _cli(argv):
    parser = argparse.ArgumentParser(prog="kerasemote")
    export_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_exports_and_imports_embeddings_and_loras(run_folder, tmp_path, capsys):
    run, rows = run_folder
    assert _cli(["export", "embeddings", run, "--format", "a1111", "--out", str(tmp_path / "a1111")]) == 0
    assert "A1111 trigger words (the file names): happy, in-love" in capsys.readouterr().out
    assert _cli(["import", "embeddings", str(tmp_path / "a1111" / "happy.safetensors"), "--token", "<joy>",
                 "--out", str(tmp_path / "joy")]) == 0
    np.testing.assert_array_equal(read_embeddings(str(tmp_path / "joy"))[0]["<joy>"], rows["<happy>"])

    from kerasemote.lora_files import save_lora

    lora = synthetic_lora()
    save_lora(str(tmp_path / "run" / "lora.npz"), lora)
    assert _cli(["export", "lora", run, "--format", "kohya", "--out", str(tmp_path / "k.safetensors")]) == 0
    assert _cli(["import", "lora", str(tmp_path / "k.safetensors"), "--out", str(tmp_path / "imported")]) == 0
    back = read_lora(str(tmp_path / "imported" / "lora.npz"))
    np.testing.assert_allclose(back.delta(TO_Q), lora.delta(TO_Q), rtol=1e-6)


def test_cli_kohya_ldm_export_names_layers_after_the_config_the_lora_was_trained_on(tmp_path):
    from kerasemote.lora_files import save_lora

    # kerasemote-tiny's up_blocks.0 attends, SD's does not: SD's LDM names cannot name this layer.
    layer = "unet/up_blocks.0/attentions.0/transformer_blocks.0/attn1/to_k"
    kernel = _kernel_layers(KERASEMOTE_TINY)[layer]
    arrays = {layer + A_SUFFIX: np.ones(kernel[:-1] + (2,), "float32"),
              layer + B_SUFFIX: np.ones((2, kernel[-1]), "float32")}
    lora = LoRAWeights(arrays, 2, 2.0, ["attention"], {"base_model": {"config": "kerasemote-tiny"}})
    src = save_lora(str(tmp_path / "lora.npz"), lora)
    assert _cli(["export", "lora", src, "--format", "kohya-ldm", "--out", str(tmp_path / "ldm.safetensors")]) == 0
    written = set(load_file(str(tmp_path / "ldm.safetensors")))
    assert written == set(to_kohya_state(lora, ldm_config=KERASEMOTE_TINY))
    with pytest.raises(ValueError, match="no LDM name in config 'sd-v1'"):
        _cli(["export", "lora", src, "--format", "kohya-ldm", "--config", "sd-v1",
              "--out", str(tmp_path / "x.safetensors")])
