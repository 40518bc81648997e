"""Reaching a shared store (issue 14): driver options, unreachable servers, fresh views of
what teammates save, empty prefixes. Real redis-server and moto's S3 server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_shared import KEY

import awaitly_nb
from awaitly_nb.config import get_session
from awaitly_nb.errors import CacheWarning
from awaitly_nb.notebook.status_table import status_text

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def _team_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AWAITLY_NB_KEY", KEY.decode())
    yield
    awaitly_nb.configure(dir=None, workflow=None, store=None, storage_options=None)


def test_s3_endpoint_and_credentials_come_from_storage_options(
    s3_url: str, s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)  # only the options say where and who
    options = {"client_kwargs": {"endpoint_url": s3_endpoint}, "key": "testing", "secret": "x"}
    awaitly_nb.configure(dir=tmp_path / "a", store=s3_url, storage_options=options, workflow="w")
    assert awaitly_nb.step(lambda: {"n": 1}, key="k") == {"n": 1}
    awaitly_nb.configure(dir=tmp_path / "b", storage_options=None)  # the environment form
    monkeypatch.setenv("AWAITLY_NB_STORE_OPTIONS", json.dumps(options))
    assert awaitly_nb.step(lambda: {"n": 2}, key="k", pin=True) == {"n": 1}
    monkeypatch.setenv("AWAITLY_NB_STORE_OPTIONS", "[1]")
    awaitly_nb.configure(dir=tmp_path / "c")
    with pytest.raises(ValueError, match="AWAITLY_NB_STORE_OPTIONS must be a JSON object"):
        awaitly_nb.step(lambda: 3, key="other")  # a mistake in the settings: said at once


@pytest.mark.parametrize("kind", ["redis", "s3"])
def test_an_unreachable_store_is_a_warning_and_the_step_runs_here(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from awaitly_servers import free_port

    port = free_port()  # nothing listens there
    if kind == "redis":
        url = f"redis://127.0.0.1:{port}/0"
        options = {}
    else:
        pytest.importorskip("s3fs")
        url = "s3://team/awaitly"
        options = {"client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"}, "anon": True}
    awaitly_nb.configure(dir=tmp_path / "a", store=url, storage_options=options, workflow="w")
    calls: list[int] = []
    with pytest.warns(CacheWarning, match="'k'"):
        value = awaitly_nb.step(lambda: calls.append(1) or 42, key="k")
    assert value == 42 and calls == [1]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts connections and never answers (a server hung or
    stopped with SIGSTOP: the case where only timeouts help)."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


@pytest.mark.parametrize("kind", ["redis", "s3"])
def test_a_store_that_stops_answering_costs_one_timeout_not_one_per_step(
    kind: str, silent_port: int, tmp_path: Path
) -> None:
    import time

    if kind == "redis":
        url, options = f"redis://127.0.0.1:{silent_port}/0", {"socket_timeout": 1}
    else:
        pytest.importorskip("s3fs")
        url = "s3://team/awaitly"
        options = {
            "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{silent_port}"},
            "config_kwargs": {"read_timeout": 1},
            "anon": True,
        }
    awaitly_nb.configure(dir=tmp_path / "a", store=url, storage_options=options, workflow="w")
    start = time.monotonic()
    with pytest.warns(CacheWarning, match="'first'") as caught:
        assert awaitly_nb.step(lambda: 1, key="first") == 1  # waits for the timeouts once
    waited = time.monotonic() - start
    assert waited < 15  # s3fs's own retries (5, with back-off) took minutes
    assert any(
        "not saved" in str(w.message) or "could not be saved" in str(w.message) for w in caught
    )

    start = time.monotonic()
    with pytest.warns(CacheWarning, match="'second'.*did not answer"):
        assert awaitly_nb.step(lambda: 2, key="second") == 2
    assert time.monotonic() - start < min(1.0, waited)  # not asked again: no new wait


TEAMMATE = """
import awaitly_nb
awaitly_nb.configure(store={url!r}, workflow="team")
print(awaitly_nb.step(lambda: "from the teammate", key="fresh"))
"""


def test_a_teammates_new_step_shows_at_the_next_look(
    shared_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shared_url.startswith("memory://"):
        pytest.skip("a memory:// store lives in one process")
    awaitly_nb.configure(dir=tmp_path / "alice", store=shared_url, workflow="team")
    awaitly_nb.step(lambda: 1, key="mine")
    assert [m.key for m in get_session().engine.steps()] == ["mine"]  # listed once
    teammate = subprocess.run(
        [sys.executable, "-c", TEAMMATE.format(url=shared_url)],
        env={**os.environ, "AWAITLY_NB_DIR": str(tmp_path / "bob")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert teammate.returncode == 0, teammate.stderr
    assert sorted(m.key for m in get_session().engine.steps()) == ["fresh", "mine"]
    again = awaitly_nb.step(lambda: "computed here", key="fresh", pin=True)
    assert again == "from the teammate"  # restored, not computed and overwritten


def test_an_empty_s3_prefix_is_an_empty_store(s3_url: str, tmp_path: Path) -> None:
    awaitly_nb.configure(dir=tmp_path / "a", store=s3_url + "/never-used", workflow="w")
    assert get_session().engine.steps() == []
    assert "0 of 0 complete" in status_text()


WRITER = """
import sys
import numpy as np
import awaitly_nb

