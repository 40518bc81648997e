"""What a step changes inside a function, a class or your module without naming it (a
memo default, a counter attribute, a class attribute, a module's cache) is saved and
set again on a replay, so the next step sees what a plain run shows."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

DEFINITIONS = {
    "memo default": (
        "def f(x, _memo={}):\n    _memo[x] = x * 10\n    return len(_memo)",
        "f(1)",
        "f(2)",
    ),
    "function attribute": (
        "def f(x):\n    f.n = getattr(f, 'n', 0) + 1\n    return f.n",
        "f(1)",
        "f(2)",
    ),
    "closure cell": (
        "def counter():\n    n = 0\n    def inc(x):\n        nonlocal n\n        n += 1\n"
        "        return n\n    return inc\nf = counter()",
        "f(1)",
        "f(2)",
    ),
    "class attribute": (
        "class C:\n    total = 0\n    @classmethod\n    def add(cls, n):\n"
        "        cls.total += n\n        return cls.total",
        "C.add(5)",
        "C.add(1)",
    ),
}


@pytest.mark.parametrize("case", sorted(DEFINITIONS))
def test_state_a_step_changed_inside_a_definition_is_set_again(
    ip: Any, run: Any, marks: Any, restart: Any, case: str
) -> None:
    define, first, second = DEFINITIONS[case]
    cells = [f"%%step key=a\na = {first}\nmark()", f"%%step key=b\nb = {second}\nmark()"]
    assert run(define).result.success
    for cell in cells:
        assert run(cell).result.success
    truth = (ip.user_ns["a"], ip.user_ns["b"])
    restart()
    assert run(define).result.success
    replayed = [run(cell) for cell in cells]
    assert marks.count() == 2, [r.notes for r in replayed]  # both restored
    assert (ip.user_ns["a"], ip.user_ns["b"]) == truth


def test_a_call_step_sets_again_what_it_changed_inside_its_function(
    ip: Any, run: Any, marks: Any, restart: Any
) -> None:
    define = "def f(x, _memo={}):\n    mark()\n    _memo[x] = x * 10\n    return len(_memo)"
    cells = ["a = step(f, 1, key='a')", "b = step(f, 2, key='b')"]
    assert run(define + "\nfrom awaitly_nb import step").result.success
    assert [run(c).result.success for c in cells] == [True, True]
    restart()
    assert run(define + "\nfrom awaitly_nb import step").result.success
    assert [run(c).result.success for c in cells] == [True, True]
    assert marks.count() == 2
    assert (ip.user_ns["a"], ip.user_ns["b"]) == (1, 2)
    assert ip.user_ns["f"].__defaults__ == ({1: 10, 2: 20},)


HELPERS = (
    "CACHE = {}\nCALLS = 0\ndef fetch(k):\n    global CALLS\n    CALLS += 1\n"
    "    with open('ran.txt', 'a') as f:\n        f.write('ran')\n"
    "    CACHE[k] = k * 2\n    return CACHE[k]\n"
)


@pytest.mark.parametrize(
    "cell",
    [
        "%%step key=f3\nv = helpers.fetch(3)",
        "%%step key=f3\nfrom helpers import fetch\nv = fetch(3)",
        "v = step(lambda: helpers.fetch(3), key='f3')",
    ],
)
def test_data_your_module_s_function_changed_is_set_again(
    ip: Any, run: Any, restart: Any, here: Path, monkeypatch: pytest.MonkeyPatch, cell: str
) -> None:
    (here / "helpers.py").write_text(HELPERS)
    monkeypatch.syspath_prepend(str(here))
    setup = "import helpers\nfrom awaitly_nb import step"
    show = "print(helpers.CACHE, helpers.CALLS)"
    try:
        assert run(setup).result.success
        assert run(cell).result.success
        assert run(show).stdout.strip() == "{3: 6} 1"
        restart()
        sys.modules.pop("helpers")  # a new kernel imports it again
        assert run(setup).result.success
        again = run(cell)
        assert (here / "ran.txt").read_text() == "ran", again.notes  # restored, not run
        assert run(show).stdout.strip() == "{3: 6} 1"  # as the plain run shows
    finally:
        sys.modules.pop("helpers", None)


def test_the_notebook_s_own_name_for_your_module_s_data_stays_that_object(
    ip: Any, run: Any, restart: Any, here: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (here / "helpers.py").write_text(HELPERS)
    monkeypatch.syspath_prepend(str(here))
    setup = "from helpers import fetch, CACHE"
    cell = "%%step key=f3\nv = fetch(3)"
    show = "import helpers\nprint(CACHE, CACHE is helpers.CACHE)"
    try:
        assert run(setup).result.success and run(cell).result.success
        assert run(show).stdout.strip() == "{3: 6} True"
        restart()
        sys.modules.pop("helpers")  # a new kernel imports it again
        assert run(setup).result.success
        assert any("restored" in n for n in run(cell).notes)
        assert run(show).stdout.strip() == "{3: 6} True"  # as the plain run shows
    finally:
        sys.modules.pop("helpers", None)


def test_a_step_importing_your_module_that_holds_a_lock_is_saved(
    ip: Any, run: Any, marks: Any, restart: Any, here: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (here / "locked.py").write_text("import threading\nLOCK = threading.Lock()\nN = 3\n")
    monkeypatch.syspath_prepend(str(here))
    cell = "%%step key=imp\nmark()\nimport locked\nn = locked.N"
    try:
        sys.modules.pop("locked", None)
        first = run(cell)
        assert first.error is None and not first.stderr, first.stderr  # no CacheWarning
        restart()
        sys.modules.pop("locked")
        again = run(cell)
        assert any("restored" in n for n in again.notes) and marks.count() == 1
    finally:
        sys.modules.pop("locked", None)


def test_a_call_step_sets_again_a_class_attribute_its_classmethod_changed(
    ip: Any, run: Any, marks: Any, restart: Any
) -> None:
    define = (
        "from awaitly_nb import step\nclass Counter:\n    total = 0\n    @classmethod\n"
        "    def bump(cls, n):\n        mark()\n        cls.total += n\n        return cls.total"
    )
    cell = "t = step(Counter.bump, 5, key='bump')"
    assert run(define).error is None and run(cell).error is None
    restart()
    assert run(define).error is None and run(cell).error is None
    assert marks.count() == 1
    assert (ip.user_ns["t"], ip.user_ns["Counter"].total) == (5, 5)
