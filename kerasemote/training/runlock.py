"""One run per output folder: a lock file while a run writes there, and no fresh run over another's files.

``OUT/run.lock`` names the process that trains into ``OUT``: its pid, host and start time.
A second run on the same folder stops at once with one line naming the holder. A lock whose
holder is gone (same host and no such process, or a process of an earlier boot) is stale: it
is taken over with a warning. A lock written on another host is respected, since no process
there can be checked, unless the run takes it over on purpose (``force=True``,
``--force-unlock``). Inside one process a lock also covers the subfolders of its folder, so a
recipe that holds ``OUT`` can train a stage in ``OUT/stage`` (one ``--force-unlock`` frees both).

On ``gs://`` the lock is an object with the same content, created only if absent (a
generation precondition, and read back). That is best effort: two runs starting within
the same moment may both get past a store that ignores the precondition, and a lock
left on a machine that can no longer be checked needs ``--force-unlock``.

A run that does not continue the folder's own checkpoints refuses a folder holding another
run's files (checkpoints, ``train.json``, loss curve, validation images, TensorBoard logs)
unless ``overwrite``: then exactly those files, and the outputs ``train.json`` names, are
deleted before the first step, so the folder never mixes two runs.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import shutil
import socket
import uuid
from typing import Iterator, Sequence

from kerasemote import storage
from kerasemote.training.checkpoints import FOLDER as CHECKPOINT_DIR

logger = logging.getLogger(__name__)

LOCK_FILE = "run.lock"
SUMMARY_FILE = "train.json"
LOSS_CURVE = "loss.png"
VALIDATION_DIR = "validation"
TENSORBOARD_DIR = "tensorboard"
# What the training loop writes into a run folder besides the strategy's outputs (named in train.json).
RUN_ENTRIES = (CHECKPOINT_DIR, SUMMARY_FILE, LOSS_CURVE, VALIDATION_DIR, TENSORBOARD_DIR)

_HELD: dict[str, bytes] = {}  # folder key -> the lock content this process wrote


class RunFolderError(RuntimeError):
    """The run folder is in use by another run, or holds another run's files."""


# ---------------------------------------------------------------------- the lock


@contextlib.contextmanager
def claim(out_dir: str, resume: object = False, overwrite: bool = False, force: bool = False,
          entries: Sequence[str] = RUN_ENTRIES) -> Iterator[bool]:
    """Hold ``out_dir`` for one run and check it may start there; yields whether to clear the previous run.

    Args:
        out_dir: the run folder.
        resume: ``train``'s argument (see ``continues``).
        overwrite: a run that does not continue the folder may replace another run's files.
        force: take over a lock whose holder cannot be shown to be gone.
        entries: the names in the folder that belong to a run (default: what ``train`` writes).

    Raises:
        RunFolderError: the folder is in use, or holds another run's files and the run
            neither continues it nor overwrites it.
        ValueError: ``overwrite`` with a ``resume`` that continues the folder.
    """
    continuing = continues(out_dir, resume)
    if overwrite and continuing:
        named = "" if resume is True else f" {resume}"
        raise ValueError(f"{out_dir}: --overwrite deletes the run that --resume{named} continues; expected one "
                         "of them, found both.")
    with hold(out_dir, force=force):
        yield bool(not continuing and check_fresh(out_dir, overwrite, entries))


@contextlib.contextmanager
def hold(out_dir: str, force: bool = False) -> Iterator[None]:
    """Hold ``out_dir/run.lock`` for the ``with`` block.

    Args:
        out_dir: the run folder (local, Drive or gs://); created if missing.
        force: take over a lock even when its holder cannot be shown to be gone
            (another host, an unreadable lock file).

    Raises:
        RunFolderError: another live run holds the folder (its pid, host and start named).

    Example:
        >>> with hold("runs/emoji"):  # doctest: +SKIP
        ...     ...  # write checkpoints
    """
    key = _key(out_dir)
    if any(key == held or key.startswith(held + "/") for held in _HELD):
        yield  # this process holds the folder, or one above it, already
        return
    path = storage.join(out_dir, LOCK_FILE)
    storage.makedirs(out_dir)
    _HELD[key] = _acquire(path, force)
    try:
        yield
    finally:
        mine = _HELD.pop(key)
        with contextlib.suppress(OSError):
            if _read_raw(path) == mine:
                storage.remove(path)


