"""Tests for kerasemote.storage on local paths and on a Cloud Storage emulator."""

import os
import pathlib

import pytest
from gcs_fixture import BUCKET, gcs_bucket, gcs_emulator  # noqa: F401  (pytest fixtures)

from kerasemote import storage, storage_gcs

# ---------------------------------------------------------------------- paths


def test_is_gcs_and_split_recognise_gs_urls_even_from_pathlib():
    assert storage.is_gcs("gs://b/k") and not storage.is_gcs("/content/drive/MyDrive/x")
    assert storage.split_gcs("gs://b/a/b.npz") == ("b", "a/b.npz")
    assert storage.split_gcs(pathlib.Path("gs://b/a/b.npz")) == ("b", "a/b.npz")
    with pytest.raises(ValueError, match="no bucket"):
        storage.split_gcs("gs:///key")


def test_join_uses_slashes_for_gs_and_os_join_locally():
    assert storage.join("gs://b/runs/", "exp1", "w.npz") == "gs://b/runs/exp1/w.npz"
    assert storage.join("gs://b", "x") == "gs://b/x"
    assert storage.join("runs", "exp1") == os.path.join("runs", "exp1")


# ---------------------------------------------------------------------- local


def test_local_write_is_atomic_and_creates_parents(tmp_path):
    target = tmp_path / "a" / "b" / "w.bin"
    storage.write_bytes(target, b"one")
    storage.write_bytes(target, b"two")
    assert storage.read_bytes(target) == b"two"
    assert os.listdir(target.parent) == ["w.bin"]  # no temp file left behind
    assert (os.stat(target).st_mode & 0o777) == (0o666 & ~_umask())


def _umask():
    current = os.umask(0)
    os.umask(current)
    return current


def test_local_output_leaves_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "grid.png"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with storage.local_output(target) as tmp:
            assert tmp.endswith("grid.png")  # writers that pick a format by extension work
            open(tmp, "wb").write(b"half")
            raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["grid.png"]


def test_local_queries_list_glob_and_remove(tmp_path):
    for rel in ["x/1.png", "x/2.png", "x/sub/3.png", "y.txt"]:
        storage.write_bytes(tmp_path / rel, b".")
    root = str(tmp_path)
    assert storage.listdir(root) == ["x", "y.txt"]
    assert storage.glob(os.path.join(root, "x", "*.png")) == [
        os.path.join(root, "x", n) for n in ("1.png", "2.png")
    ]
    assert len(storage.glob(os.path.join(root, "**", "*.png"))) == 3
    assert storage.isdir(os.path.join(root, "x")) and not storage.isdir(os.path.join(root, "y.txt"))
    storage.remove(os.path.join(root, "y.txt"))
    assert not storage.exists(os.path.join(root, "y.txt"))


def test_local_missing_file_errors_name_the_path(tmp_path):
    missing = str(tmp_path / "nope.npz")
    for call in (storage.read_bytes, storage.remove):
        with pytest.raises(FileNotFoundError, match="nope.npz"):
            call(missing)
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        with storage.local_copy(missing):
            pass


# ---------------------------------------------------------------------- gs://


def test_gcs_write_read_and_exists(gcs_bucket):
    path = storage.join(gcs_bucket, "emb", "broccoli.npz")
    assert not storage.exists(path)
    storage.write_bytes(path, b"\x00\x01data")
    assert storage.read_bytes(path) == b"\x00\x01data"
    assert storage.exists(path) and storage.exists(storage.join(gcs_bucket, "emb"))
    assert storage.isdir(storage.join(gcs_bucket, "emb")) and not storage.isdir(path)


def test_gcs_open_read_streams_and_seeks(gcs_bucket):
    path = gcs_bucket + "/big.bin"
    payload = bytes(range(256)) * 1000
    storage.write_bytes(path, payload)
    with storage.open_read(path) as f:
        f.seek(1000)
        assert f.read(16) == payload[1000:1016]


