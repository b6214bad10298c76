"""The ``gs://`` backend of ``kerasemote.storage``: the Cloud Storage client, its errors, listings.

``kerasemote.storage`` decides local or Cloud Storage and calls in here for the second;
every path given here is already a ``gs://bucket/key`` string. ``google-cloud-storage``
is imported only when a ``gs://`` path is used. When ``STORAGE_EMULATOR_HOST`` is set
(tests), the client uses anonymous credentials and the project ``GOOGLE_CLOUD_PROJECT``
(default ``"kerasemote-test"``).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import uuid
from typing import Any, Iterator

GCS_PREFIX = "gs://"
COLAB_AUTH_HINT = (
    "In Colab run `from google.colab import auth; auth.authenticate_user()` first; elsewhere run "
    "`gcloud auth application-default login` or set GOOGLE_APPLICATION_CREDENTIALS."
)
_GLOB_CHARS = re.compile(r"[*?\[]")


class StorageAuthError(PermissionError):
    """No usable Google Cloud credentials, or no permission on a bucket."""


# ---------------------------------------------------------------------- URLs


def split_url(text: str) -> tuple[str, str]:
    """Split ``gs://bucket/a/b`` into ``("bucket", "a/b")``."""
    if not text.startswith(GCS_PREFIX):
        raise ValueError(f"Not a gs:// path: {text!r}.")
    bucket, _, key = text[len(GCS_PREFIX) :].partition("/")
    if not bucket:
        raise ValueError(f"gs:// path {text!r} has no bucket name; expected gs://bucket/key.")
    return bucket, key


def _gcs_url(bucket: str, key: str) -> str:
    return f"{GCS_PREFIX}{bucket}/{key}"


# ---------------------------------------------------------------------- client


@functools.lru_cache(maxsize=4)
def _make_client(emulator_host: str | None, project: str | None) -> Any:
    try:
        from google.cloud import storage as gcs
    except ImportError as err:  # pragma: no cover - core dependency
        raise ImportError("gs:// paths need `pip install google-cloud-storage`.") from err
    if emulator_host:
        from google.auth.credentials import AnonymousCredentials

        return gcs.Client(project=project or "kerasemote-test", credentials=AnonymousCredentials())
    import google.auth.exceptions

    try:
        return gcs.Client(project=project)
    except google.auth.exceptions.DefaultCredentialsError as err:
        raise StorageAuthError(f"No Google Cloud credentials found ({err}). {COLAB_AUTH_HINT}") from None


def _client() -> Any:
    # Keyed on the environment so tests that set STORAGE_EMULATOR_HOST get their own client.
    return _make_client(
        os.environ.get("STORAGE_EMULATOR_HOST"), os.environ.get("GOOGLE_CLOUD_PROJECT")
    )


def blob_at(path: str) -> Any:
    bucket, key = split_url(path)
    if not key or key.endswith("/"):
        raise IsADirectoryError(f"{path!r} names a gs:// folder, not a file.")
    return _client().bucket(bucket).blob(key)


@contextlib.contextmanager
def errors(path: str) -> Iterator[None]:
    """Turn Cloud Storage exceptions into FileNotFoundError / StorageAuthError naming ``path``."""
    from google.api_core import exceptions as gexc
    import google.auth.exceptions

    try:
        yield
    except gexc.NotFound:
        bucket, _ = split_url(path)
        raise FileNotFoundError(f"No such file: {path} ({bucket_state(bucket)}).") from None
    except (gexc.Forbidden, gexc.Unauthorized) as err:
        message = f"Access to {path} was refused ({err.message}). {COLAB_AUTH_HINT}"
        raise StorageAuthError(message) from None
    except google.auth.exceptions.DefaultCredentialsError as err:
        message = f"No Google Cloud credentials for {path} ({err}). {COLAB_AUTH_HINT}"
        raise StorageAuthError(message) from None
    except google.auth.exceptions.GoogleAuthError as err:  # expired or revoked credentials
        message = f"The Google Cloud credentials did not work for {path} ({err}). {COLAB_AUTH_HINT}"
        raise StorageAuthError(message) from None


