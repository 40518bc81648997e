"""The ``%%step`` line: keys (bare, ``key=``, derived, interpolated), options, help, misuse."""

from __future__ import annotations

from typing import Any

import pytest
from IPython.core.error import UsageError

from awaitly_nb.config import get_session


def test_key_option_saves_under_that_key(ip: Any, run: Any, marks: Any, saved: Any) -> None:
    ran = run("%%step key=user:1\nuser = {'id': 1}\nmark()")

    assert ran.result.success, ran.error
    assert list(saved()) == ["user:1"]
    assert saved()["user:1"].variables == ("user",)


def test_bare_key_is_the_key(ip: Any, run: Any, marks: Any, restart: Any, saved: Any) -> None:
    cell = "%%step user:1\nuser = {'id': 1}\nmark()"
    assert run(cell).result.success
    restart()
    again = run(cell)

    assert again.result.success
    assert list(saved()) == ["user:1"]
    assert marks.count() == 1
    assert ip.user_ns["user"] == {"id": 1}


def test_no_key_derives_one_from_the_normalised_code(
    ip: Any, run: Any, marks: Any, restart: Any, saved: Any
) -> None:
    assert run("%%step\nx = 1\nmark()").result.success
    (first,) = saved()
    restart()

    same = run("%%step\n# a comment\nx   =   1\n\nmark()  # again\n")
    assert same.result.success
    assert marks.count() == 1
    assert ip.user_ns["x"] == 1
    assert list(saved()) == [first]

    changed = run("%%step\nx = 2\nmark()")
    assert changed.result.success
    assert marks.count() == 2
    assert ip.user_ns["x"] == 2
    assert len(saved()) == 2  # a different key: the first entry is still there


def test_key_interpolates_notebook_variables(
    ip: Any, run: Any, marks: Any, restart: Any, saved: Any
) -> None:
    cell = "%%step key=posts:{user_id}\nposts = [user_id] * 2\nmark()"
    ip.user_ns["user_id"] = 1
    assert run(cell).result.success
    ip.user_ns["user_id"] = 2
    assert run(cell).result.success

    assert sorted(saved()) == ["posts:1", "posts:2"]
    assert marks.count() == 2

    restart()
    ip.user_ns["user_id"] = 1
    assert run(cell).result.success
    assert marks.count() == 2
    assert ip.user_ns["posts"] == [1, 1]


def test_key_with_an_undefined_variable_is_a_usage_error(
    ip: Any, run: Any, marks: Any, saved: Any
) -> None:
    ran = run("%%step key=posts:{nobody}\nposts = 1\nmark()")

    assert not ran.result.success
    assert isinstance(ran.error, UsageError)
    assert "nobody" in str(ran.error)
    assert marks.count() == 0
    assert saved() == {}


def test_help_comes_from_the_docstring(ip: Any) -> None:
    doc = ip.find_cell_magic("step").__doc__

    assert "%%step key=" in doc
    for option in ("outputs=", "exclude=", "--force", "--pin", "--quiet"):
        assert option in doc


def test_pinfo_shows_the_help(ip: Any, run: Any) -> None:
    ran = run("%%step?")

    assert ran.result.success, ran.error
    text = ran.stdout + "".join(d.get("text/plain", "") for d in ran.displays)
    assert "--pin" in text
    assert "outputs=" in text


def test_help_usage_line_names_the_cell_magic(ip: Any) -> None:
    doc = ip.find_cell_magic("step").__doc__
    usage = next(line.strip() for line in doc.splitlines() if line.strip() not in ("", "::"))

    assert usage.startswith("%%step ")
    for part in ("key=KEY", "outputs=", "exclude=", "--force", "--pin", "--quiet"):
        assert part in usage


BAD_LINES = [
    pytest.param("key=k --bogus", id="unknown-flag"),
    pytest.param("key=k foo=1", id="unknown-option"),
    pytest.param("key=", id="empty-key"),
    pytest.param("key=k outputs=a,,b", id="malformed-outputs"),
    pytest.param("key=k exclude=", id="empty-exclude"),
    pytest.param("k1 k2", id="two-bare-keys"),
    pytest.param("k1 key=k2", id="bare-and-key="),
    pytest.param("key=k1 key=k2", id="key=-twice"),
]


@pytest.mark.parametrize("line", BAD_LINES)
def test_bad_arguments_are_a_usage_error_and_the_body_does_not_run(
    ip: Any, run: Any, marks: Any, saved: Any, line: str
) -> None:
    ran = run(f"%%step {line}\na = 1\nb = 2\nmark()")

    assert not ran.result.success
    assert isinstance(ran.error, UsageError), repr(ran.error)
    assert "Usage" in str(ran.error) or "%%step" in str(ran.error)
    assert marks.count() == 0
    assert "a" not in ip.user_ns
    assert saved() == {}


def test_doubled_braces_in_a_key_are_literal(ip: Any, run: Any, saved: Any) -> None:
    assert run("%%step key=set:{{a}}\nx = 1").result.success

    assert list(saved()) == ["set:{a}"]


def test_unbalanced_brace_in_a_key_is_a_usage_error(
    ip: Any, run: Any, marks: Any, saved: Any
) -> None:
    ran = run("%%step key=oops:{\nx = 1\nmark()")

    assert isinstance(ran.error, UsageError)
    assert marks.count() == 0
    assert saved() == {}


def test_an_interpolated_value_may_contain_braces(ip: Any, run: Any, marks: Any) -> None:
    assert run("cfg = {'lr': 0.1}").result.success
    ran = run("%%step key=train:{cfg}\nx = 1\nmark()")
    assert ran.result.success, ran.error
    assert run("%%step key=train:{cfg}\nx = 1\nmark()").result.success
    assert marks.count() == 1
    assert [m.key for m in get_session().engine.steps()] == ["train:{'lr': 0.1}"]
