"""Variables that cannot be saved: warn (naming each and its type), record nothing."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from awaitly_nb.errors import CacheWarning

UNSAVEABLE = [
    pytest.param("import threading\nhandle = threading.Lock()", "lock", id="lock"),
    pytest.param("handle = (i for i in range(3))", "generator", id="generator"),
    pytest.param("import socket\nhandle = socket.socket()\nhandle.close()", "socket", id="socket"),
]


@pytest.fixture(autouse=True)
def _close_sockets(ip: Any) -> Iterator[None]:
    yield
    for value in list(ip.user_ns.values()):
        if isinstance(value, socket.socket):
            value.close()


@pytest.mark.parametrize(("body", "type_name"), UNSAVEABLE)
def test_unsaveable_variable_warns_and_nothing_is_recorded(
    ip: Any, run: Any, marks: Any, saved: Any, body: str, type_name: str
) -> None:
    cell = f"%%step key=bad\nfine = 1\n{body}\nmark()"
    with pytest.warns(CacheWarning) as record:
        ran = run(cell)

    assert ran.result.success, ran.error
    (warning,) = record
    message = str(warning.message)
    assert f"handle ({type_name})" in message
    assert "exclude=handle" in message
    assert saved() == {}

    with pytest.warns(CacheWarning):
        run(cell)
    assert marks.count() == 2


def test_warning_names_every_unsaveable_variable(ip: Any, run: Any, marks: Any) -> None:
    cell = (
        "%%step key=bad\n"
        "import socket, threading\n"
        "lk = threading.Lock()\n"
        "gen = (i for i in range(3))\n"
        "sock = socket.socket()\n"
        "fine = 1\n"
        "mark()"
    )
    with pytest.warns(CacheWarning) as record:
        run(cell)

    message = str(record[0].message)
    for part in ("lk (lock)", "gen (generator)", "sock (socket)", "exclude="):
        assert part in message
    assert "fine (" not in message  # only the bad ones are named


@pytest.mark.parametrize(("body", "type_name"), UNSAVEABLE)
def test_excluding_the_unsaveable_variable_saves_the_rest(
    ip: Any, run: Any, marks: Any, restart: Any, saved: Any, body: str, type_name: str
) -> None:
    cell = f"%%step key=bad exclude=handle\nfine = 1\n{body}\nmark()"
    ran = run(cell)  # CacheWarning is an error under pytest: none may be raised

    assert ran.result.success, ran.error
    assert "handle" not in saved()["bad"]["variables"]
    assert "fine" in saved()["bad"]["variables"]

    restart()
    assert run(cell).result.success
    assert marks.count() == 1
    assert ip.user_ns["fine"] == 1
    assert "handle" not in ip.user_ns
