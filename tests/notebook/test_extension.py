"""``%load_ext awaitly_nb`` registers ``%%step`` and ``%steps``; reload and unload."""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError

CELL = "%%step key=ext\nx = 1\nmark()"


def test_load_ext_registers_both_magics(ip: Any) -> None:
    ip.extension_manager.unload_extension("awaitly_nb")
    assert ip.find_cell_magic("step") is None

    ip.run_line_magic("load_ext", "awaitly_nb")

    assert ip.find_cell_magic("step") is not None
    assert ip.find_line_magic("steps") is not None


def test_load_ext_twice_is_harmless(ip: Any, run: Any, marks: Any, restart: Any) -> None:
    ip.run_line_magic("load_ext", "awaitly_nb")
    ip.run_line_magic("load_ext", "awaitly_nb")

    assert run(CELL).result.success
    restart()
    again = run(CELL)

    assert again.result.success
    assert marks.count() == 1
    assert ip.user_ns["x"] == 1
    assert list(ip.magics_manager.registry).count("StepMagics") == 1


def test_reload_ext_keeps_the_magics_working(ip: Any, run: Any, marks: Any, restart: Any) -> None:
    assert run(CELL).result.success

    ip.run_line_magic("reload_ext", "awaitly_nb")
    restart()
    again = run(CELL)

    assert again.result.success, again.error
    assert marks.count() == 1  # the entry saved before the reload still restores
    assert ip.user_ns["x"] == 1
    assert ip.find_line_magic("steps") is not None


def test_unload_ext_removes_the_magics(ip: Any, run: Any, marks: Any) -> None:
    ip.run_line_magic("unload_ext", "awaitly_nb")

    assert ip.find_cell_magic("step") is None
    assert ip.find_line_magic("steps") is None
    ran = run(CELL)
    assert not ran.result.success
    assert isinstance(ran.error, UsageError)
    assert "step" in str(ran.error)
    assert marks.count() == 0
    assert "x" not in ip.user_ns
