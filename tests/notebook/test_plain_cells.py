"""Values no digest describes (connections, objects holding locks, generators), made or
touched by plain cells: compared by those cells, their class's code and the files read."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any


def _table(path: Path, *values: int) -> None:
    with sqlite3.connect(path) as con:
        con.execute("drop table if exists t")
        con.execute("create table t (x)")
        con.executemany("insert into t values (?)", [(v,) for v in values])
    con.close()


def test_a_database_a_plain_cell_connected_to_is_compared(
    ip: Any, run: Any, marks: Any, restart: Any, here: Path
) -> None:
    _table(here / "db.sqlite", 1, 2, 3)
    connect = "import sqlite3\ncon = sqlite3.connect('db.sqlite')"
    step = "%%step key=q\nmark()\ntotal = con.execute('select sum(x) from t').fetchone()[0]"
    run(connect)
    run(step)
    restart()
    run(connect)
    run(step)
    assert marks.count() == 1  # unchanged: replayed
    ip.user_ns["con"].close()
    restart()
    _table(here / "db.sqlite", 10, 20)  # SQLite reads it in C: Python never opens it
    run(connect)
    ran = run(step)
    assert ip.user_ns["total"] == 30 and marks.count() == 2, ran.notes
    ip.user_ns["con"].close()


CLIENT = """
import threading
class Client:
    def __init__(self, base):
        self.base, self.lock = base, threading.Lock()
    def url(self, path):
        return self.base + {} + path
"""


def test_an_unpicklable_object_changed_by_a_plain_cell_or_its_class_edited_is_seen(
    ip: Any, run: Any, marks: Any, restart: Any
) -> None:
    step = "%%step key=url\nmark()\nout = client.url('1')"

    def notebook(sep: str, base: str) -> None:
        run(CLIENT.format(repr(sep)))
        run("client = Client('http://a')")
        run(f"client.base = {base!r}")  # an attribute set, no method called
        run(step)

    notebook("/", "http://a")
    restart()
    notebook("/", "http://a")
    assert marks.count() == 1  # unchanged: replayed
    restart()
    notebook("/", "http://b")
    assert ip.user_ns["out"] == "http://b/1" and marks.count() == 2
    restart()
    ran = run(CLIENT.format(repr("/v2/")))  # the class edited in its own cell
    run("client = Client('http://a')")
    run("client.base = 'http://b'")
    ran = run(step)
    assert ip.user_ns["out"] == "http://b/v2/1" and marks.count() == 3, ran.notes
    assert any("the class of client" in n for n in ran.notes), ran.notes


def test_a_generator_and_a_decorated_function_count_the_code_they_run(
    ip: Any, run: Any, marks: Any, restart: Any
) -> None:
    step = "%%step key=use\nmark()\nout = (list(gen), f(3))"
    for k, m, ran in ((2, 1, 1), (2, 1, 1), (5, 1, 2), (5, 10, 3)):
        restart()
        run(f"K = {k}")  # read by the decorated function, from another cell
        run(f"def squares(n):\n    for i in range(n):\n        yield i * i * {m}")
        run("import numpy as np\n@np.errstate(all='ignore')\ndef f(x):\n    return x * K")
        run("gen = squares(3)")  # made in another cell than the function it runs
        run(step)
        assert ip.user_ns["out"] == ([0, m, 4 * m], 3 * k) and marks.count() == ran


def test_a_parameter_an_unpicklable_object_was_made_from_is_compared(
    ip: Any, run: Any, marks: Any, restart: Any
) -> None:
    step = "%%step key=url\nmark()\nout = client.url('1')"
    for base, sep, ran in (("http://a", "/", 1), ("http://a", "/", 1), ("http://b", "/", 2)):
        restart()
        run(CLIENT.format(repr(sep)))
        run(f"BASE = {base!r}")  # the parameters cell, edited
        run("client = Client(BASE)")  # made from it in another cell, unchanged
        run(step)
        assert ip.user_ns["out"] == f"{base}/1" and marks.count() == ran