url, who = sys.argv[1:3]
awaitly_nb.configure(store=url, workflow="team")
common = np.arange(100_000.0)  # the same blob in both processes
for i in range(100):
    value = {"who": who, "i": i, "own": np.full(20_000, float(i))}
    if i % 10 == 0:
        value["common"] = common
    awaitly_nb.step(lambda value=value: value, key=f"{who}:{i}")
print(len(awaitly_nb.config.get_session().engine.steps()))
"""


@pytest.mark.parametrize("kind", ["redis", "s3"])
def test_two_processes_saving_at_once_lose_nothing_and_see_each_other(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    import numpy as np

    from awaitly_nb.storage.shared import open_shared_store

    url = str(request.getfixturevalue("redis_db" if kind == "redis" else "s3_url"))
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, url, who],
            env={**os.environ, "AWAITLY_NB_DIR": str(tmp_path / who)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for who in ("alice", "bob")
    ]
    outputs = [w.communicate(timeout=300) for w in writers]
    for writer, (out, err) in zip(writers, outputs, strict=True):
        assert writer.returncode == 0, err
        assert 100 <= int(out) <= 200  # its own, and the other's saved so far
    store = open_shared_store(url, tmp_path / "carol", key=KEY)
    keys = {m.key for m in store.manifests("team")}
    assert keys == {f"{who}:{i}" for who in ("alice", "bob") for i in range(100)}
    for who in ("alice", "bob"):
        for i in (0, 7, 50, 99):
            value = store.load("team", f"{who}:{i}")["value"]
            assert value["who"] == who and value["i"] == i
            np.testing.assert_array_equal(value["own"], np.full(20_000, float(i)))
            if i % 10 == 0:
                np.testing.assert_array_equal(value["common"], np.arange(100_000.0))
    assert store.verify() == []


def test_a_redis_password_in_the_url_or_the_options(
    redis_password_url: str, tmp_path: Path
) -> None:
    from awaitly_servers import REDIS_PASSWORD

    with_password = redis_password_url.replace("redis://", f"redis://:{REDIS_PASSWORD}@")
    awaitly_nb.configure(dir=tmp_path / "a", store=with_password, workflow="w")
    assert awaitly_nb.step(lambda: "saved", key="k") == "saved"
    awaitly_nb.configure(store=redis_password_url, storage_options={"password": REDIS_PASSWORD})
    assert awaitly_nb.step(lambda: "again", key="k", pin=True) == "saved"  # restored
    awaitly_nb.configure(storage_options={"password": "wrong"})
    with pytest.warns(CacheWarning, match="'k'"):  # refused by the server: runs here
        assert awaitly_nb.step(lambda: "here", key="k", pin=True) == "here"


def test_a_redis_server_over_tls_with_the_team_ca(
    redis_tls: tuple[str, Path], tmp_path: Path
) -> None:
    url, ca = redis_tls
    awaitly_nb.configure(
        dir=tmp_path / "a", store=url, workflow="w", storage_options={"ssl_ca_certs": str(ca)}
    )
    assert awaitly_nb.step(lambda: "saved", key="k") == "saved"
    awaitly_nb.configure(dir=tmp_path / "b")  # a teammate: nothing cached
    assert awaitly_nb.step(lambda: "again", key="k", pin=True) == "saved"  # restored

    awaitly_nb.configure(storage_options={})  # the system's CAs do not know this server
    with pytest.warns(CacheWarning, match="'k'.*(?i:certificate)"):
        assert awaitly_nb.step(lambda: "here", key="k", pin=True) == "here"
    awaitly_nb.configure(store=url.replace("rediss://", "redis://"))  # TLS port, plain client
    with pytest.warns(CacheWarning, match="'k'"):
        assert awaitly_nb.step(lambda: "here", key="k", pin=True) == "here"