def check_writable(folder: str) -> None:
    """Write and delete one empty object under ``folder``, so a missing permission shows before long work.

    Raises:
        StorageAuthError: no credentials, or the account may not write (or delete) there.
        FileNotFoundError: the bucket does not exist or this account cannot see it.
    """
    bucket, key = split_url(folder)
    probe = f"{key.rstrip('/')}/.kerasemote-write-check-{uuid.uuid4().hex[:8]}".lstrip("/")
    try:
        with errors(folder):
            blob = _client().bucket(bucket).blob(probe)
            blob.upload_from_string(b"", content_type="application/octet-stream")
            blob.delete()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"Cannot write to {folder}: bucket {bucket!r} does not exist or this account cannot see it. "
            f"{COLAB_AUTH_HINT}"
        ) from None
    except StorageAuthError as err:
        if folder in str(err):
            raise
        raise StorageAuthError(f"Cannot write to {folder}: {err}") from None


def bucket_state(bucket: str) -> str:
    try:
        found = _client().bucket(bucket).exists()
    except Exception:  # no bucket-level permission: say nothing wrong
        return f"could not check bucket {bucket!r}"
    if found:
        return f"bucket {bucket!r} exists, the object does not"
    return f"bucket {bucket!r} does not exist or this account cannot see it. {COLAB_AUTH_HINT}"


def list_blobs(bucket: str, prefix: str, delimiter: str | None = None) -> Any:
    return _client().list_blobs(bucket, prefix=prefix, delimiter=delimiter)


# ---------------------------------------------------------------------- listings


def exists(text: str) -> bool:
    """Whether an object exists, or any object under the folder ``text``."""
    bucket, key = split_url(text)
    if key and not key.endswith("/"):
        with errors(text):
            if _client().bucket(bucket).blob(key).exists():
                return True
    return isdir(text)


def isdir(text: str) -> bool:
    """Whether ``text`` is the bucket, or a prefix with objects under it."""
    bucket, key = split_url(text)
    try:
        with errors(text):
            if not key.strip("/"):
                return _client().bucket(bucket).exists()
            prefix = key.rstrip("/") + "/"
            blobs = _client().list_blobs(bucket, prefix=prefix, max_results=1)
            return any(True for _ in blobs)
    except FileNotFoundError:  # no such bucket
        return False


def listdir(text: str) -> list[str]:
    """Sorted names of the objects and folders directly under ``text``."""
    bucket, key = split_url(text)
    prefix = key.rstrip("/") + "/" if key.strip("/") else ""
    with errors(text):
        pages = list_blobs(bucket, prefix, delimiter="/")
        names = {blob.name[len(prefix) :] for blob in pages}
        names |= {p[len(prefix) :].rstrip("/") for p in pages.prefixes}
    names.discard("")  # the folder placeholder object some tools create
    if not names and not isdir(text):
        raise FileNotFoundError(f"No such folder: {text}.")
    return sorted(names)


def glob(text: str) -> list[str]:
    """Sorted ``gs://`` paths matching the pattern ``text`` (see ``kerasemote.storage.glob``)."""
    bucket, key = split_url(text)
    match = _GLOB_CHARS.search(key)
    if match is None:
        return [text] if exists(text) else []
    prefix = key[: match.start()]
    regex = _glob_regex(key)
    found: set[str] = set()
    with errors(text):
        for blob in list_blobs(bucket, prefix):
            for candidate in _self_and_parents(blob.name, len(prefix)):
                if regex.fullmatch(candidate):
                    found.add(_gcs_url(bucket, candidate))
    return sorted(found)


def _glob_regex(key: str) -> re.Pattern[str]:
    """Regex for a gs:// key pattern: ``*``/``?``/``[...]`` within one folder, ``**`` across."""
    out, i = [], 0
    while i < len(key):
        if key.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif key.startswith("**", i):
            out.append(".*")
            i += 2
        elif key[i] == "*":
            out.append("[^/]*")
            i += 1
        elif key[i] == "?":
            out.append("[^/]")
            i += 1
        elif key[i] == "[" and "]" in key[i + 2 :]:
            end = key.index("]", i + 2)
            body = key[i + 1 : end]
            negate = body.startswith("!")
            body = re.escape(body[1:] if negate else body).replace("\\-", "-")
            out.append(f"[{'^/' if negate else ''}{body}]")
            i = end + 1
        else:
            out.append(re.escape(key[i]))
            i += 1
    return re.compile("".join(out))


def _self_and_parents(name: str, start: int) -> Iterator[str]:
    """``a/b/c`` -> ``a/b/c``, ``a/b``, ``a`` (folders only past ``start``)."""
    yield name.rstrip("/")
    cut = name.rfind("/", 0, len(name.rstrip("/")))
    while cut >= start and cut > 0:
        yield name[:cut]
        cut = name.rfind("/", 0, cut)
