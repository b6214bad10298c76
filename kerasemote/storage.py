"""One set of file functions for local paths, mounted Google Drive and ``gs://`` URLs.

Every path argument in kerasemote may be

* a local path (``runs/broccoli/embedding.npz``),
* a mounted Google Drive path, which is just a local path in Colab
  (``/content/drive/MyDrive/emoji/...``),
* a Cloud Storage URL ``gs://bucket/key``.

Local writes are atomic: data goes to a temporary file in the target folder, then
``os.replace`` moves it into place, so an interrupted Colab session never leaves a
half-written checkpoint. A Cloud Storage upload only becomes visible once complete.

The ``gs://`` side (the client, its errors, listings) lives in ``kerasemote.storage_gcs``;
``google-cloud-storage`` is imported only when a ``gs://`` path is used.

``pathlib.Path("gs://b/k")`` collapses the double slash to ``gs:/b/k``; such paths are
read as ``gs://b/k``.
"""

from __future__ import annotations

import contextlib
import glob as _glob
import logging
import os
import shutil
import tempfile
import uuid
from typing import IO, Iterator, Union

from kerasemote import storage_gcs as gcs
from kerasemote.storage_gcs import GCS_PREFIX

PathLike = Union[str, "os.PathLike[str]"]
logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------- paths


def _fspath(path: PathLike) -> str:
    text = os.fspath(path)
    if not isinstance(text, str):
        raise TypeError(f"Paths must be str or os.PathLike[str], got {type(text).__name__}.")
    if text.startswith("gs:/") and not text.startswith(GCS_PREFIX):
        text = GCS_PREFIX + text[len("gs:/") :]  # pathlib.Path collapsed the "//"
    return text


def is_gcs(path: PathLike) -> bool:
    """Whether ``path`` is a Cloud Storage URL (``gs://bucket/key``)."""
    return _fspath(path).startswith(GCS_PREFIX)


def split_gcs(path: PathLike) -> tuple[str, str]:
    """Split ``gs://bucket/a/b`` into ``("bucket", "a/b")``."""
    return gcs.split_url(_fspath(path))


def join(*parts: PathLike) -> str:
    """Join path parts; ``gs://`` paths are joined with ``/`` whatever the OS."""
    texts = [_fspath(p) for p in parts]
    if not texts:
        raise ValueError("join() needs at least one path part.")
    if not is_gcs(texts[0]):
        return os.path.join(*texts)
    out = texts[0]
    for part in texts[1:]:
        if not part:
            continue
        out = part if is_gcs(part) else out.rstrip("/") + "/" + part.lstrip("/")
    return out


def same_path(a: PathLike, b: PathLike) -> bool:
    """Whether two paths name the same place (local: after resolving links; ``gs://``: the same key)."""
    first, second = _fspath(a), _fspath(b)
    if is_gcs(first) or is_gcs(second):
        return first.rstrip("/") == second.rstrip("/")
    return os.path.realpath(first) == os.path.realpath(second)


def basename(path: PathLike) -> str:
    """Last component of a local or ``gs://`` path (a trailing ``/`` is ignored)."""
    text = _fspath(path)
    return text.rstrip("/").rsplit("/", 1)[-1] if is_gcs(text) else os.path.basename(text)


def inside(folder: PathLike, name: object, file: PathLike, field: str) -> str:
    """``folder/name`` when ``name``, read from inside ``file``, names a place inside ``folder``.

    Files users hand us name other files (``config.json`` parts, an embeddings manifest, a
    diffusers index, a CSV or parquet cell). Such a name must stay inside the folder that holds
    the file: an absolute path, a ``..`` step, or (locally) a symlink resolving outside the folder
    is refused with one line naming the file, the field, what was expected and what was found.

    Args:
        folder: the folder the name is relative to (local or ``gs://``).
        name: the value read from the file.
        file: the file it was read from (for the message).
        field: the field that held it (for the message), e.g. ``"parts.unet"``.

    Returns:
        The joined path.
    """
    root = _fspath(folder)
    expected = f"a relative path inside {root}"
    if not isinstance(name, str) or not name.strip() or "\x00" in name:
        raise ValueError(f"{_fspath(file)}: field {field!r} expected {expected}, found {name!r}.")
    pieces = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or is_gcs(name) or ":" in pieces[0] or ".." in pieces:
        raise ValueError(f"{_fspath(file)}: field {field!r} expected {expected}, found {name!r}.")
    path = join(root, name)
    if not is_gcs(root) and not within(root, path):
        raise ValueError(f"{_fspath(file)}: field {field!r} expected {expected}, found {name!r} "
                         f"(it resolves to {os.path.realpath(path)}).")
    return path


