"""Tests for kerasemote.weights: .npz/.npy files and Keras variable assignment."""

import io
import os
import zipfile

import keras
import numpy as np
import pytest
from gcs_fixture import gcs_bucket, gcs_emulator  # noqa: F401  (pytest fixtures)

from kerasemote import storage, weights
from kerasemote.weights import WeightFileError

ARRAYS = {
    "unet/down_blocks.0/attn/to_q/kernel": np.arange(6, dtype=np.float32).reshape(2, 3),
    "text_encoder/embeddings/token_embedding/embeddings": np.ones((4, 2), np.float16),
    "step": np.array(7, np.int64),
}
MANIFEST = {"config": "tiny", "placeholders": {"<broccoli>": [49408]}, "lr": 5e-3}


def _assert_same(a, b):
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        np.testing.assert_array_equal(a[key], b[key])


# ---------------------------------------------------------------------- .npz


def test_npz_round_trips_slash_keys_dtypes_and_manifest(tmp_path):
    path = tmp_path / "w.npz"
    weights.save_arrays(path, ARRAYS, MANIFEST)
    arrays, manifest = weights.load_arrays(path)
    _assert_same(arrays, ARRAYS)
    assert manifest == MANIFEST
    assert weights.read_manifest(path) == MANIFEST
    with np.load(path) as plain:  # still an ordinary npz for users
        assert sorted(plain.files) == sorted([*ARRAYS, weights.MANIFEST_KEY])


def test_npz_without_manifest_loads_empty_manifest(tmp_path):
    path = str(tmp_path / "plain.npz")
    np.savez(path, **{"a/b": np.zeros(3)})
    arrays, manifest = weights.load_arrays(path)
    assert manifest == {} and arrays["a/b"].shape == (3,)


