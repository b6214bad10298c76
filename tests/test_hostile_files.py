"""Hostile weight files and model configs: each is refused in one line naming the file, before any
large allocation, or read safely.

Every hostile file is written byte by byte here (no torch needed): torch zip pickles, safetensors
headers, .npz / .npy headers, model and diffusers configs.
"""

from __future__ import annotations

import io
import json
import os
import struct
import time
import zipfile

import numpy as np
import pytest

from kerasemote import cli, config, weights
from kerasemote.config import KERASEMOTE_TINY, SD_V1, TINY, ConfigError, ModelConfig
from kerasemote.convert import diffusers, naming, torchfile
from kerasemote.convert.diffusers_config import config_from_diffusers, diffusers_configs
from kerasemote.weights import WeightFileError

# ---------------------------------------------------------------------- torch zip files by hand


class Tensor:
    """What ``torch.save`` pickles for one tensor: a storage entry and a view of it."""

    def __init__(self, data: bytes, size: tuple, stride: tuple, offset: int = 0, storage: str = "FloatStorage"):
        self.data, self.size, self.stride, self.offset, self.storage = data, size, stride, offset, storage


def _int(n: int) -> bytes:
    return b"J" + struct.pack("<i", n) if -(2**31) <= n < 2**31 else b"\x8a\x08" + struct.pack("<q", n)


