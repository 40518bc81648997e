"""Real servers for the shared-store tests, on 127.0.0.1: redis-server (the Debian
package) and moto's S3 server (``moto[server]``), reached through redis-py and s3fs.

A pytest plugin (``-p awaitly_servers``), not a ``conftest.py``: sibling conftest
files collide, the test folders not being packages."""

from __future__ import annotations

import contextlib
import ipaddress
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
from typing import Any

import pytest

REDIS = shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _redis_server(workdir: Path, *options: str, tls: bool = False) -> Iterator[int]:
    """A redis-server on 127.0.0.1 and a free port (yields the port); with ``tls``
    it speaks only TLS there (``options`` name its certificate files)."""
    if REDIS is None:
        if os.environ.get("CI"):
            raise RuntimeError("redis-server is missing: .ci/run must install it")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    ports = ("--port", "0", "--tls-port", str(port)) if tls else ("--port", str(port))
    server = subprocess.Popen(
        [
            *(REDIS, *ports, "--bind", "127.0.0.1"),
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


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A test CA and a certificate it signed for 127.0.0.1: (ca, cert, key) PEM files."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    valid = (now - datetime.timedelta(hours=1), now + datetime.timedelta(days=1))

    def issue(subject: str, key: Any, issuer: Any, signer: Any, ca: bool) -> Any:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer or name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(valid[0])
            .not_valid_after(valid[1])
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        # What strict verification (Python 3.13's default) asks of a certificate.
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        ).add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
            critical=False,
        )
        if ca:
            usage = dict.fromkeys(
                ("digital_signature", "content_commitment", "key_encipherment"), False
            )
            builder = builder.add_extension(
                x509.KeyUsage(
                    **usage,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
        else:
            ip = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
            builder = builder.add_extension(
                x509.SubjectAlternativeName([ip]), critical=False
            ).add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = issue("awaitly test CA", ca_key, None, ca_key, True)
    cert = issue("127.0.0.1", key, ca.subject, ca_key, False)
    files = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    files[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


@pytest.fixture(scope="module")
def redis_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A redis-server that speaks only TLS, its certificate signed by a test CA:
    yields its ``rediss://`` URL and the CA's file."""
    folder = tmp_path_factory.mktemp("redis-tls")
    ca, cert, key = _certificates(folder)
    files = (
        "--tls-cert-file",
        str(cert),
        "--tls-key-file",
        str(key),
        "--tls-ca-cert-file",
        str(ca),
    )
    with _redis_server(folder, *files, "--tls-auth-clients", "no", tls=True) as port:
        yield f"rediss://127.0.0.1:{port}/0", ca


@pytest.fixture
def redis_db(redis_url: str) -> Iterator[str]:
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    yield redis_url


@contextlib.contextmanager
def moto_server(log: Any = subprocess.DEVNULL) -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 and a free port; yields its endpoint URL.
    (Also started by ``benchmarks/shared_restore.py``.)"""
    port = free_port()
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


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 and a free port, for the session."""
    pytest.importorskip("s3fs")
    with (tmp_path_factory.mktemp("moto") / "moto.log").open("w") as log, moto_server(log) as url:
        yield url


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
