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
    (warning,) = [w for w in record if w.category is CacheWarning]
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
    assert "handle" not in saved()["bad"].variables
    assert "fine" in saved()["bad"].variables

    restart()
    assert run(cell).result.success
    assert marks.count() == 1
    assert ip.user_ns["fine"] == 1
    assert "handle" not in ip.user_ns


def test_an_unsaveable_object_only_used_through_its_methods_is_left_out(
    ip: Any, run: Any, marks: Any, saved: Any, restart: Any
) -> None:
    # A connection the cell only calls methods on is an input, not an output.
    assert run("import sqlite3\nconn = sqlite3.connect(':memory:')").result.success
    cell = (
        "%%step key=query\n"
        "conn.execute('create table if not exists t (x)')\n"
        "rows = conn.execute('select 1').fetchall()\n"
        "mark()"
    )
    ran = run(cell)  # CacheWarning is an error under pytest: none may be raised

    assert ran.result.success, ran.error
    assert saved()["query"].variables == ("rows",)
    restart()
    assert run("import sqlite3\nconn = sqlite3.connect(':memory:')").result.success  # Run All
    again = run(cell)
    assert again.result.success, again.error
    assert marks.count() == 1
    assert ip.user_ns["rows"] == [(1,)]
    assert "not compared by value: conn (Connection)" in again.notes[0]


def test_a_picklable_object_changed_through_its_methods_is_saved(
    ip: Any, run: Any, marks: Any, saved: Any, restart: Any
) -> None:
    assert run("items = []").result.success
    cell = "%%step key=grow\nitems.append(1)\nitems.extend([2, 3])\nmark()"
    assert run(cell).result.success
    assert saved()["grow"].variables == ("items",)
    ip.user_ns["items"] = []  # as the earlier cell leaves it after a restart
    assert run(cell).result.success
    assert marks.count() == 1
    assert ip.user_ns["items"] == [1, 2, 3]


def test_a_with_target_closed_by_its_block_is_left_out_one_still_open_is_not(
    ip: Any, run: Any, marks: Any, saved: Any, tmp_path: Any
) -> None:
    ip.user_ns["where"] = str(tmp_path)
    closed = (
        "%%step key=file\nmark()\nwith open(f'{where}/a.txt', 'w') as f:\n    f.write('x')\nn = 1"
    )
    assert run(closed).result.success
    assert saved()["file"].variables == ("n",)  # the closed file is left out, silently

    still_open = (  # `with sqlite3.connect()` ends a transaction; the connection stays usable
        "%%step key=db\nmark()\nimport sqlite3\n"
        "with sqlite3.connect(':memory:') as con:\n"
        "    total = con.execute('select 1').fetchone()[0]"
    )
    with pytest.warns(CacheWarning, match=r"con \(Connection\)"):
        assert run(still_open).result.success
    assert "db" not in saved()  # a replay would leave `con` undefined for later cells
    with pytest.warns(CacheWarning):
        run(still_open)
    assert marks.count() == 3


def test_a_module_attribute_the_step_sets_to_an_unsaveable_value_is_not_left_out(
    ip: Any, run: Any, saved: Any, here: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    (here / "awaitly_test_settings.py").write_text("N = 1\n")  # one of your modules
    monkeypatch.syspath_prepend(str(here))
    try:
        assert run("import awaitly_test_settings as settings").result.success
        with pytest.warns(CacheWarning, match=r"awaitly_test_settings\.CONN \(lock\)"):
            ran = run("%%step key=conn\nimport threading\nsettings.CONN = threading.Lock()")
        assert ran.result.success, ran.error
        assert "conn" not in saved()  # a replay would lack CONN: it is not saved at all
    finally:
        sys.modules.pop("awaitly_test_settings", None)
