"""Small things a new user trips on: quoted keys, unknown keys, shell bookkeeping, wording."""

from __future__ import annotations

import functools
from typing import Any

import pytest
from IPython.core.error import UsageError

from awaitly_nb import step


@pytest.mark.parametrize(
    ("line", "key"),
    [('key="user 1"', "user 1"), ("key='a b'", "a b"), ('"user 2"', "user 2")],
)
def test_quoted_keys_may_hold_spaces(ip: Any, run: Any, marks: Any, line: str, key: str) -> None:
    assert run(f"%%step {line}\nmark()\nx = 1").error is None
    assert run(f"%%step {line}\nmark()\nx = 1").error is None
    assert marks.count() == 1
    assert key in run("%steps list").stdout
    assert run(f"%steps forget {line.removeprefix('key=')}").stdout == f"forgot {key!r}\n"


def test_forgetting_an_unknown_key_is_an_error_naming_close_matches(ip: Any, run: Any) -> None:
    run("%%step key=train_model\nx = 1")
    ran = run("%steps forget train_modle")
    assert isinstance(ran.error, UsageError)
    assert "no saved step 'train_modle'" in str(ran.error)
    assert "did you mean 'train_model'?" in str(ran.error)
    assert "train_modle" not in run("%steps list").stdout  # no phantom row


def test_a_shell_command_in_a_step_does_not_save_its_exit_code(ip: Any, run: Any) -> None:
    ran = run("%%step key=shell\n!true\nx = 1")
    assert ran.error is None
    assert any("restored" not in n for n in ran.notes) or not ran.notes
    restored = run("%%step key=shell\n!true\nx = 1")
    assert any("restored 'shell' (x)" in n for n in restored.notes), restored.notes


def test_the_call_form_awaits_coroutines_and_saves_their_results(ip: Any) -> None:
    import asyncio

    calls: list[int] = []

    async def fetch(n: int) -> int:
        calls.append(n)
        await asyncio.sleep(0)
        return n * 10

    async def main() -> list[int]:
        first = await step(lambda: fetch(1), key="lambda-coro")  # a function returning one
        again = await step(lambda: fetch(1), key="lambda-coro")
        direct = await step(functools.partial(fetch, 2), key="async-fn")
        direct_again = await step(functools.partial(fetch, 2), key="async-fn")
        return [first, again, direct, direct_again]

    assert asyncio.run(main()) == [10, 10, 20, 20]
    assert calls == [1, 2]  # each ran once; the second calls were restored


def test_a_keyless_cell_whose_code_changed_replaces_its_old_entry(ip: Any, run: Any) -> None:
    from IPython.utils.capture import capture_output

    def cell(source: str) -> None:
        with capture_output():
            ip.run_cell(source, cell_id="the-cell")

    cell("%%step\nkeyless = 1")
    cell("%%step\nkeyless = 2")
    listing = run("%steps list").stdout
    rows = [row for row in listing.splitlines() if row.startswith("cell:")]
    assert len(rows) == 1 and "complete" in rows[0], listing


LABEL = "first"


class Labelled:
    """Its repr reads a module global: a re-render after a restart could differ."""

    def __repr__(self) -> str:
        return f"Labelled({LABEL})"


def test_the_last_expression_replays_what_was_shown_and_out_holds_the_value(
    ip: Any, run: Any, marks: Any, restart: Any
) -> None:
    global LABEL
    ip.user_ns["Labelled"] = Labelled
    cell = "%%step key=shown\nmark()\nobj = Labelled()\nobj"
    first = run(cell, store_history=True)
    assert first.stdout.strip().endswith("Labelled(first)")
    restart()
    ip.user_ns["Labelled"] = Labelled
    LABEL = "second"
    try:
        again = run(cell, store_history=True)
    finally:
        LABEL = "first"
    assert marks.count() == 1
    assert again.stdout.strip().endswith("Labelled(first)")  # as the user saw it
    assert isinstance(ip.user_ns["_"], Labelled) and ip.user_ns["_"] is ip.user_ns["obj"]