def _key(out_dir: str) -> str:
    text = os.fspath(out_dir)
    return text.rstrip("/") if storage.is_gcs(text) else os.path.realpath(text).replace(os.sep, "/")


def _acquire(path: str, force: bool) -> bytes:
    mine = json.dumps({
        "pid": os.getpid(), "host": socket.gethostname(), "boot": _boot_id(),
        "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "id": uuid.uuid4().hex,
    }).encode()
    for _ in range(5):
        if _create(path, mine):
            return mine
        raw = _read_raw(path)
        if raw is None:
            continue  # released between our try and our read
        holder = _parse(raw)
        reason = _stale_reason(holder)
        if reason is None and not force:
            raise RunFolderError(_in_use(path, raw, holder))
        logger.warning("%s: taking over the lock of %s: %s.", path, _who(raw, holder),
                       reason or "--force-unlock was given")
        _take_over(path, raw)
    raise RunFolderError(f"{path}: other runs keep taking this folder's lock; expected it free, found it "
                         "changing hands; start one run per folder.")


def _who(raw: bytes, holder: dict | None) -> str:
    if holder is None:
        return f"an unreadable lock file ({raw[:60]!r})"
    return f"pid {holder['pid']} on host {holder['host']} (started {holder.get('started', '?')})"


def _in_use(path: str, raw: bytes, holder: dict | None) -> str:
    message = f"{path}: the folder is in use by {_who(raw, holder)}; wait for that run to end or use another --out"
    if holder is None or holder["host"] != socket.gethostname() or storage.is_gcs(path):
        message += " (if that run is gone, --force-unlock takes the lock over)"
    return message + "."


def _parse(raw: bytes) -> dict | None:
    try:
        holder = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(holder, dict) or not isinstance(holder.get("pid"), int) or not isinstance(holder.get("host"), str):
        return None
    return holder


def _stale_reason(holder: dict | None) -> str | None:
    """Why the lock's holder is surely gone, or None when it may still run."""
    if holder is None or holder["host"] != socket.gethostname():
        return None
    boot = _boot_id()
    if boot and holder.get("boot") and holder["boot"] != boot:
        return "it was written before this machine restarted"
    if holder["pid"] == os.getpid():  # not held by this process (see hold): an earlier process with our pid
        return f"pid {holder['pid']} is this process"
    if not _alive(holder["pid"]):
        return f"process {holder['pid']} has ended"
    return None


def _alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill would end the process there; a lock on Windows needs --force-unlock
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a process of another user
        return True
    try:  # an ended child its parent has not reaped yet still answers kill(0)
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def _boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return None


def _create(path: str, data: bytes) -> bool:
    """Create the lock file holding ``data`` unless it exists; True if created."""
    if storage.is_gcs(path):
        from google.api_core.exceptions import PreconditionFailed

        from kerasemote import storage_gcs

        if storage.exists(path):
            return False
        try:
            with storage_gcs.errors(path):
                storage_gcs.blob_at(path).upload_from_string(data, if_generation_match=0)
        except PreconditionFailed:
            return False
        return _read_raw(path) == data  # where the precondition is ignored (emulators), the last writer wins
    tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    try:
        os.link(tmp, path)  # atomic, and a reader never sees a half-written lock
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links (some mounted drives): exclusive create, then write
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True
    finally:
        os.remove(tmp)


def _read_raw(path: str) -> bytes | None:
    try:
        return storage.read_bytes(path)
    except FileNotFoundError:
        return None