def within(folder: PathLike, path: PathLike) -> bool:
    """Whether local ``path`` resolves (symlinks followed) to ``folder`` or a place inside it."""
    root = os.path.realpath(_fspath(folder))
    target = os.path.realpath(_fspath(path))
    return target == root or target.startswith(root.rstrip(os.sep) + os.sep)


def keep_within(folder: PathLike, paths: list[str], what: str = "images") -> list[str]:
    """``paths`` without the local ones that resolve outside ``folder`` (a symlink leading out of a user's
    data folder is never read); how many were left out, and one example, is logged as a warning."""
    if is_gcs(folder):
        return list(paths)
    kept = [p for p in paths if within(folder, p)]
    if len(kept) < len(paths):
        example = next(p for p in paths if p not in kept)
        logger.warning("%s: skipped %d %s that are links outside the folder, e.g. %s -> %s.", _fspath(folder),
                       len(paths) - len(kept), what, example, os.path.realpath(example))
    return kept


# ---------------------------------------------------------------------- queries


def exists(path: PathLike) -> bool:
    """Whether a file or folder exists (a gs:// folder exists if any object is under it)."""
    text = _fspath(path)
    return gcs.exists(text) if is_gcs(text) else os.path.exists(text)


def isdir(path: PathLike) -> bool:
    """Whether ``path`` is a folder (gs://: the bucket, or a prefix with objects under it)."""
    text = _fspath(path)
    return gcs.isdir(text) if is_gcs(text) else os.path.isdir(text)


def listdir(path: PathLike) -> list[str]:
    """Sorted names (not paths) of the files and folders directly inside ``path``."""
    text = _fspath(path)
    return gcs.listdir(text) if is_gcs(text) else sorted(os.listdir(text))


def glob(pattern: PathLike) -> list[str]:
    """Sorted paths matching ``pattern``.

    ``*``, ``?`` and ``[...]`` match inside one folder level; ``**`` crosses levels.
    A gs:// pattern in a missing bucket raises FileNotFoundError (locally: ``[]``).
    """
    text = _fspath(pattern)
    return gcs.glob(text) if is_gcs(text) else sorted(_glob.glob(text, recursive=True))


# ---------------------------------------------------------------------- reads


def read_bytes(path: PathLike) -> bytes:
    """All bytes of a local or gs:// file."""
    text = _fspath(path)
    if not is_gcs(text):
        with open(text, "rb") as f:
            return f.read()
    with gcs.errors(text):
        return gcs.blob_at(text).download_as_bytes()


@contextlib.contextmanager
def open_read(path: PathLike) -> Iterator[IO[bytes]]:
    """Binary, seekable file object; gs:// objects are streamed in chunks, not loaded whole."""
    text = _fspath(path)
    if not is_gcs(text):
        with open(text, "rb") as f:
            yield f
        return
    blob = gcs.blob_at(text)
    with gcs.errors(text):
        blob.reload()  # fail here, naming the path, rather than at the first read
    with blob.open("rb") as f:
        yield f


@contextlib.contextmanager
def local_copy(path: PathLike) -> Iterator[str]:
    """A real local filename for ``path`` (for h5py, PIL...); gs:// is downloaded to a temp file.

    Example:
        >>> with local_copy("gs://bucket/model.h5") as filename:  # doctest: +SKIP
        ...     h5py.File(filename, "r")
    """
    text = _fspath(path)
    if not is_gcs(text):
        if not os.path.exists(text):
            raise FileNotFoundError(f"No such file: {text}.")
        yield text
        return
    with tempfile.TemporaryDirectory(prefix="kerasemote-") as tmp:
        filename = os.path.join(tmp, basename(text))
        with gcs.errors(text):
            gcs.blob_at(text).download_to_filename(filename)
        yield filename


# ---------------------------------------------------------------------- writes


def makedirs(path: PathLike) -> None:
    """Create a local folder and its parents; a no-op for gs:// (folders are key prefixes)."""
    text = _fspath(path)
    if not is_gcs(text):
        os.makedirs(text, exist_ok=True)