def test_save_rejects_object_arrays_and_reserved_key(tmp_path):
    with pytest.raises(ValueError, match=r"w\.npz: key 'bad' expected a numeric dtype.*object"):
        weights.save_arrays(tmp_path / "w.npz", {"bad": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(ValueError, match="reserved"):
        weights.save_arrays(tmp_path / "w.npz", {weights.MANIFEST_KEY: np.zeros(2)})
    with pytest.raises(ValueError, match="not JSON-serializable"):
        weights.save_arrays(tmp_path / "w.npz", {"a": np.zeros(2)}, {"x": object()})
    assert not os.path.exists(tmp_path / "w.npz")


def test_load_refuses_pickled_object_array_naming_file_and_key(tmp_path):
    path = str(tmp_path / "evil.npz")
    np.savez(path, ok=np.zeros(2), payload=np.array([print], dtype=object))
    with pytest.raises(WeightFileError, match=r"evil\.npz: key 'payload' cannot be loaded without pickle"):
        weights.load_arrays(path)


def test_load_checks_expected_keys_and_shapes_in_one_message(tmp_path):
    path = tmp_path / "w.npz"
    weights.save_arrays(path, {"a": np.zeros((2, 3)), "b": np.zeros(4), "extra": np.zeros(1)})
    expected = {"a": (2, None), "b": (5,), "c": (1,)}
    with pytest.raises(WeightFileError) as info:
        weights.load_arrays(path, expected=expected)
    message = str(info.value)
    assert "missing keys (1: 'c')" in message
    assert "unexpected keys (1: 'extra')" in message
    assert "key 'b' expected shape (5,), found (4,)" in message
    assert "key 'a'" not in message  # None accepts any size on that axis
    assert str(path) in message


def test_load_rejects_string_arrays_unless_dtype_check_is_off(tmp_path):
    path = str(tmp_path / "s.npz")
    np.savez(path, names=np.array(["a", "b"]))
    with pytest.raises(WeightFileError, match=r"key 'names' expected a numeric dtype.*found <U1"):
        weights.load_arrays(path)
    arrays, _ = weights.load_arrays(path, dtype_check=False)
    assert arrays["names"].tolist() == ["a", "b"]


def test_load_rejects_non_npz_and_bad_manifest(tmp_path):
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(WeightFileError, match=r"junk\.npz: not a readable \.npz"):
        weights.load_arrays(junk)
    bad = str(tmp_path / "bad_manifest.npz")
    np.savez(bad, **{weights.MANIFEST_KEY: np.frombuffer(b"[1, 2]", np.uint8)})
    with pytest.raises(WeightFileError, match="manifest expected a JSON object, found list"):
        weights.load_arrays(bad)


def test_large_npz_is_zip64_and_stored_uncompressed(tmp_path):
    path = tmp_path / "w.npz"
    weights.save_arrays(path, {"k": np.zeros(1000, np.float32)})
    with zipfile.ZipFile(path) as zf:
        assert [i.compress_type for i in zf.infolist()] == [zipfile.ZIP_STORED]


def test_npz_round_trip_through_gcs(gcs_bucket):
    path = gcs_bucket + "/emb/broccoli.npz"
    weights.save_arrays(path, ARRAYS, MANIFEST)
    arrays, manifest = weights.load_arrays(path)
    _assert_same(arrays, ARRAYS)
    assert manifest == MANIFEST
    with np.load(io.BytesIO(storage.read_bytes(path))) as raw:  # plain npz bytes in the bucket
        assert "step" in raw.files


# ---------------------------------------------------------------------- .npy


def test_npy_round_trip_and_shape_wildcards(tmp_path):
    path = tmp_path / "emb.npy"
    vectors = np.random.rand(3, 768).astype(np.float32)
    weights.save_npy(path, vectors)
    np.testing.assert_array_equal(weights.load_npy(path, expected_shape=(None, 768)), vectors)
    with pytest.raises(WeightFileError, match=r"emb\.npy: expected shape \(3, 1024\), found \(3, 768\)"):
        weights.load_npy(path, expected_shape=(3, 1024))
    with pytest.raises(WeightFileError, match=r"expected shape \(None,\), found \(3, 768\)"):
        weights.load_npy(path, expected_shape=(None,))  # the number of axes must match too


def test_load_npy_refuses_pickle_and_npz(tmp_path):
    pickled = str(tmp_path / "evil.npy")
    np.save(pickled, np.array([print], dtype=object), allow_pickle=True)
    with pytest.raises(WeightFileError, match=r"evil\.npy: not a readable \.npy file without pickle"):
        weights.load_npy(pickled)
    archive = str(tmp_path / "a.npz")
    np.savez(archive, x=np.zeros(1))
    with pytest.raises(WeightFileError, match="found an .npz archive"):
        weights.load_npy(archive)
    with pytest.raises(ValueError, match="numeric"):
        weights.save_npy(tmp_path / "s.npy", np.array(["text"]))


# ---------------------------------------------------------------------- Keras


class _Block(keras.layers.Layer):
    def __init__(self, width, **kwargs):
        super().__init__(**kwargs)
        self.proj = keras.layers.Dense(width, name="proj")
        self.norm = keras.layers.LayerNormalization(name="norm")

    def call(self, x):
        return self.norm(self.proj(x))


class _Tiny(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.first = _Block(4, name="first")
        self.second = _Block(2, name="second")
        self.bn = keras.layers.BatchNormalization(name="bn")

    def call(self, x):
        return self.bn(self.second(self.first(x)))


def _tiny_model(name="tiny"):
    model = _Tiny(name=name)
    model(np.zeros((1, 3), np.float32))
    return model


def test_model_arrays_keys_are_nested_variable_paths():
    arrays = weights.model_arrays(_tiny_model())
    assert "tiny/first/proj/kernel" in arrays and "tiny/second/norm/gamma" in arrays
    assert "tiny/bn/moving_variance" in arrays  # non-trainable state is kept
    assert arrays["tiny/first/proj/kernel"].shape == (3, 4)


def test_save_load_assign_restores_every_variable(tmp_path):
    source, target = _tiny_model(), _tiny_model()
    x = np.random.rand(2, 3).astype(np.float32)
    assert not np.allclose(source(x), target(x))
    path = tmp_path / "tiny.npz"
    weights.save_arrays(path, weights.model_arrays(source))
    arrays, _ = weights.load_arrays(path)
    result = weights.assign_arrays(target, arrays, str(path))
    assert result.missing == [] and result.unexpected == [] and len(result.assigned) == 12
    np.testing.assert_allclose(source(x), target(x), rtol=1e-6)


def test_assign_reports_missing_unexpected_and_shapes_and_assigns_nothing():
    model = _tiny_model()
    before = weights.model_arrays(model)
    arrays = dict(before)
    del arrays["tiny/first/proj/bias"]
    arrays["tiny/first/proj/kernel"] = np.zeros((3, 5), np.float32)
    arrays["tiny/second/norm/gamma"] = np.full((2,), 9.0, np.float32)
    arrays["old/unused"] = np.zeros(1)
    with pytest.raises(WeightFileError) as info:
        weights.assign_arrays(model, arrays, "ckpt.npz")
    message = str(info.value)
    assert "ckpt.npz: missing keys (1: 'tiny/first/proj/bias')" in message
    assert "ckpt.npz: unexpected keys (1: 'old/unused')" in message
    assert "key 'tiny/first/proj/kernel' expected shape (3, 4), found (3, 5)" in message
    np.testing.assert_array_equal(weights.model_arrays(model)["tiny/second/norm/gamma"], before["tiny/second/norm/gamma"])


def test_assign_non_strict_loads_the_overlap_and_reports_the_rest():
    model = _tiny_model()
    gamma = np.full((2,), 3.0, np.float16)  # float16 file into float32 variables
    result = weights.assign_arrays(
        model, {"tiny/second/norm/gamma": gamma, "other/x": np.zeros(1)}, "partial.npz", strict=False
    )
    assert result.assigned == ["tiny/second/norm/gamma"]
    assert result.unexpected == ["other/x"] and len(result.missing) == 11
    np.testing.assert_array_equal(weights.model_arrays(model)["tiny/second/norm/gamma"], [3.0, 3.0])
    with pytest.raises(WeightFileError, match="expected shape"):
        weights.assign_arrays(model, {"tiny/second/norm/gamma": np.zeros(3)}, "p.npz", strict=False)


def test_assign_lists_at_most_ten_missing_keys():
    model = _tiny_model()
    with pytest.raises(WeightFileError, match=r"missing keys \(12: .*\.\.\. and 2 more\)"):
        weights.assign_arrays(model, {}, "empty.npz")


def test_assign_rejects_integer_arrays_for_float_variables():
    model = _tiny_model()
    arrays = weights.model_arrays(model)
    arrays["tiny/first/proj/bias"] = np.zeros(4, np.int32)
    with pytest.raises(WeightFileError, match="key 'tiny/first/proj/bias' expected dtype float32, found int32"):
        weights.assign_arrays(model, arrays, "ints.npz")


def test_unbuilt_model_is_an_error():
    with pytest.raises(ValueError, match="build it"):
        weights.model_arrays(_Tiny(name="unbuilt"))
