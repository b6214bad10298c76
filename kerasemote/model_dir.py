"""The model directory on disk: written so that a reader sees all of the old model or all of the new one.

A save writes every part under file names the current ``config.json`` does not use, then
writes ``config.json`` (one atomic file write: the commit) naming those files with the byte
count and sha256 of each and a fresh model id, then removes the previous save's files::

    my-model/
      config.json        model config, tokenizer, parts, model_id, part_bytes, part_sha256
      text_encoder.npz  unet.npz  vae_encoder.npz  vae_decoder.npz          one save
      text_encoder.b.npz  unet.b.npz  vae_encoder.b.npz  vae_decoder.b.npz  the next save

Saves alternate between these two name sets, so a process killed at any point leaves a
``config.json`` that names one complete set of parts: the old one until the commit, the new
one after it.

Why name sets and not a folder swap (write ``my-model.new/``, rename it over ``my-model``):

* one scheme for local folders, mounted Drive and ``gs://`` (where a folder cannot be renamed;
  objects are uploaded, then ``config.json`` last);
* the folder itself never disappears, so no recovery step has to guess which of two folders
  holds the model, and a folder that is a mount point, a symlink or the working directory
  saves the same way;
* other files kept in the folder (a model card, a README) are left alone.

Checks on load: every ``parts.*`` name must stay inside the folder (``storage.inside``), and
when ``config.json`` records ``part_sha256`` (every save does; folders written by earlier
versions do not and load unchecked), each part's size and sha256 must match, so a folder
that mixes parts of two saves is refused with one line naming the file, what was expected
and what was found. Hashing reads every part once more: about 1.5 GB/s on one CPU core, so
a few milliseconds for the tiny models and about 2-3 s for a 4 GB float32 SD 1.5 folder
(beside the minutes its weights take to build and assign). A full hash rather than a
header or tail is kept because it also catches a truncated or bit-flipped part.

Leftovers of a killed save (``.tmp-*`` files, parts of the name set ``config.json`` does
not name) are removed by the next save and, locally, by the next load. Local folders are
locked with ``flock``: a save holds the lock exclusively, a load shares it (a load waits for
a save in progress, then reads the new model), and a load cleans up only when no other
process holds the lock. On ``gs://`` (no locks) only saves clean up, and a load racing a
save may fail naming a missing or mismatched part; it never mixes two models.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import uuid
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np

from kerasemote import storage, weights
from kerasemote.lazy import LazyArray

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; saves and loads run unlocked
    fcntl = None

FORMAT = "kerasemote-model"
FORMAT_VERSION = 1
PARTS = ("text_encoder", "unet", "vae_encoder", "vae_decoder")
CONFIG_FILE = "config.json"
# The two name sets a save alternates between; a third, unique one if a hand-edited config uses both.
NAME_SETS = ("{part}.npz", "{part}.b.npz")
# Fields the save writes; callers' extra facts may not replace them.
RESERVED = ("format", "version", "parts", "model_id", "part_bytes", "part_sha256")
_LEFTOVER = re.compile(r"^(\.tmp-[0-9a-f]{8}-.*|(" + "|".join(PARTS) + r")(\.b|\.g[0-9a-f]{8})?\.npz)$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 22

WritePart = Callable[[str], None]


class PartMismatchError(weights.WeightFileError):
    """A part file is not the one ``config.json`` names (another save's part, truncated, altered)."""


# ---------------------------------------------------------------------- locking


class _Lock:
    """An ``flock`` on the folder; ``sole`` says whether this process holds it exclusively."""

    def __init__(self, directory: str, exclusive: bool):
        self.fd: int | None = None
        self.sole = False
        if storage.is_gcs(directory) or fcntl is None:
            return
        try:
            self.fd = os.open(directory, os.O_RDONLY)
        except OSError:
            return
        try:
            if exclusive:
                fcntl.flock(self.fd, fcntl.LOCK_EX)
                self.sole = True
                return
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.sole = True
            except BlockingIOError:  # another reader or a save: wait for a save to finish
                fcntl.flock(self.fd, fcntl.LOCK_SH)
        except OSError:  # file systems without flock (some network mounts): run unlocked
            self.release()

    def share(self) -> None:
        """Let other readers in (after a load's cleanup)."""
        if self.fd is not None and self.sole:
            fcntl.flock(self.fd, fcntl.LOCK_SH)
            self.sole = False

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the lock; a killed process drops it too
            self.fd = None


@contextlib.contextmanager
def _locked(directory: str, exclusive: bool) -> Iterator[_Lock]:
    lock = _Lock(directory, exclusive)
    try:
        yield lock
    finally:
        lock.release()


# ---------------------------------------------------------------------- reading


def file_digest(filename: str) -> tuple[int, str]:
    """``(bytes, sha256 hex)`` of a local file, read in chunks."""
    digest, size = hashlib.sha256(), 0
    with open(filename, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


class ModelFiles:
    """What a model directory's ``config.json`` says: the manifest, each part's file and checksum.

    Attributes:
        directory: the model directory.
        config_file: its ``config.json``.
        manifest: the parsed ``config.json``.
        files: part -> file path, confined to the directory.
        expected: part -> ``(bytes, sha256)``, or None for a folder saved without checksums.
    """

    def __init__(self, directory: str):
        self.directory = storage._fspath(directory)
        self.config_file = storage.join(self.directory, CONFIG_FILE)
        if not storage.exists(self.config_file):
            raise FileNotFoundError(
                f"{self.directory} is not a kerasemote model directory (no config.json). Create one with "
                "`kerasemote convert SRC --out DIR` or `kerasemote init-model --config tiny --out DIR`."
            )
        try:
            manifest = json.loads(storage.read_bytes(self.config_file))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{self.config_file}: not valid JSON ({err}).") from None
        if not isinstance(manifest, dict):
            raise ValueError(f"{self.config_file}: expected a JSON object, found {type(manifest).__name__}.")
        if manifest.get("format") != FORMAT:
            raise ValueError(f"{self.config_file}: expected format {FORMAT!r}, found {manifest.get('format')!r}.")
        version = manifest.get("version", FORMAT_VERSION)
        if type(version) is not int or not 1 <= version <= FORMAT_VERSION:
            raise ValueError(f"{self.config_file}: field 'version' expected an integer from 1 to {FORMAT_VERSION}, "
                             f"found {version!r}.")
        self.manifest = manifest
        names = self._field("parts", {})
        self.files = {
            part: storage.inside(self.directory, names.get(part, f"{part}.npz"), self.config_file, f"parts.{part}")
            for part in PARTS
        }
        self.expected = self._checksums()
        self._verified: set[str] = set()

    def _field(self, field: str, default: Any) -> Any:
        value = self.manifest.get(field, default)
        if not isinstance(value, dict):
            raise ValueError(f"{self.config_file}: field {field!r} expected a JSON object, found {value!r}.")
        return value

    def _checksums(self) -> dict[str, tuple[int, str]] | None:
        if not any(key in self.manifest for key in ("model_id", "part_bytes", "part_sha256")):
            return None  # saved before checksums were recorded
        sizes, digests = self._field("part_bytes", {}), self._field("part_sha256", {})
        expected = {}
        for part in PARTS:
            size, digest = sizes.get(part), digests.get(part)
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise ValueError(f"{self.config_file}: field 'part_bytes.{part}' expected a byte count, "
                                 f"found {size!r}.")
            if not isinstance(digest, str) or not _SHA256.match(digest):
                raise ValueError(f"{self.config_file}: field 'part_sha256.{part}' expected 64 hex digits, "
                                 f"found {digest!r}.")
            expected[part] = (size, digest)
        return expected

    @property
    def names(self) -> set[str]:
        """The part files' names relative to the directory (what cleanup keeps)."""
        return {storage.basename(path) for path in self.files.values()}

    def verify(self, part: str, filename: str | None = None) -> None:
        """Refuse a part whose size or sha256 differs from ``config.json`` (no-op without checksums).

        Args:
            part: the part name.
            filename: a local copy of the part (a ``gs://`` part is downloaded first); its own path if None.
        """
        if self.expected is None or part in self._verified:
            return
        path = self.files[part]
        if filename is None:
            with storage.local_copy(path) as local:
                return self.verify(part, local)
        size, digest = self.expected[part]
        found_size = os.path.getsize(filename)
        found = (found_size, digest) if found_size != size else file_digest(filename)
        if found != (size, digest):
            raise PartMismatchError(
                f"{path}: not the {part} that {self.config_file} names (model {self.manifest.get('model_id')}): "
                f"expected {size} bytes with sha256 {digest}, found {found[0]} bytes with sha256 "
                f"{'(not computed)' if found_size != size else found[1]}; the folder mixes files of different saves."
            )
        self._verified.add(part)

    def read(self, part: str) -> dict[str, np.ndarray]:
        """The part's arrays, after its checksum is verified."""
        path = self.files[part]
        with storage.local_copy(path) as filename:
            self.verify(part, filename)
            try:
                arrays, _ = weights.load_arrays(filename)
            except weights.WeightFileError as err:  # name the gs:// object, not its download
                raise type(err)(str(err).replace(filename, path)) from None
        return arrays

    @contextlib.contextmanager
    def lazy(self, part: str) -> Iterator[dict[str, LazyArray]]:
        """The part's arrays, verified, each read when NumPy asks for it (``weights.lazy_arrays``).

        Loading through it holds one array at a time beside the model, instead of a whole part.
        """
        path = self.files[part]
        with storage.local_copy(path) as filename:
            self.verify(part, filename)
            try:
                with weights.lazy_arrays(filename) as (arrays, _):
                    yield arrays
            except weights.WeightFileError as err:  # name the gs:// object, not its download
                raise type(err)(str(err).replace(filename, path)) from None


@contextlib.contextmanager
def reading(directory: str) -> Iterator[ModelFiles]:
    """Open a model directory for reading; no save can commit while the block runs (locally).

    Leftovers of a killed save are removed first when no other process holds the folder;
    local parts are verified against their checksums before the block runs (``gs://`` parts
    as they are read, so each is downloaded once).

    Example:
        >>> with reading("my-model") as found:  # doctest: +SKIP
        ...     unet_arrays = found.read("unet")
    """
    text = storage._fspath(directory)
    with _locked(text, exclusive=False) as lock:
        if lock.sole:
            remove_leftovers(text, keep=ModelFiles(text).names)
            lock.share()  # not atomic: a save may commit in between, so config.json is read after it
        found = ModelFiles(text)
        if not storage.is_gcs(text):
            for part in PARTS:  # refuse a mixed folder before the caller builds a model for it
                found.verify(part)
        yield found


# ---------------------------------------------------------------------- writing


def remove_leftovers(directory: str, keep: Iterable[str]) -> list[str]:
    """Remove ``.tmp-*`` files and part files outside ``keep`` from the folder; returns the paths removed.

    Only names a save writes are touched (``.tmp-<8 hex>-*``, ``<part>.npz``, ``<part>.b.npz``,
    ``<part>.g<8 hex>.npz``); a file that cannot be removed (read-only folder) is left.
    """
    keep = set(keep) | {CONFIG_FILE}
    try:
        names = storage.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    removed = []
    for name in names:
        if name in keep or not _LEFTOVER.match(name):
            continue
        path = storage.join(directory, name)
        with contextlib.suppress(OSError):
            storage.remove(path)
            removed.append(path)
    return removed


def _names_in_use(directory: str) -> set[str]:
    try:
        return ModelFiles(directory).names
    except (OSError, ValueError):  # no model here, or not a readable one: nothing to keep
        return set()


def _free_name_set(in_use: set[str]) -> str:
    for pattern in NAME_SETS:
        if not in_use & {pattern.format(part=part) for part in PARTS}:
            return pattern
    return "{part}.g" + uuid.uuid4().hex[:8] + ".npz"


def _sync_folder(directory: str) -> None:
    """Make the renames inside a local folder durable (power loss), before and after the commit."""
    if storage.is_gcs(directory) or not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_part(directory: str, name: str, write: WritePart) -> tuple[int, str]:
    target = storage.join(directory, name)
    if not storage.is_gcs(target):
        write(target)
        return file_digest(target)
    with tempfile.TemporaryDirectory(prefix="kerasemote-") as tmp:
        local = os.path.join(tmp, name)
        write(local)
        digest = file_digest(local)
        storage.upload_dir(tmp, directory)  # exactly this one file, under its name
    return digest


def write(directory: str, parts: Iterable[tuple[str, WritePart]], manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Write a model directory so that readers see the old model or the new one, never a mixture.

    Args:
        directory: local, Drive or ``gs://`` folder (created if missing).
        parts: ``(part, write)`` for every name in ``PARTS``; ``write(path)`` writes that part's
            file at a local path (atomically, e.g. ``weights.save_arrays``). Consumed one at a
            time, so only one part's arrays need to be in memory.
        manifest: the rest of ``config.json`` (config, tokenizer, dtype, extra facts).

    Returns:
        The ``config.json`` written.
    """
    clash = sorted(set(manifest) & set(RESERVED))
    if clash:
        raise ValueError(f"{directory}: config.json fields {clash} are written by the save itself; "
                         "choose other names for extra facts.")
    text = storage._fspath(directory)
    storage.makedirs(text)
    with _locked(text, exclusive=True):
        in_use = _names_in_use(text)
        remove_leftovers(text, keep=in_use)
        pattern = _free_name_set(in_use)
        names, sizes, digests = {}, {}, {}
        for part, write_part in parts:
            names[part] = pattern.format(part=part)
            sizes[part], digests[part] = _write_part(text, names[part], write_part)
        if set(names) != set(PARTS):
            raise ValueError(f"{text}: a save writes the parts {list(PARTS)}, got {sorted(names)}.")
        final = {"format": FORMAT, "version": FORMAT_VERSION, **manifest, "parts": names,
                 "model_id": uuid.uuid4().hex, "part_bytes": sizes, "part_sha256": digests}
        _sync_folder(text)
        storage.write_bytes(storage.join(text, CONFIG_FILE), json.dumps(final, indent=2).encode())  # the commit
        _sync_folder(text)
        remove_leftovers(text, keep=names.values())
    return final


def copy(source: str, target: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Copy a model directory (each part verified against its checksum), adding ``extra`` facts.

    Returns:
        The ``config.json`` written to ``target``.
    """
    if storage.same_path(source, target):
        raise ValueError(f"Copying model directory {source} onto itself; choose another target.")
    with reading(source) as found:
        manifest = {key: value for key, value in found.manifest.items() if key not in RESERVED}

        def copier(part: str) -> WritePart:
            def write_copy(path: str) -> None:
                found.verify(part)
                storage.copy(found.files[part], path)
            return write_copy

        return write(target, [(part, copier(part)) for part in PARTS], {**manifest, **(extra or {})})
