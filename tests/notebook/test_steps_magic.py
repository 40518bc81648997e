"""``%steps``: list, forget and clear the saved steps of this notebook."""

from __future__ import annotations

from typing import Any

import pytest
from IPython.core.error import UsageError

import awaitly_nb


def _cell(key: str) -> str:
    return f"%%step key={key}\nx = '{key}'\nmark('{key}')"


@pytest.mark.parametrize("line", ["%steps list", "%steps"])
def test_list_prints_a_table_of_the_saved_steps(ip: Any, run: Any, marks: Any, line: str) -> None:
    assert run(_cell("user:1")).result.success
    assert run(_cell("posts:1")).result.success

    listing = run(line)

    assert listing.result.success, listing.error
    lines = listing.stdout.splitlines()
    header = next(row for row in lines if row.startswith("key"))
    assert header.split() == ["key", "status", "saved", "at", "took", "replay", "size", "variables"]
    rows = [row.split()[0] for row in lines[lines.index(header) + 2 :]]
    assert rows == ["user:1", "posts:1"]
    for row in lines[lines.index(header) + 2 :]:
        assert "complete" in row
        assert row.rstrip().endswith(" x")  # the variable it saves
        assert " B " in row or " KB " in row  # its size: 123 B, 1.2 KB


def test_list_only_shows_this_workflow(ip: Any, run: Any, marks: Any) -> None:
    awaitly_nb.configure(workflow="other")
    assert run(_cell("elsewhere")).result.success
    awaitly_nb.configure(workflow="test")
    assert run(_cell("here")).result.success

    listing = run("%steps list")

    assert "here" in listing.stdout
    assert "elsewhere" not in listing.stdout


def test_list_when_nothing_is_saved(ip: Any, run: Any) -> None:
    listing = run("%steps list")

    assert listing.result.success
    assert "no saved steps" in listing.stdout


def test_forget_makes_that_step_run_again(ip: Any, run: Any, marks: Any, restart: Any) -> None:
    assert run(_cell("a")).result.success
    assert run(_cell("b")).result.success

    forget = run("%steps forget a")
    assert forget.result.success
    assert "a" in forget.stdout
    restart()
    assert run(_cell("a")).result.success
    assert run(_cell("b")).result.success

    assert marks.count("a") == 2
    assert marks.count("b") == 1


def test_forget_an_unknown_key_says_so(ip: Any, run: Any) -> None:
    forget = run("%steps forget nothing-here")

    assert isinstance(forget.error, UsageError)
    assert "no saved step 'nothing-here'" in str(forget.error)


def test_clear_forgets_every_step(ip: Any, run: Any, marks: Any, saved: Any) -> None:
    assert run(_cell("a")).result.success
    assert run(_cell("b")).result.success

    cleared = run("%steps clear")

    assert cleared.result.success
    assert "2" in cleared.stdout
    assert saved() == {}
    assert run(_cell("a")).result.success
    assert run(_cell("b")).result.success
    assert marks.count() == 4


@pytest.mark.parametrize(
    "line", ["%steps foo", "%steps forget", "%steps clear all", "%steps list x"]
)
def test_bad_subcommand_is_a_usage_error(ip: Any, run: Any, line: str) -> None:
    ran = run(line)

    assert not ran.result.success
    assert isinstance(ran.error, UsageError)
    assert "%steps" in str(ran.error)


def test_forget_a_key_with_a_space(ip: Any, run: Any, marks: Any, saved: Any) -> None:
    ip.user_ns["name"] = "Ada Lovelace"
    assert run("%%step key=user:{name}\nx = name").result.success
    assert list(saved()) == ["user:Ada Lovelace"]

    forget = run("%steps forget user:Ada Lovelace")

    assert forget.result.success, forget.error
    assert saved() == {}


def test_steps_why_compares_what_a_step_read_with_now_without_running_it(
    ip: Any, run: Any, marks: Any, tmp_path: Any
) -> None:
    (tmp_path / "data.txt").write_text("one")
    ip.user_ns.update(t=5, rows=[1, 2])
    cell = (
        "%%step key=clean\nmark()\ntext = open('data.txt').read()\n"
        "clean = [r for r in rows if r > t]"
    )
    assert run(cell).result.success
    ip.user_ns["t"] = 6
    (tmp_path / "data.txt").write_text("two")

    why = run("%steps why clean")

    assert why.result.success, why.error
    assert "input t: t changed (5 → 6)" in why.stdout
    assert "input rows: unchanged ([1, 2])" in why.stdout
    assert "data.txt changed" in why.stdout
    assert marks.count() == 1  # nothing ran
    assert "no saved step 'nope'" in str(run("%steps why nope").error)


def test_list_shows_a_key_once_with_its_variants_and_forget_drops_them_all(
    ip: Any, run: Any, marks: Any
) -> None:
    cell = "%%step key=fit\nmark()\nmodel = n * 2"
    for n in (1, 2, 3):
        ip.user_ns["n"] = n
        assert run(cell).error is None
    listing = run("%steps").stdout
    rows = [row for row in listing.splitlines() if row.startswith("fit")]
    assert len(rows) == 1 and rows[0].startswith("fit (3 variants)")
    ip.user_ns["n"] = 1
    assert run(cell).error is None and marks.count() == 3  # the n=1 variant replays
    run("%steps forget fit")
    rows = [row for row in run("%steps").stdout.splitlines() if row.startswith("fit")]
    assert rows == ["fit  not run yet"]
    assert run(cell).error is None and marks.count() == 4


def test_configure_variants_sets_how_many_are_kept(ip: Any, run: Any, marks: Any) -> None:
    cell = "%%step key=fit\nmark()\nmodel = n * 2"
    awaitly_nb.configure(variants=1)
    try:
        for n in (1, 2, 1):
            ip.user_ns["n"] = n
            run(cell)
        assert marks.count() == 3  # only the last one is kept: going back runs again
        assert "variants" not in run("%steps").stdout
    finally:
        awaitly_nb.configure(variants=None)
    from awaitly_nb.config import get_session

    assert get_session().engine.variants == 4
    with pytest.raises(ValueError, match="variants must be a whole number"):
        awaitly_nb.configure(variants=-1)
    with pytest.raises(ValueError, match="variants must be a whole number"):
        awaitly_nb.configure(variants="4")
