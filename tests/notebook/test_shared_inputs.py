"""Inputs that are one object (``b = a``) or two equal ones (``b = list(a)``) are not the
same input: a step changing one in place shows the other changed only when shared."""

from __future__ import annotations

from typing import Any

import pytest

MUTATE = "%%step key=m\nb.append(4)\nprint('a', a)\nmark()"


@pytest.mark.parametrize(
    ("first", "then", "shows"),
    [
        ("a = [1, 2, 3]\nb = a", "a = [1, 2, 3]\nb = list(a)", "a [1, 2, 3]"),
        ("a = [1, 2, 3]\nb = list(a)", "a = [1, 2, 3]\nb = a", "a [1, 2, 3, 4]"),
    ],
)
def test_a_step_runs_again_when_which_inputs_are_one_object_changed(
    ip: Any, run: Any, marks: Any, restart: Any, first: str, then: str, shows: str
) -> None:
    assert run(first).result.success
    assert run(MUTATE).result.success
    restart()
    assert run(then).result.success
    again = run(MUTATE)
    assert marks.count() == 2, again.notes
    assert again.stdout.strip() == shows  # as a plain run of the edited notebook
    assert any("one object" in n and "a & b" in n for n in again.notes), again.notes
    assert (ip.user_ns["a"] is ip.user_ns["b"]) == ("list(a)" not in then)


def test_sharing_inside_one_value_counts(ip: Any, run: Any, marks: Any, restart: Any) -> None:
    cell = "%%step key=g\ngrid[0][0] = 5\nprint(grid)\nmark()"
    assert run("grid = [[0, 0]] * 2").result.success
    assert run(cell).stdout.strip() == "[[5, 0], [5, 0]]"
    restart()
    assert run("grid = [[0, 0] for _ in range(2)]").result.success  # the classic fix
    again = run(cell)
    assert again.stdout.strip() == "[[5, 0], [0, 0]]"
    assert marks.count() == 2


def test_a_variable_outside_the_inputs_holding_one_of_them_counts(
    ip: Any, run: Any, marks: Any, restart: Any
) -> None:
    cell = "%%step key=d\ncfg['n'] = 5\nmark()"
    after = "print(model)"
    assert run("cfg = {'n': 1}\nmodel = {'cfg': cfg}").result.success
    assert run(cell).result.success
    restart()
    assert run("cfg = {'n': 1}\nmodel = {'cfg': dict(cfg)}").result.success
    assert run(cell).result.success
    assert marks.count() == 2
    assert run(after).stdout.strip() == "{'cfg': {'n': 1}}"


def test_unchanged_sharing_restores(ip: Any, run: Any, marks: Any, restart: Any) -> None:
    setup = "a = [1, 2, 3]\nb = a\ngrid = [[0]] * 2"
    cell = "%%step key=u\nb.append(len(grid))\nmark()"
    assert run(setup).result.success
    assert run(cell).result.success
    restart()
    assert run(setup).result.success
    again = run(cell)
    assert marks.count() == 1, again.notes
    assert ip.user_ns["a"] == [1, 2, 3, 2] and ip.user_ns["a"] is ip.user_ns["b"]


def test_the_note_says_which_objects_were_shared_in_full(
    ip: Any, run: Any, marks: Any, restart: Any
) -> None:
    names = "first_list_with_a_long_name = [1]\nsecond_list_with_a_long_name = "
    cell = "%%step key=long\nsecond_list_with_a_long_name.append(2)\nmark()"
    assert run(names + "first_list_with_a_long_name").result.success
    assert run(cell).result.success
    restart()
    assert run(names + "[1]").result.success
    again = run(cell)
    shared = "'first_list_with_a_long_name & second_list_with_a_long_name' → none"
    assert any(shared in n for n in again.notes), again.notes


def test_a_variable_an_edit_separated_from_what_the_step_changed_is_not_bound_again(
    ip: Any, run: Any, marks: Any, restart: Any
) -> None:
    # `clf` inside `pipe` (a library object: only identity counts there), fitted by a
    # step through `pipe`; an edit gives `pipe` a new estimator of its own.
    cell = "%%step key=fit\nmark()\npipe[0].append('fitted')"
    assert run("from collections import deque\nclf = []\npipe = deque([clf])").result.success
    assert run(cell).result.success
    assert ip.user_ns["clf"] == ["fitted"]
    restart()
    assert run("from collections import deque\nclf = []\npipe = deque([[]])").result.success
    again = run(cell)
    assert marks.count() == 2, again.notes
    assert ip.user_ns["clf"] == [] and list(ip.user_ns["pipe"]) == [["fitted"]]
    assert any("clf no longer shares objects" in n for n in again.notes), again.notes
    restart()  # unchanged: it replays
    assert run("from collections import deque\nclf = []\npipe = deque([[]])").result.success
    assert any("restored" in n for n in run(cell).notes) and marks.count() == 2