def _str(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _tuple(items: tuple) -> bytes:
    return b"(" + b"".join(_str(n) if isinstance(n, str) else _int(n) for n in items) + b"t"


class _Pickler:
    """Protocol-2 opcodes for dicts, strings, ints and ``Tensor`` (the subset torch state dicts use)."""

    def __init__(self):
        self.storages: list[Tensor] = []

    def dump(self, obj) -> bytes:
        return b"\x80\x02" + self._obj(obj) + b"."

    def _obj(self, obj) -> bytes:
        if isinstance(obj, dict):
            return b"}(" + b"".join(self._obj(k) + self._obj(v) for k, v in obj.items()) + b"u"
        if isinstance(obj, str):
            return _str(obj)
        if isinstance(obj, int):
            return _int(obj)
        key = str(len(self.storages))
        self.storages.append(obj)
        persistent = b"(" + _str("storage") + f"ctorch\n{obj.storage}\n".encode() + _str(key) + _str("cpu")
        persistent += _int(len(obj.data) // 4) + b"tQ"
        return (
            b"ctorch._utils\n_rebuild_tensor_v2\n(" + persistent + _int(obj.offset) + _tuple(obj.size)
            + _tuple(obj.stride) + b"\x89ccollections\nOrderedDict\n)RtR"
        )


def torch_zip(path, obj, deflate: bool = False) -> str:
    """Write ``obj`` (dicts of str / int / ``Tensor``) as a ``torch.save`` zip; return the path."""
    pickler = _Pickler()
    pkl = pickler.dump(obj)
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", pkl)
        zf.writestr("archive/byteorder", "little")
        for i, tensor in enumerate(pickler.storages):
            zf.writestr(f"archive/data/{i}", tensor.data, compress_type=method)
    return str(path)


def expand(size: tuple) -> Tensor:
    """``torch.zeros(1).expand(*size)``: one float stored, every stride zero."""
    return Tensor(b"\0" * 4, size, (0,) * len(size))


# ---------------------------------------------------------------------- safetensors by hand


def safetensors_bytes(header, data: bytes = b"", length: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def f32_entry(shape, begin=0, end=None, dtype="F32"):
    end = begin + 4 * int(np.prod(shape)) if end is None else end
    return {"dtype": dtype, "shape": list(shape), "data_offsets": [begin, end]}


# ---------------------------------------------------------------------- helpers


def cli_error(argv: list[str], capsys) -> str:
    """Run the CLI, expecting a refusal: exit 1 and exactly one line on stderr, no traceback."""
    os.environ.pop("KERASEMOTE_DEBUG", None)
    assert cli.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


def assert_names(message: str, *words: str) -> None:
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


# ---------------------------------------------------------------------- torch zip: bounded views

TORCH_CASES = {
    # A1111 .pt whose one vector is zeros(1).expand(20000, 20000): 4 bytes claiming 1.6 GB.
    "a1111_zero_stride.pt": (
        {"string_to_param": {"*": expand((20000, 20000))}, "name": "x", "step": 1},
        ["'string_to_param.*'", "needs 1600000000 bytes", "holds 4"],
    ),
    "ckpt_40000_squared.ckpt": (
        {"state_dict": {"model.diffusion_model.w": expand((40000, 40000))}},
        ["'state_dict.model.diffusion_model.w'", "needs 6400000000 bytes", "holds 4"],
    ),
    "overlapping_stride.pt": ({"emb": Tensor(b"\0" * 16, (4, 4), (1, 1))}, ["'emb'", "needs 64 bytes", "holds 16"]),
    "negative_stride.pt": (
        {"emb": Tensor(b"\0" * 16, (2, 2), (-2, 1))},
        ["'emb'", "expected strides > 0, found stride (-2, 1)"],
    ),
    "view_past_storage.pt": (
        {"emb": Tensor(b"\0" * 16, (2, 2), (2, 1), offset=2)},
        ["'emb'", "needs 16 bytes", "holds 8"],
    ),
    "size_not_ints.pt": (
        {"emb": Tensor(b"\0" * 16, ("2",), (1,))},
        ["'emb'", "expected integer offset, size and stride"],
    ),
}


@pytest.mark.parametrize("name", sorted(TORCH_CASES))
def test_torch_view_larger_than_its_bytes_is_refused_before_allocating(tmp_path, capsys, name):
    obj, words = TORCH_CASES[name]
    path = torch_zip(tmp_path / name, obj)
    with pytest.raises(WeightFileError) as err:
        torchfile.load_torch_zip(path)
    assert_names(str(err.value), path, *words)
    if name.endswith(".pt"):  # the same refusal through the CLI, one line
        assert_names(cli_error(["import", "embeddings", path, "--out", str(tmp_path / "out")], capsys), path)


def test_zero_stride_ckpt_through_convert_is_one_line(tmp_path, capsys):
    path = torch_zip(tmp_path / "big.ckpt", TORCH_CASES["ckpt_40000_squared.ckpt"][0])
    message = cli_error(["convert", path, "--out", str(tmp_path / "model")], capsys)
    assert_names(message, path, "needs 6400000000 bytes")
    assert not (tmp_path / "model").exists()


def test_deflated_storage_bomb_is_refused_before_inflating(tmp_path):
    bomb = Tensor(b"\0" * (32 * 2**20), (8 * 2**20,), (1,))
    path = torch_zip(tmp_path / "bomb.pt", {"emb": bomb}, deflate=True)
    assert os.path.getsize(path) < 2**20
    with pytest.raises(WeightFileError, match=r"bomb\.pt: zip entry 'archive/data/0' claims 33554432 bytes"):
        torchfile.load_torch_zip(path)


@pytest.mark.parametrize(
    "name, content",
    [
        ("garbage_zip.pt", b"PK\x03\x04 not really a zip"),
        ("truncated_pickle.pt", None),
    ],
)
def test_damaged_torch_zip_is_one_line_naming_the_file(tmp_path, capsys, name, content):
    path = tmp_path / name
    if content is None:  # a valid zip whose pickle stream stops half way
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("archive/data.pkl", _Pickler().dump({"a": 1, "b": 2})[:-6])
    else:
        path.write_bytes(content)
    with pytest.raises(WeightFileError, match="not a readable torch zip file"):
        torchfile.load_torch_zip(path)
    assert_names(cli_error(["import", "embeddings", str(path), "--out", str(tmp_path / "o")], capsys), str(path))


def test_pickle_sharing_one_dict_at_every_level_is_converted_in_linear_time(tmp_path):
    # {"a": d, "b": d} nested 22 times over one tensor: 4 million paths, 23 objects (a "billion laughs").
    levels = 22
    tensor_ops = _Pickler()._obj(Tensor(b"\0" * 4, (1,), (1,)))
    pkl = b"\x80\x02}(" + _str("t") + tensor_ops + b"uq\x00"
    for i in range(1, levels + 1):
        pkl += b"}(" + _str("a") + b"h" + bytes([i - 1]) + _str("b") + b"h" + bytes([i - 1]) + b"uq" + bytes([i])
    with zipfile.ZipFile(tmp_path / "laughs.pt", "w") as zf:
        zf.writestr("archive/data.pkl", pkl + b".")
        zf.writestr("archive/data/0", b"\0" * 4)
    start = time.perf_counter()
    tree = torchfile.load_torch_zip(tmp_path / "laughs.pt")
    assert time.perf_counter() - start < 2.0
    for _ in range(levels):
        assert tree["a"] is tree["b"]
        tree = tree["a"]
    np.testing.assert_array_equal(tree["t"], [0.0])


def test_valid_strided_views_still_read_right(tmp_path):
    data = np.arange(12, dtype="<f4")
    transposed = Tensor(data.tobytes(), (4, 3), (1, 4))  # x.T of a (3, 4) tensor
    sliced = Tensor(data.tobytes(), (2,), (3,), offset=1)  # x.flatten()[1::3][:2]
    path = torch_zip(tmp_path / "views.pt", {"t": transposed, "s": sliced, "step": 5})
    state = torchfile.load_torch_zip(path)
    np.testing.assert_array_equal(state["t"], data.reshape(3, 4).T)
    np.testing.assert_array_equal(state["s"], [1.0, 4.0])
    assert state["step"] == 5


def test_file_saved_by_torch_still_reads(tmp_path):
    torch = pytest.importorskip("torch")
    rows = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    torch.save({"string_to_param": {"*": rows.t()}, "name": "x"}, tmp_path / "x.pt")
    state = torchfile.load_torch_zip(tmp_path / "x.pt")
    np.testing.assert_array_equal(state["string_to_param"]["*"], rows.t().numpy())


def test_expanded_tensor_saved_by_torch_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    torch.save({"string_to_param": {"*": torch.zeros(1).expand(20000, 20000)}}, tmp_path / "e.pt")
    assert os.path.getsize(tmp_path / "e.pt") < 4096
    with pytest.raises(WeightFileError, match=r"e\.pt: tensor 'string_to_param\.\*' needs 1600000000 bytes"):
        torchfile.load_torch_zip(tmp_path / "e.pt")


# ---------------------------------------------------------------------- safetensors headers

_DATA = np.arange(4, dtype="<f4").tobytes()
SAFETENSORS_CASES = {
    "short_file": (b"\x01\x02\x03", "expected an 8-byte safetensors header length, found 3 bytes"),
    "huge_header_length": (safetensors_bytes({}, length=2**62), f"header length {2**62} exceeds"),
    "header_longer_than_file": (safetensors_bytes({}, length=1000), "header length 1000 exceeds the 2 bytes"),
    "non_utf8_header": (safetensors_bytes(b"{\"\xff\xfe\": 1}"), "header expected UTF-8 JSON"),
    "header_not_json": (safetensors_bytes(b"{not json"), "header expected UTF-8 JSON"),
    "header_is_a_list": (safetensors_bytes([1, 2]), "header expected a JSON object, found list"),
    "entry_not_object": (safetensors_bytes({"w": 3}), "header key 'w' expected an object, found int"),
    "offsets_past_end": (
        safetensors_bytes({"w": f32_entry([4], 0, 16)}, b"\0" * 8),
        "key 'w' data_offsets expected [begin, end] within the 8 data bytes present, found [0, 16]",
    ),
    "offsets_reversed": (safetensors_bytes({"w": f32_entry([0], 12, 8)}, _DATA), "found [12, 8]"),
    "overlapping_ranges": (
        safetensors_bytes({"a": f32_entry([4]), "b": f32_entry([2], 8)}, _DATA),
        "keys 'a' and 'b' expected disjoint data",
    ),
    "dtype_lie": (
        safetensors_bytes({"w": f32_entry([2, 2], 0, 8)}, _DATA),
        "key 'w' (F32 (2, 2)) needs 16 bytes but its data_offsets span 8",
    ),
    "huge_shape": (
        safetensors_bytes({"w": f32_entry([40000, 40000], 0, 16)}, _DATA),
        "needs 6400000000 bytes but its data_offsets span 16",
    ),
    "negative_shape": (safetensors_bytes({"w": f32_entry([-4], 0, 16)}, _DATA), "shape expected a list of sizes >= 0"),
    "unknown_dtype": (safetensors_bytes({"w": f32_entry([4], dtype="F8_E5M2")}, _DATA), "dtype expected one of"),
    "metadata_not_strings": (
        safetensors_bytes({"__metadata__": {"format": 1}, "w": f32_entry([4])}, _DATA),
        "__metadata__ expected an object of strings",
    ),
}


@pytest.mark.parametrize("case", sorted(SAFETENSORS_CASES))
def test_malformed_safetensors_is_one_line_naming_the_file(tmp_path, capsys, case):
    content, words = SAFETENSORS_CASES[case]
    path = tmp_path / f"{case}.safetensors"
    path.write_bytes(content)
    with pytest.raises(WeightFileError) as err:
        torchfile.load_state_dict(path)
    assert_names(str(err.value), str(path), words)
    for argv in (
        ["import", "embeddings", str(path), "--out", str(tmp_path / "emb")],
        ["import", "lora", str(path), "--out", str(tmp_path / "lora.npz")],
        ["convert", str(path), "--out", str(tmp_path / "model")],
    ):
        assert_names(cli_error(argv, capsys), str(path), words)


def test_valid_safetensors_still_reads_every_dtype(tmp_path):
    from safetensors.numpy import save_file

    arrays = {"f16": np.arange(6, dtype="float16").reshape(2, 3), "i64": np.arange(3), "b": np.array([True, False])}
    save_file(arrays, str(tmp_path / "ok.safetensors"), metadata={"format": "pt"})
    bf16 = np.array([1.5, -2.0], "float32").view("<u4") >> 16  # float32 top halves
    header = {"x": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}}
    (tmp_path / "bf16.safetensors").write_bytes(safetensors_bytes(header, bf16.astype("<u2").tobytes()))
    state = torchfile.load_state_dict(tmp_path / "ok.safetensors")
    for key, array in arrays.items():
        np.testing.assert_array_equal(state[key], array)
        assert state[key].dtype == array.dtype
    np.testing.assert_array_equal(torchfile.load_state_dict(tmp_path / "bf16.safetensors")["x"], [1.5, -2.0])


def test_embedding_wider_than_any_model_is_refused(tmp_path, capsys):
    from safetensors.numpy import save_file

    path = tmp_path / "wide.safetensors"
    save_file({"emb_params": np.zeros((1, config.LIMITS["text_width"] + 1), "float32")}, str(path))
    message = cli_error(["import", "embeddings", str(path), "--out", str(tmp_path / "emb")], capsys)
    assert_names(message, str(path), "'<wide>'", "width at most 4096", "(1, 4097)")


# ---------------------------------------------------------------------- .npz / .npy


def _npy_header(shape: tuple, descr: str = "<f4") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()  # magic string included


def _npz(path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, content in members.items():
            zf.writestr(name + ".npy", content)


def _valid_npz_bytes(tmp_path) -> bytes:
    weights.save_arrays(tmp_path / "valid.npz", {"a": np.zeros((64, 64), "float32")})
    return (tmp_path / "valid.npz").read_bytes()


NPZ_CASES = {
    "empty.npz": (lambda tmp: b"", "not a readable .npz file"),
    "truncated.npz": (lambda tmp: _valid_npz_bytes(tmp)[:200], "not a readable .npz file"),
    "huge_member.npz": (None, "key 'w' (shape (40000, 40000), float32) needs 6400000000 bytes but the file holds 16"),
    "empty.npy": (lambda tmp: b"", "not a readable .npy file"),
    "truncated.npy": (lambda tmp: _npy_header((4, 4)) + b"\0" * 10, "needs 64 bytes but the file holds 10"),
    "huge.npy": (lambda tmp: _npy_header((10**12,)), "needs 4000000000000 bytes but the file holds 0"),
}


@pytest.mark.parametrize("name", sorted(NPZ_CASES))
def test_empty_truncated_or_oversized_npz_npy_is_one_line(tmp_path, capsys, name):
    build, words = NPZ_CASES[name]
    path = tmp_path / name
    if build is None:
        _npz(path, {"w": _npy_header((40000, 40000)) + b"\0" * 16})
    else:
        path.write_bytes(build(tmp_path))
    with pytest.raises(WeightFileError) as err:
        weights.load_npy(path) if name.endswith(".npy") else weights.load_arrays(path)
    assert_names(str(err.value), str(path), words)
    message = cli_error(["export", "embeddings", str(path), "--out", str(tmp_path / "out")], capsys)
    assert_names(message, str(path), words)


def test_read_manifest_of_empty_npz_is_refused(tmp_path):
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(WeightFileError, match=r"empty\.npz: not a readable \.npz file \(EOFError"):
        weights.read_manifest(tmp_path / "empty.npz")


# ---------------------------------------------------------------------- model configs

CONFIG_CASES = {
    "a list": ([1, 2], "config: expected a JSON object, found list"),
    "text_width 12800": ({"text_width": 12800}, "config.text_width: expected an integer from 1 to 4096, found 12800"),
    "heads not dividing": (
        {**TINY.to_dict(), "text_heads": 3},
        "config.text_heads: expected a divisor of text_width (64), found 3",
    ),
    "negative channels": (
        {**TINY.to_dict(), "unet_channels": [-32, 64]},
        "config.unet_channels: expected an integer from 1 to 4096, found -32",
    ),
    "zero layers": ({**TINY.to_dict(), "text_layers": 0}, "config.text_layers: expected an integer from 1 to 64"),
    "size as a string": ({**TINY.to_dict(), "text_layers": "2"}, "config.text_layers: expected an integer"),
    "size as a bool": ({**TINY.to_dict(), "unet_heads": True}, "config.unet_heads: expected an integer"),
    "channels not a list": ({**TINY.to_dict(), "vae_channels": 64}, "config.vae_channels: expected a list, found 64"),
    "too many levels": ({**TINY.to_dict(), "vae_channels": [32] * 9}, "config.vae_channels: expected 1 to 8 levels"),
    "unet heads not dividing": (
        {**TINY.to_dict(), "unet_heads": 3},
        "config.unet_heads: expected a divisor of every attending UNet width [32, 64]",
    ),
    "nan eps": ({**TINY.to_dict(), "vae_norm_eps": float("nan")}, "config.vae_norm_eps: expected a finite number > 0"),
    "unknown key": ({**TINY.to_dict(), "bogus": 1}, "found unknown keys ['bogus']"),
    "attention flags as ints": (
        {**TINY.to_dict(), "unet_attention": [1, 1]},
        "config.unet_attention: expected 2 true/false flags",
    ),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_bad_model_config_is_refused_naming_file_field_expected_found(case):
    data, words = CONFIG_CASES[case]
    with pytest.raises(ConfigError) as err:
        ModelConfig.from_dict(data, source="m/config.json", field="config")
    assert str(err.value).startswith("m/config.json: ")
    assert_names(str(err.value), words)
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from kerasemote.model import StableDiffusion

    folder = tmp_path_factory.mktemp("tiny") / "model"
    StableDiffusion.random("tiny", seed=0).save(str(folder))
    return folder


@pytest.mark.slow  # saves a tiny model once (5-15 s); the refusals themselves are tested above
@pytest.mark.parametrize("case", ["text_width 12800", "heads not dividing", "negative channels"])
def test_bad_config_in_a_model_directory_is_one_line_through_the_cli(tiny_model_dir, tmp_path, capsys, case):
    manifest_path = tiny_model_dir / "config.json"
    original = manifest_path.read_text()
    manifest = json.loads(original)
    manifest["config"] = CONFIG_CASES[case][0]
    try:
        manifest_path.write_text(json.dumps(manifest))
        message = cli_error(["convert", str(tiny_model_dir), "--out", str(tmp_path / "copy")], capsys)
    finally:
        manifest_path.write_text(original)
    assert_names(message, str(manifest_path), CONFIG_CASES[case][1])


def test_parameter_count_matches_the_variables_the_parts_will_have():
    for cfg in (TINY, KERASEMOTE_TINY, SD_V1):
        expected = sum(int(np.prod(s)) for p in naming.PARTS for s in naming.variable_shapes(cfg, p).values())
        assert cfg.parameter_count() == expected


def test_config_too_big_for_this_machine_is_refused_and_sd_v1_fits_24_gb(monkeypatch):
    monkeypatch.setattr(config, "memory_bytes", lambda: 24 * 2**30)
    assert ModelConfig.from_dict(SD_V1.to_dict(), "sd/config.json") == SD_V1  # ~1.07 B weights, 4.3 GB
    big = {"text_width": 4096, "text_heads": 32, "text_intermediate": 16384, "text_layers": 64}
    with pytest.raises(ConfigError, match=r"big/config\.json: parameter count: expected float32 weights that fit"):
        ModelConfig.from_dict(big, "big/config.json")
    monkeypatch.setattr(config, "memory_bytes", lambda: 2**30)
    with pytest.raises(ConfigError, match=r"1,066,235,307 weights needing 4\.0 GiB"):
        ModelConfig.from_dict(SD_V1.to_dict(), "sd/config.json")


# ---------------------------------------------------------------------- diffusers folders


def _diffusers_unet(tmp_path, index: dict | None = None, unet_config: dict | None = None):
    unet = tmp_path / "sd" / "unet"
    unet.mkdir(parents=True)
    (unet / "config.json").write_text(json.dumps(unet_config or diffusers_configs(TINY)["unet"]))
    text = tmp_path / "sd" / "text_encoder"
    text.mkdir()
    (text / "config.json").write_text(json.dumps(diffusers_configs(TINY)["text_encoder"]))
    if index is not None:
        (unet / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    return tmp_path / "sd"


@pytest.mark.parametrize("shard", ["../../../../etc/passwd", "/etc/passwd", "../outside.safetensors"])
def test_diffusers_index_naming_a_shard_outside_the_folder_is_refused(tmp_path, capsys, shard):
    (tmp_path / "outside.safetensors").write_bytes(safetensors_bytes({}))
    folder = _diffusers_unet(tmp_path, {"weight_map": {"conv_in.weight": shard}})
    index = folder / "unet" / "diffusion_pytorch_model.safetensors.index.json"
    with pytest.raises(ValueError, match="field 'weight_map.conv_in.weight' expected a relative path inside"):
        diffusers.read_component_state(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))
    assert_names(cli_error(["convert", str(folder), "--out", str(tmp_path / "m")], capsys), str(index), shard)


def test_diffusers_index_without_a_weight_map_is_refused(tmp_path):
    folder = _diffusers_unet(tmp_path, {"metadata": {}})
    with pytest.raises(ValueError, match="field 'weight_map' expected an object of tensor -> shard file"):
        diffusers.read_component_state(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))


@pytest.mark.parametrize(
    "change, words",
    [
        ({"block_out_channels": [32, 12800]}, "unet/config.json: unet_channels: expected an integer from 1 to 4096"),
        ({"block_out_channels": 320}, "unet/config.json: a field has a value of the wrong type"),
        ({"layers_per_block": -1}, "unet/config.json: unet_layers_per_block: expected an integer from 1 to 8"),
    ],
)
def test_bad_diffusers_config_is_one_line_naming_its_file(tmp_path, capsys, change, words):
    folder = _diffusers_unet(tmp_path, unet_config={**diffusers_configs(TINY)["unet"], **change})
    with pytest.raises(ValueError, match=words.replace(".", r"\.")):
        config_from_diffusers(folder)
    assert_names(cli_error(["convert", str(folder), "--out", str(tmp_path / "m")], capsys), words)


# ---------------------------------------------------------------------- keras-cv .h5


def test_h5_dataset_declaring_more_than_it_stores_is_refused_unread(tmp_path):
    h5py = pytest.importorskip("h5py")
    from kerasemote.convert.kerascv import read_legacy_h5

    path = tmp_path / "kcv_encoder.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [b"dense"]
        layer = f.create_group("dense")
        layer.attrs["weight_names"] = [b"dense/kernel:0"]
        layer.create_dataset("dense/kernel:0", shape=(40000, 40000), dtype="f4", chunks=(100, 100))
    assert os.path.getsize(path) < 64 * 1024
    with pytest.raises(WeightFileError, match=r"kcv_encoder\.h5: layer 'dense' weight 'dense/kernel:0' .* needs "
                       r"6400000000 bytes but the file stores 0"):
        read_legacy_h5(path)