def _take_over(path: str, seen: bytes) -> None:
    """Remove the lock ``seen`` so the next create can succeed; a lock another run took meanwhile stays."""
    if storage.is_gcs(path):
        with contextlib.suppress(FileNotFoundError):
            if _read_raw(path) == seen:
                storage.remove(path)
        return
    grave = f"{path}.{uuid.uuid4().hex[:8]}.stale"
    try:
        os.rename(path, grave)
    except FileNotFoundError:
        return
    with open(grave, "rb") as f:
        moved = f.read()
    if moved != seen:  # another run took the stale lock first: give its lock back
        with contextlib.suppress(FileExistsError):
            os.link(grave, path)
    os.remove(grave)


# ---------------------------------------------------------------------- another run's files


def previous_run(out_dir: str, entries: Sequence[str] = RUN_ENTRIES) -> list[str]:
    """The ``entries`` of ``out_dir`` that exist (files a run left there)."""
    if not storage.isdir(out_dir):
        return []
    return [name for name in entries if storage.exists(storage.join(out_dir, name))]


def check_fresh(out_dir: str, overwrite: bool, entries: Sequence[str] = RUN_ENTRIES) -> list[str]:
    """The previous run's entries a fresh run in ``out_dir`` will delete (empty when there are none).

    Raises:
        RunFolderError: the folder holds another run's files and ``overwrite`` is False.
    """
    found = previous_run(out_dir, entries)
    if found and not overwrite:
        raise RunFolderError(
            f"{out_dir}: expected a folder without another run's files, found {', '.join(found)}; continue that "
            "run with --resume, delete its files and start afresh with --overwrite, or use another --out."
        )
    return found


def clear_previous_run(out_dir: str, entries: Sequence[str] = RUN_ENTRIES) -> list[str]:
    """Delete the ``entries`` of ``out_dir`` and the outputs its ``train.json`` names; returns what went.

    Output names are confined to ``out_dir`` (``storage.inside``): nothing outside the folder is
    ever deleted, whatever ``train.json`` says.
    """
    found = previous_run(out_dir, entries)
    names = list(found)
    summary = storage.join(out_dir, SUMMARY_FILE)
    if SUMMARY_FILE in found:
        names += _outputs(out_dir, summary)
    for name in names:
        _remove_entry(storage.join(out_dir, name))
    if names:
        logger.warning("%s: removed the previous run's %s.", out_dir, ", ".join(names))
    return names


def _outputs(out_dir: str, summary: str) -> list[str]:
    try:
        outputs = json.loads(storage.read_bytes(summary)).get("outputs") or []
    except (ValueError, AttributeError):
        return []  # not a run summary: its entries alone go
    if not isinstance(outputs, list):
        outputs = [outputs]
    names = []
    for path in outputs:  # the strategy writes its outputs directly into the run folder
        name = storage.basename(path) if isinstance(path, str) else path
        storage.inside(out_dir, name, summary, "outputs")
        names.append(name)
    return names


def _remove_entry(path: str) -> None:
    if storage.is_gcs(path):
        from kerasemote import storage_gcs

        bucket, key = storage_gcs.split_url(path)
        with storage_gcs.errors(path):
            for blob in [*storage_gcs.list_blobs(bucket, key + "/"), storage_gcs.blob_at(path)]:
                with contextlib.suppress(FileNotFoundError), storage_gcs.errors(path):
                    blob.delete()
        return
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)  # a file, or a link (never what it points to)


def continues(out_dir: str, resume: object) -> bool:
    """Whether ``resume`` (``train``'s argument) continues the run in ``out_dir`` rather than starting one.

    True continues the folder's newest checkpoint; a path continues the folder's run when it is
    the folder or lies inside it; False, None and a path elsewhere start a run in ``out_dir``.
    """
    if not isinstance(resume, (str, os.PathLike)):
        return bool(resume)
    path, root = os.fspath(resume), os.fspath(out_dir)
    if storage.is_gcs(path) or storage.is_gcs(root):
        root = root.rstrip("/")
        return path.rstrip("/") == root or path.startswith(root + "/")
    return storage.within(root, path)