def _temp_beside(target: str) -> str:
    folder = os.path.dirname(os.path.abspath(target))
    os.makedirs(folder, exist_ok=True)
    # Keep the extension last: writers such as PIL pick the format from it.
    return os.path.join(folder, f".tmp-{uuid.uuid4().hex[:8]}-{os.path.basename(target)}")


def _write_local_atomic(target: str, data: bytes) -> None:
    tmp = _temp_beside(target)
    try:
        # os.open applies the umask, so the file gets the usual 0644 (not mkstemp's 0600).
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` atomically, creating parent folders; readers never see a partial file."""
    text = _fspath(path)
    if not is_gcs(text):
        _write_local_atomic(text, bytes(data))
        return
    with gcs.errors(text):
        gcs.blob_at(text).upload_from_string(bytes(data), content_type="application/octet-stream")


@contextlib.contextmanager
def local_output(path: PathLike) -> Iterator[str]:
    """A local temp filename to write; on success it atomically becomes ``path``.

    For writers that need a real file (``np.savez``, h5py, PIL, GIF writers) and for
    large files that should not be held in memory. On an exception nothing is written.

    Example:
        >>> with local_output("gs://bucket/grid.png") as filename:  # doctest: +SKIP
        ...     image.save(filename, format="PNG")
    """
    text = _fspath(path)
    if is_gcs(text):
        gcs.blob_at(text)  # validate the URL before the caller does the work
        with tempfile.TemporaryDirectory(prefix="kerasemote-") as tmp:
            filename = os.path.join(tmp, basename(text))
            yield filename
            with gcs.errors(text):
                gcs.blob_at(text).upload_from_filename(filename)
        return
    tmp = _temp_beside(text)
    try:
        yield tmp
        if not os.path.exists(tmp):
            raise FileNotFoundError(f"Nothing was written to the temporary file for {text}.")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())  # data on disk before the rename makes it visible
        os.replace(tmp, text)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def remove(path: PathLike) -> None:
    """Delete one file (not a folder)."""
    text = _fspath(path)
    if not is_gcs(text):
        if not os.path.lexists(text):
            raise FileNotFoundError(f"No such file: {text}.")
        os.remove(text)
        return
    with gcs.errors(text):
        gcs.blob_at(text).delete()


def upload_dir(local_dir: PathLike, gs_dir: PathLike) -> list[str]:
    """Copy every file under ``local_dir`` to ``gs_dir``, keeping relative paths.

    Returns:
        The gs:// paths written, sorted.
    """
    src, dst = _fspath(local_dir), _fspath(gs_dir)
    if not is_gcs(dst):
        raise ValueError(f"upload_dir destination must be gs://, got {dst!r}.")
    if not os.path.isdir(src):
        raise FileNotFoundError(f"No such folder: {src}.")
    written = []
    for root, _, files in os.walk(src):
        for name in sorted(files):
            local = os.path.join(root, name)
            rel = os.path.relpath(local, src).replace(os.sep, "/")
            target = join(dst, rel)
            with gcs.errors(target):
                gcs.blob_at(target).upload_from_filename(local)
            written.append(target)
    return sorted(written)


def download_dir(gs_dir: PathLike, local_dir: PathLike) -> list[str]:
    """Copy every object under ``gs_dir`` into ``local_dir``, keeping relative paths.

    Returns:
        The local paths written, sorted.
    """
    src, dst = _fspath(gs_dir), _fspath(local_dir)
    bucket, key = split_gcs(src)
    prefix = key.rstrip("/") + "/" if key.strip("/") else ""
    written = []
    with gcs.errors(src):
        for blob in gcs.list_blobs(bucket, prefix):
            rel = blob.name[len(prefix) :]
            if not rel or rel.endswith("/"):
                continue  # folder placeholder objects
            target = os.path.join(dst, *rel.split("/"))
            if not os.path.abspath(target).startswith(os.path.abspath(dst) + os.sep):
                raise ValueError(f"Object {blob.name!r} in {src} would be written outside {dst}.")
            with local_output(target) as tmp:
                blob.download_to_filename(tmp)
            written.append(target)
    if not written:
        raise FileNotFoundError(f"No files under {src} ({gcs.bucket_state(bucket)}).")
    return sorted(written)


def copy(src: PathLike, dst: PathLike) -> None:
    """Copy one file between any two locations (local, Drive, gs://); the write is atomic."""
    with local_copy(src) as filename, local_output(dst) as tmp:
        shutil.copyfile(filename, tmp)
