"""Real servers for the shared-store tests, on 127.0.0.1: redis-server (the Debian
package) and moto's S3 server (``moto[server]``), reached through redis-py and s3fs.

A pytest plugin (``-p awaitly_servers``), not a ``conftest.py``: sibling conftest
files collide, the test folders not being packages."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REDIS = shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _redis_server(workdir: Path, *options: str) -> Iterator[int]:
    """A redis-server on 127.0.0.1 and a free port (yields the port)."""
    if REDIS is None:
        if os.environ.get("CI"):
            raise RuntimeError("redis-server is missing: .ci/run must install it")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    server = subprocess.Popen(
        [
            *(REDIS, "--port", str(port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no", "--dir", str(workdir), *options),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.1)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on 127.0.0.1 and a free port, for this module."""
    with _redis_server(tmp_path_factory.mktemp("redis")) as port:
        yield f"redis://127.0.0.1:{port}/0"


REDIS_PASSWORD = "s3cret-team-pass"


@pytest.fixture(scope="module")
def redis_password_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server that needs ``REDIS_PASSWORD``; the URL has no password in it."""
    with _redis_server(tmp_path_factory.mktemp("redis"), "--requirepass", REDIS_PASSWORD) as port:
        yield f"redis://127.0.0.1:{port}/0"


@pytest.fixture
def redis_db(redis_url: str) -> Iterator[str]:
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    yield redis_url


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 and a free port, for the session."""
    pytest.importorskip("s3fs")
    port = free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("moto's S3 server did not start") from None
                time.sleep(0.2)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.fixture
def s3_url(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh ``s3://`` prefix on the test server; AWS settings point every client there."""
    import s3fs

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    bucket = f"team-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_endpoint}).mkdir(bucket)
    s3fs.S3FileSystem.clear_instance_cache()
    return f"s3://{bucket}/awaitly"


@pytest.fixture(params=["redis", "memory", "file", "s3"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each kind of shared store, empty."""
    if request.param == "redis":
        return str(request.getfixturevalue("redis_db"))
    if request.param == "s3":
        return str(request.getfixturevalue("s3_url"))
    if request.param == "memory":
        return f"memory://awaitly-test-{uuid.uuid4().hex}"
    return (tmp_path / "shared").as_uri()
