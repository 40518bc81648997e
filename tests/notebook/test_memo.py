"""Big inputs restored from the store and untouched since are not hashed again (core/memo.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import awaitly_nb.core.engine as engine_module

MAKE = "%%step key=make\nimport numpy as np\nbig = np.arange(200_000)"
USE = "%%step key=use\nmark()\ns = int(big.sum())\nprint(s)"
USE2 = "%%step key=use2\nmark()\nm = int(big[:10].sum())\nprint(m)"


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The values the engine fingerprints by value (arrays only), in order."""
    seen: list[Any] = []
    real = engine_module.value_digest

    def counting(value: Any, *args: Any, **kwargs: Any) -> str | None:
        if isinstance(value, np.ndarray):
            seen.append(value)
        return real(value, *args, **kwargs)

    monkeypatch.setattr(engine_module, "value_digest", counting)
    return seen


def test_a_restored_array_read_by_steps_with_no_code_between_is_not_hashed(
    ip: Any, run: Any, marks: Any, restart: Any, hashed: list[Any]
) -> None:
    for cell in (MAKE, USE, USE2):
        assert run(cell).error is None
    assert marks.count() == 2
    restart()
    hashed.clear()
    for cell in (MAKE, USE, USE2):
        ran = run(cell)
        assert ran.error is None and any("restored" in n for n in ran.notes)
    assert marks.count() == 2
    assert hashed == []  # proven by the saved sources, then remembered


def saved_then_restored(run: Any, restart: Any) -> None:
    """All three steps saved; after a restart the first two restored, nothing run since."""
    for cell in (MAKE, USE, USE2):
        run(cell)
    restart()
    run(MAKE)
    run(USE)


def test_any_plain_cell_between_makes_the_next_step_hash_again(
    ip: Any, run: Any, marks: Any, restart: Any, hashed: list[Any]
) -> None:
    saved_then_restored(run, restart)
    hashed.clear()
    run("x = 1")  # user code ran: nothing is proven any more
    assert run(USE2).error is None
    assert len(hashed) == 1
    assert marks.count() == 2


def test_an_array_changed_in_place_by_a_plain_cell_is_seen(
    ip: Any, run: Any, marks: Any, restart: Any
) -> None:
    saved_then_restored(run, restart)
    run("big[0] = 1000")
    ran = run(USE2)
    assert ran.stdout == "1045\n"
    assert marks.count() == 3
    assert any("running 'use2' again: big changed" in n for n in ran.notes)


def test_a_step_that_runs_may_change_what_it_reads_so_its_readers_hash_again(
    ip: Any, run: Any, marks: Any, hashed: list[Any]
) -> None:
    run(MAKE)
    run("%%step key=grow\nmark()\nbig[1] = 7")
    hashed.clear()
    ran = run("%%step key=use3\nmark()\nm = int(sum(big[:10]))\nprint(m)")
    assert ran.stdout == "51\n"
    assert len(hashed) == 2  # at its lookup (nothing proven), and after its body ran


def test_without_the_extension_hook_nothing_is_remembered(ip: Any, run: Any) -> None:
    from awaitly_nb.config import get_session

    memo = get_session().engine.memo
    assert memo.enabled  # %load_ext installed the pre_run_cell hook
    ip.run_line_magic("unload_ext", "awaitly_nb")
    try:
        assert not memo.enabled
        assert memo.get("big", object()) is None
    finally:
        ip.run_line_magic("load_ext", "awaitly_nb")
    assert memo.enabled
