"""A failing body saves nothing; changed code runs again; ``--pin`` and ``--force``."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from IPython.utils.capture import capture_output

from awaitly_nb.errors import CacheWarning

FAILING = (
    "%%step key=fails\npartial = 1\nmark()\nif broken:\n    raise ValueError('boom')\nfine = 2"
)


def test_an_exception_is_re_raised_and_nothing_is_saved(
    ip: Any, run: Any, marks: Any, saved: Any
) -> None:
    ip.user_ns["broken"] = True
    ran = run(FAILING)

    assert not ran.result.success
    assert type(ran.result.error_in_exec) is ValueError
    assert str(ran.result.error_in_exec) == "boom"
    assert "ValueError" in ran.stdout + ran.stderr  # the normal traceback is shown
    assert saved() == {}


def test_after_a_failure_the_next_run_executes_again(
    ip: Any, run: Any, marks: Any, restart: Any, saved: Any
) -> None:
    ip.user_ns["broken"] = True
    assert not run(FAILING).result.success
    assert not run(FAILING).result.success
    assert marks.count() == 2

    ip.user_ns["broken"] = False  # the fix
    assert run(FAILING).result.success
    assert marks.count() == 3
    assert list(saved()) == ["fails"]

    restart()
    ip.user_ns["broken"] = False
    assert run(FAILING).result.success
    assert marks.count() == 3
    assert ip.user_ns["fine"] == 2


def test_keyboard_interrupt_leaves_no_entry(ip: Any, run: Any, marks: Any, saved: Any) -> None:
    cell = "%%step key=interrupted\nresult = 1\nmark()\nraise KeyboardInterrupt"
    ran = run(cell)

    assert not ran.result.success
    assert isinstance(ran.result.error_in_exec, KeyboardInterrupt)
    assert saved() == {}

    run(cell)
    assert marks.count() == 2


def test_failure_does_not_replace_an_earlier_entry(
    ip: Any, run: Any, marks: Any, restart: Any, saved: Any
) -> None:
    ip.user_ns["broken"] = False
    assert run(FAILING).result.success
    before = saved()["fails"]

    ip.user_ns["broken"] = True
    assert not run(FAILING.replace("key=fails", "key=fails --force")).result.success

    assert saved()["fails"] == before


# --- staleness ----------------------------------------------------------------------------


def test_comment_and_whitespace_changes_still_hit(
    ip: Any, run: Any, marks: Any, restart: Any
) -> None:
    assert run("%%step key=code\nx = [1, 2]\nmark()").result.success
    restart()

    again = run("%%step key=code\n# a note about x\nx = [1,\n     2]   # two\n\nmark()\n\n")

    assert again.result.success
    assert marks.count() == 1
    assert ip.user_ns["x"] == [1, 2]
    assert "restored" in again.notes[0]


def test_changed_code_runs_again_and_replaces_the_entry(
    ip: Any, run: Any, marks: Any, restart: Any, saved: Any
) -> None:
    assert run("%%step key=code\nx = 1\nmark()").result.success
    fingerprint = saved()["code"].fingerprint

    changed = run("%%step key=code\nx = 2\nmark()")

    assert changed.result.success
    assert marks.count() == 2
    assert ip.user_ns["x"] == 2
    (note,) = changed.notes
    assert "changed" in note
    assert list(saved()) == ["code"]
    assert saved()["code"].fingerprint != fingerprint

    restart()
    assert run("%%step key=code\nx = 2\nmark()").result.success
    assert marks.count() == 2
    assert ip.user_ns["x"] == 2


def test_pin_trusts_the_key_alone(ip: Any, run: Any, marks: Any, restart: Any) -> None:
    assert run("%%step key=code\nx = 1\nmark()").result.success
    restart()

    pinned = run("%%step key=code --pin\nx = 2\nmark()")

    assert pinned.result.success
    assert marks.count() == 1
    assert ip.user_ns["x"] == 1


def test_force_runs_again_and_overwrites(
    ip: Any, run: Any, marks: Any, restart: Any, saved: Any
) -> None:
    cell = "%%step key=code\nx = source\nmark()"
    ip.user_ns["source"] = "old"
    assert run(cell).result.success
    assert run(cell).result.success  # nothing changed: restored
    assert marks.count() == 1

    forced = run(cell.replace("key=code", "key=code --force"))

    assert forced.result.success
    assert marks.count() == 2
    ip.user_ns["source"] = "new"
    changed = run(cell)  # an input changed: runs again and says so
    assert changed.result.success
    assert marks.count() == 3
    assert ip.user_ns["x"] == "new"
    assert any("source changed ('old' → 'new')" in n for n in changed.notes)
    restart()
    ip.user_ns["source"] = "new"
    assert run(cell).result.success
    assert marks.count() == 3
    assert ip.user_ns["x"] == "new"


@pytest.mark.parametrize("flag", ["--pin", "--force", "--quiet"])
def test_flags_may_come_before_the_key(ip: Any, run: Any, marks: Any, flag: str) -> None:
    ran = run(f"%%step {flag} key=flag\nx = 1\nmark()")

    assert ran.result.success, ran.error
    assert marks.count() == 1


@pytest.mark.parametrize("error", ["ValueError('boom')", "KeyboardInterrupt"])
def test_recording_is_removed_after_a_failure(ip: Any, marks: Any, error: str) -> None:
    with capture_output():
        stdout, stderr = sys.stdout, sys.stderr
        result = ip.run_cell(f"%%step key=rec\nprint('partial')\nraise {error}")
        assert sys.stdout is stdout
        assert sys.stderr is stderr
        assert "publish" not in vars(ip.display_pub)
        assert "clear_output" not in vars(ip.display_pub)

    assert not result.success


LOAD = "%%step key=load\nbase = [1, 2, 3]\nmark('load')"
TOTAL = "%%step key=total\ntotal = sum(base)\nmark('total')"


def test_a_step_reading_a_recomputed_variable_is_stale_too(ip: Any, run: Any, marks: Any) -> None:
    assert run(LOAD).result.success and run(TOTAL).result.success
    assert run(LOAD.replace("3]", "3, 4]")).result.success  # its code changed: runs again

    again = run(TOTAL)  # same code, but `base` was recomputed upstream

    assert again.result.success
    assert marks.count("total") == 2
    assert ip.user_ns["total"] == 10
    assert any("base changed ([1, 2, 3] → [1, 2, 3, 4])" in n for n in again.notes)


def test_lineage_survives_a_restart_when_nothing_changed(
    ip: Any, run: Any, marks: Any, restart: Any
) -> None:
    assert run(LOAD).result.success and run(TOTAL).result.success
    restart()
    assert run(LOAD).result.success and run(TOTAL).result.success  # both restored
    assert marks.count("load") == 1 and marks.count("total") == 1
    assert ip.user_ns["total"] == 6


def test_a_cell_that_rebinds_its_input_runs_again_like_jupyter_and_replays_after_a_restart(
    ip: Any, run: Any, marks: Any, restart: Any
) -> None:
    assert run(LOAD).result.success
    grow = "%%step key=grow\nbase = base + [10]\nmark('grow')"
    assert run(grow).result.success
    again = run(grow)  # `base` it reads is now [1, 2, 3, 10]: a real run grows it again
    assert marks.count("grow") == 2
    assert ip.user_ns["base"] == [1, 2, 3, 10, 10]
    assert any("base changed ([1, 2, 3] → [1, 2, 3, 10])" in n for n in again.notes)
    restart()
    # Run All: `load` is restored; `grow` was last saved reading [1, 2, 3, 10], but the
    # variant it saved reading [1, 2, 3] is kept: restored, as a plain Run All computes it.
    assert run(LOAD).result.success and run(grow).result.success
    assert marks.count("grow") == 2 and marks.count("load") == 1
    assert ip.user_ns["base"] == [1, 2, 3, 10]


def test_a_step_that_rebinds_a_recomputed_input_is_stale_too(ip: Any, run: Any, marks: Any) -> None:
    scale = "%%step key=scale\nbase = [v * 10 for v in base]\nmark('scale')"
    assert run(LOAD).result.success and run(scale).result.success
    assert ip.user_ns["base"] == [10, 20, 30]
    assert run(LOAD.replace("3]", "3, 4]")).result.success
    assert run(scale).result.success  # `base` it reads came from a recomputed step
    assert marks.count("scale") == 2
    assert ip.user_ns["base"] == [10, 20, 30, 40]


def test_a_step_after_one_that_could_not_be_saved_runs_again(ip: Any, run: Any, marks: Any) -> None:
    assert run(LOAD).result.success and run(TOTAL).result.success
    unsaveable = "%%step key=load\nbase = [1, 2, 3, 4]\ngen = (i for i in base)\nmark('load')"
    with pytest.warns(CacheWarning):
        assert run(unsaveable).result.success  # ran, new `base`, but not saved
    assert run(TOTAL).result.success
    assert marks.count("total") == 2 and ip.user_ns["total"] == 10


def test_two_cells_sharing_a_key_are_told_so(ip: Any, run: Any, marks: Any) -> None:
    def cell(source: str, cell_id: str) -> list[str]:
        with capture_output() as captured:
            ip.run_cell(source, cell_id=cell_id)
        return [o.data["text/plain"] for o in captured.outputs if "awaitly_nb" in o.metadata]

    assert cell("%%step key=same\nmark()\nx = 1", "cell-a") == []
    notes = cell("%%step key=same\nmark()\nx = 2", "cell-b")
    assert any("another cell uses key 'same' with other code" in n for n in notes), notes
    notes = cell("%%step key=same\nmark()\nx = 3", "cell-b")  # the same cell, edited
    assert notes == ["[awaitly_nb] running 'same' again: code changed"]


def test_an_augmented_assignment_reads_its_target(
    ip: Any, run: Any, marks: Any, restart: Any
) -> None:
    cell = "%%step key=aug\nmark()\nn += 1\nprint(n)"
    assert run("n = 5").error is None
    assert run(cell).stdout.strip() == "6"
    restart()
    assert run("n = 6").error is None  # an edited parameter
    again = run(cell)
    assert again.stdout.strip() == "7" and marks.count() == 2, again.notes
    assert any("n changed (5 → 6)" in note for note in again.notes), again.notes