def test_gcs_listdir_and_glob_stay_in_one_folder(gcs_bucket):
    for rel in ["imgs/a.png", "imgs/b.jpg", "imgs/deep/c.png", "top.txt"]:
        storage.write_bytes(f"{gcs_bucket}/{rel}", b".")
    assert storage.listdir(gcs_bucket) == ["imgs", "top.txt"]
    assert storage.listdir(gcs_bucket + "/imgs/") == ["a.png", "b.jpg", "deep"]
    assert storage.glob(gcs_bucket + "/imgs/*.png") == [gcs_bucket + "/imgs/a.png"]
    assert storage.glob(gcs_bucket + "/imgs/**.png") == [
        gcs_bucket + "/imgs/a.png",
        gcs_bucket + "/imgs/deep/c.png",
    ]
    assert storage.glob(gcs_bucket + "/im*") == [gcs_bucket + "/imgs"]
    assert storage.glob(gcs_bucket + "/imgs/[ab].*") == [gcs_bucket + "/imgs/a.png", gcs_bucket + "/imgs/b.jpg"]


def test_gcs_local_copy_gives_a_real_file(gcs_bucket):
    storage.write_bytes(gcs_bucket + "/model.h5", b"hdf5-bytes")
    with storage.local_copy(gcs_bucket + "/model.h5") as filename:
        assert os.path.isfile(filename) and filename.endswith("model.h5")
        assert open(filename, "rb").read() == b"hdf5-bytes"
    assert not os.path.exists(filename)


def test_gcs_local_output_uploads_only_on_success(gcs_bucket):
    path = gcs_bucket + "/out.gif"
    with pytest.raises(RuntimeError):
        with storage.local_output(path) as tmp:
            open(tmp, "wb").write(b"half")
            raise RuntimeError("crash")
    assert not storage.exists(path)
    with storage.local_output(path) as tmp:
        open(tmp, "wb").write(b"GIF89a")
    assert storage.read_bytes(path) == b"GIF89a"


def test_upload_and_download_dir_round_trip(gcs_bucket, tmp_path):
    src = tmp_path / "src"
    for rel, data in {"a.npy": b"1", "sub/b.json": b"{}"}.items():
        storage.write_bytes(src / rel, data)
    written = storage.upload_dir(src, gcs_bucket + "/run")
    assert written == [gcs_bucket + "/run/a.npy", gcs_bucket + "/run/sub/b.json"]
    local = storage.download_dir(gcs_bucket + "/run", tmp_path / "dst")
    assert sorted(os.path.relpath(p, tmp_path / "dst") for p in local) == ["a.npy", os.path.join("sub", "b.json")]
    assert (tmp_path / "dst" / "sub" / "b.json").read_bytes() == b"{}"


def test_gcs_remove_and_missing_object_errors(gcs_bucket):
    path = gcs_bucket + "/gone.bin"
    storage.write_bytes(path, b"x")
    storage.remove(path)
    with pytest.raises(FileNotFoundError, match=f"gone.bin.*bucket '{BUCKET}' exists"):
        storage.read_bytes(path)
    with pytest.raises(FileNotFoundError, match="gone.bin"):
        storage.remove(path)
    with pytest.raises(FileNotFoundError, match="gone.bin"):
        with storage.open_read(path):
            pass


def test_missing_bucket_error_says_how_to_authenticate(gcs_emulator):
    assert not storage.exists("gs://no-such-bucket/x.npz")
    assert not storage.isdir("gs://no-such-bucket/runs")
    with pytest.raises(FileNotFoundError, match=r"bucket 'no-such-bucket' does not exist.*auth\.authenticate_user"):
        storage.read_bytes("gs://no-such-bucket/x.npz")


def test_missing_credentials_error_says_how_to_authenticate(monkeypatch, tmp_path):
    pytest.importorskip("google.cloud.storage")
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-key.json"))
    storage_gcs._make_client.cache_clear()
    try:
        with pytest.raises(storage_gcs.StorageAuthError, match=r"from google\.colab import auth"):
            storage.read_bytes("gs://some-bucket/x.npz")
    finally:
        storage_gcs._make_client.cache_clear()
