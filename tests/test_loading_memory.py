"""Checkpoints are read tensor by tensor: the bytes held while reading stay far below the file's size."""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from test_hostile_files import Tensor, torch_zip  # torch zip files written by hand

from kerasemote.config import TINY
from kerasemote.convert import naming, torchfile
from kerasemote.convert.original import convert_single_file, export_single_file
from kerasemote.lazy import LazyArray

# Tiny with a short vocabulary: no single tensor is a large share of the file.
SMALL = TINY.replace(name="small", vocab_size=1000)


def _contiguous(array: np.ndarray) -> Tensor:
    array = np.ascontiguousarray(array, dtype="<f4")
    strides = tuple(s // 4 for s in array.strides)
    return Tensor(array.tobytes(), tuple(array.shape), strides)


def _peak(read) -> int:
    """Bytes NumPy and Python held at most while ``read()`` ran (TensorFlow's own memory is not counted)."""
    tracemalloc.start()
    try:
        read()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_ckpt_state_dict_holds_one_tensor_at_a_time(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {f"model.diffusion_model.w{i}": rng.standard_normal((512, 1024)).astype("<f4") for i in range(8)}
    path = torch_zip(tmp_path / "model.ckpt", {"state_dict": {k: _contiguous(v) for k, v in tensors.items()}})
    file_bytes = sum(v.nbytes for v in tensors.values())  # 16 MiB of 2 MiB tensors

    def read_all():
        state = torchfile.load_state_dict(path, lazy=True)
        for key, want in tensors.items():
            assert isinstance(state[key], LazyArray)
            assert np.array_equal(np.asarray(state[key]), want), key

    assert _peak(read_all) < file_bytes / 4


def test_ckpt_converts_tensor_by_tensor_to_the_same_arrays(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {
        part: {path: rng.standard_normal(shape).astype("float32") for path, shape in naming.variable_shapes(SMALL, part).items()}
        for part in naming.PARTS
    }
    export_single_file(arrays, SMALL, tmp_path / "small.safetensors")
    state = torchfile.load_state_dict(tmp_path / "small.safetensors")
    path = torch_zip(tmp_path / "small.ckpt", {"state_dict": {k: _contiguous(v) for k, v in state.items()}, "step": 7})
    file_bytes = sum(v.nbytes for v in state.values())
    largest = max(v.nbytes for v in state.values())
    del state

    def convert_and_check():
        _, converted = convert_single_file(path, config=SMALL, lazy=True)
        for part, values in arrays.items():
            for key, want in values.items():
                assert np.array_equal(np.asarray(converted[part][key]), want), key

    peak = _peak(convert_and_check)
    # A converted tensor is a few copies of one tensor; reading the file whole holds all of them.
    assert largest < file_bytes / 10
    assert peak < file_bytes / 2, (peak, file_bytes)


@pytest.mark.parametrize("user_value, expected", [(None, "1"), ("0", "0")])
def test_cli_picks_the_system_allocator_before_tensorflow_starts_unless_the_user_chose(user_value, expected):
    env = {k: v for k, v in os.environ.items() if k != "TF_ONEDNN_USE_SYSTEM_ALLOCATOR"}
    if user_value is not None:
        env["TF_ONEDNN_USE_SYSTEM_ALLOCATOR"] = user_value
    code = "import os, sys, kerasemote.cli; print('tensorflow' in sys.modules, os.environ['TF_ONEDNN_USE_SYSTEM_ALLOCATOR'])"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", expected]


def test_a_converted_checkpoint_builds_its_model_without_random_draws_and_fills_every_variable(tmp_path,
                                                                                               monkeypatch):
    from kerasemote.convert import convert_checkpoint
    from kerasemote.model import StableDiffusion
    from kerasemote.models import skip_init

    rng = np.random.default_rng(2)
    arrays = {
        part: {path: rng.standard_normal(shape).astype("float32") for path, shape in naming.variable_shapes(TINY, part).items()}
        for part in naming.PARTS
    }
    export_single_file(arrays, TINY, tmp_path / "tiny.safetensors")
    built_skipping = []
    build = StableDiffusion.__init__

    def spy(self, *args, **kwargs):
        built_skipping.append(skip_init.initializer("random") == "zeros")
        build(self, *args, **kwargs)

    monkeypatch.setattr(StableDiffusion, "__init__", spy)
    model = convert_checkpoint(str(tmp_path / "tiny.safetensors"))
    assert built_skipping == [True]  # the random draws would be overwritten at once
    for part, values in arrays.items():
        variables = {v.path: v for v in model.parts[part].weights}
        for key, want in values.items():
            np.testing.assert_array_equal(np.asarray(variables[key]), want, err_msg=key)


_PLACEHOLDER_RSS = """
import numpy as np
from kerasemote.config import TINY
from kerasemote.models.text_encoder import TextEncoder

def rss():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) * 1024

config = TINY.replace(name="wide", vocab_size=1000, text_width=768, text_layers=12, text_heads=12)
encoder = TextEncoder(config, 0).build_with_dummy()
size = sum(int(np.prod(v.shape)) * 4 for v in encoder.weights)
before = rss()
encoder = encoder.with_extra_tokens(np.zeros((1, 768), "float32"))
print(size, rss() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and glibc's malloc settings")
def test_adding_a_placeholder_keeps_no_second_text_encoder_resident():
    # The new encoder's starting storage is freed as it takes the old one's values. A freed block below glibc's
    # mmap threshold stays resident unless handed back; after a model is loaded the threshold sits at its
    # 32 MiB maximum, set here from the start.
    env = {**os.environ, "TF_ONEDNN_USE_SYSTEM_ALLOCATOR": "1", "MALLOC_MMAP_THRESHOLD_": str(32 << 20),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-c", _PLACEHOLDER_RSS], env=env, capture_output=True, text=True,
                            check=True)
    size, grown = map(int, result.stdout.split()[-2:])
    assert size > 100 << 20 and grown < size / 4, (size, grown)
