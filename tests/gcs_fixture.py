"""A Cloud Storage emulator (gcp-storage-emulator) for tests of gs:// paths.

Use it from any test module::

    from gcs_fixture import gcs_bucket, gcs_emulator  # noqa: F401  (pytest fixtures)

    def test_something(gcs_bucket):  # "gs://kerasemote-test/<unique folder>"
        storage.write_bytes(gcs_bucket + "/x.bin", b"...")

``gcs_emulator`` is session-scoped (one in-memory server on a free 127.0.0.1 port);
``gcs_bucket`` gives each test its own folder in one bucket, so tests do not see
each other's objects (pytest puts tests/ on sys.path, so ``gcs_fixture`` imports
as a top-level module; importing the two names in tests/conftest.py makes them
available everywhere). Tests are skipped when gcp-storage-emulator is not installed.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from typing import Iterator

import pytest

BUCKET = "kerasemote-test"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[str]:
    """Start the emulator, create the bucket, point STORAGE_EMULATOR_HOST at it; yields the host."""
    server_module = pytest.importorskip("gcp_storage_emulator.server")
    logging.getLogger("gcp_storage_emulator").setLevel(logging.WARNING)
    port = _free_port()
    server = server_module.create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    host = f"http://127.0.0.1:{port}"
    saved = {key: os.environ.get(key) for key in ("STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT")}
    os.environ["STORAGE_EMULATOR_HOST"] = host
    os.environ["GOOGLE_CLOUD_PROJECT"] = "kerasemote-test"
    try:
        yield host
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


@pytest.fixture
def gcs_bucket(gcs_emulator: str) -> str:
    """A fresh ``gs://`` folder for one test (no trailing slash)."""
    return f"gs://{BUCKET}/{uuid.uuid4().hex[:12]}"
