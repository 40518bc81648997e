"""A hit: the body does not run; variables, outputs and the last value come back."""

from __future__ import annotations

from typing import Any

CELL = (
    "%%step key=hit\n"
    "import sys\n"
    "from IPython.display import HTML, display\n"
    "print('one')\n"
    "display(HTML('<b>two</b>'))\n"
    "print('three', file=sys.stderr)\n"
    "print('four')\n"
    "value = 41\n"
    "mark()\n"
    "value + 1"
)


def test_hit_skips_the_body_and_restores_variables(
    ip: Any, run: Any, marks: Any, restart: Any
) -> None:
    assert run(CELL).result.success
    restart()

    again = run(CELL)

    assert again.result.success, again.error
    assert marks.count() == 1
    assert ip.user_ns["value"] == 41


def test_hit_after_reset_restores_into_a_fresh_namespace(ip: Any, run: Any, marks: Any) -> None:
    assert run(CELL).result.success

    ip.reset()  # a kernel restart, in process
    ip.user_ns["mark"] = marks
    assert "value" not in ip.user_ns
    again = run(CELL)

    assert again.result.success, again.error
    assert marks.count() == 1
    assert ip.user_ns["value"] == 41


def test_outputs_are_replayed_in_order(ip: Any, marks: Any, restart: Any, transcript: Any) -> None:
    with transcript() as first:
        assert ip.run_cell(CELL).success
    restart()
    with transcript() as again:
        assert ip.run_cell(CELL).success

    assert marks.count() == 1
    kinds = [e[0] for e in first.events]
    assert kinds == ["stdout", "display", "stderr", "stdout"]
    assert first.events[-1][1].startswith("four\nOut[")
    assert first.events[-1][1].endswith("]: 42\n")
    assert again.without_notes() == first.events


def test_last_expression_is_a_real_result(
    ip: Any, run: Any, marks: Any, restart: Any, execute_results: Any
) -> None:
    assert run(CELL, store_history=True).result.success
    restart()

    again = run(CELL, store_history=True)

    assert marks.count() == 1
    assert again.result.result == 42
    assert ip.user_ns["_"] == 42
    assert ip.user_ns["Out"][again.result.execution_count] == 42
    assert execute_results[-1]["text/plain"] == "42"
    assert f"Out[{again.result.execution_count}]: 42" in again.stdout


def test_a_note_says_the_step_was_restored(ip: Any, run: Any, marks: Any, restart: Any) -> None:
    first = run(CELL)
    assert first.notes == []
    restart()

    again = run(CELL)

    (note,) = again.notes
    assert "restored" in note
    assert "hit" in note  # the key
    assert "value" in note  # what came back


def test_quiet_silences_the_note(ip: Any, run: Any, marks: Any, restart: Any) -> None:
    cell = CELL.replace("key=hit", "key=hit --quiet")
    assert run(cell).result.success
    restart()

    again = run(cell)

    assert marks.count() == 1
    assert again.notes == []
    assert again.stdout.startswith("one\n")  # the outputs are still replayed


def test_trailing_semicolon_suppresses_the_result(
    ip: Any, run: Any, marks: Any, restart: Any, execute_results: Any
) -> None:
    cell = "%%step key=semi\nvalue = 41\nmark()\nvalue + 1;"
    first = run(cell, store_history=True)
    assert first.result.success, first.error
    restart()

    again = run(cell, store_history=True)

    assert again.result.success, again.error
    assert marks.count() == 1
    assert ip.user_ns["value"] == 41
    assert execute_results == []
    assert "Out[" not in first.stdout + again.stdout


def test_none_result_is_not_shown(
    ip: Any, run: Any, marks: Any, restart: Any, execute_results: Any
) -> None:
    cell = "%%step key=none\nvalue = 1\nmark()\nNone"
    assert run(cell, store_history=True).result.success
    restart()

    again = run(cell, store_history=True)

    assert marks.count() == 1
    assert again.result.result is None
    assert execute_results == []


def test_restored_functions_and_classes_see_the_notebook_globals(
    ip: Any, run: Any, marks: Any
) -> None:
    cell = (
        "%%step key=defs\n"
        "SCALE = 2\n"
        "def scaled(x):\n"
        "    return helper(x) * SCALE\n"
        "class Model:\n"
        "    def predict(self):\n"
        "        return helper(1) + SCALE\n"
        "    @staticmethod\n"
        "    def scale():\n"
        "        return SCALE\n"
        "mark()"
    )
    assert run(cell).result.success
    ip.reset()  # a kernel restart, in process
    ip.user_ns["mark"] = marks
    assert run(cell).result.success
    assert marks.count() == 1

    # Defined after the restore, and changed: a restored function must see both.
    assert run("def helper(x):\n    return x + 100\nSCALE = 3").result.success
    result = run("scaled(1), Model().predict(), Model.scale()").result
    assert result.success, result.error_in_exec
    assert result.result == (303, 104, 3)
