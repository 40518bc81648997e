"""Running part of a notebook after a restart: trust valid saved upstream steps, or say why not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

RAW = "%%step key=raw\nmark()\nraw = list(range(10))"
CLEAN = "%%step key=clean\nmark()\nclean = [x for x in raw if x > t]\nprint(clean)"
TOTAL = "%%step key=total\nmark()\nprint(sum(clean))"


def test_a_downstream_step_alone_restores_trusting_its_valid_upstream_steps(
    ip: Any, run: Any, marks: Any, restart: Any
) -> None:
    run(RAW)
    run("%%step key=threshold\nt = 5")
    run(CLEAN)
    run(TOTAL)
    assert marks.count() == 3

    restart()
    ran = run(TOTAL)  # only the last cell: clean, raw and t are not defined
    assert ran.error is None
    assert marks.count() == 3
    assert ran.stdout == "30\n"
    assert any("trusted the saved step 'clean' for inputs not defined now" in n for n in ran.notes)
    assert "raw" not in ip.user_ns  # only the step that ran is restored


def test_a_missing_input_made_by_a_plain_cell_runs_and_says_so(
    ip: Any, run: Any, marks: Any, restart: Any
) -> None:
    run(RAW)
    ip.user_ns["t"] = 5  # a plain cell
    run(CLEAN)
    restart()
    run(RAW)
    ran = run(CLEAN)
    assert isinstance(ran.error, NameError)
    assert marks.count() == 3
    assert any(
        "running 'clean' again: t is not defined now and no saved step makes it" in n
        for n in ran.notes
    )


def test_an_upstream_step_whose_input_changed_is_not_trusted(
    ip: Any, run: Any, marks: Any, restart: Any
) -> None:
    ip.user_ns["n"] = 10
    run("%%step key=raw\nmark()\nraw = list(range(n))")
    run("%%step key=total\nmark()\nprint(sum(raw))")
    restart()
    ip.user_ns["n"] = 20  # a plain cell edited; the raw cell is not run
    ran = run("%%step key=total\nmark()\nprint(sum(raw))")
    assert isinstance(ran.error, NameError)
    assert any(
        "raw is not defined now; step 'raw' makes it, but its input n changed since" in note
        for note in ran.notes
    )
    assert marks.count() == 3


def test_an_output_changed_by_a_plain_cell_after_its_step_is_not_trusted(
    ip: Any, run: Any, marks: Any, restart: Any
) -> None:
    run(RAW)
    run("raw.append(100)")  # a plain cell changes it before the reader saw it
    run("%%step key=total\nmark()\nprint(sum(raw))")
    restart()
    ran = run("%%step key=total\nmark()\nprint(sum(raw))")
    assert isinstance(ran.error, NameError)
    assert any("a cell changed raw after it ran" in n for n in ran.notes)


def test_an_upstream_step_whose_file_changed_is_not_trusted(
    ip: Any, run: Any, marks: Any, restart: Any, tmp_path: Path
) -> None:
    data = tmp_path / "numbers.txt"
    data.write_text("1 2 3")
    ip.user_ns["path"] = str(data)
    run("%%step key=load\nmark()\nnumbers = [int(x) for x in open(path).read().split()]")
    run("%%step key=total\nmark()\nprint(sum(numbers))")
    restart()
    ip.user_ns["path"] = str(data)  # the plain cell that sets it runs again
    data.write_text("1 2 4")
    ran = run("%%step key=total\nmark()\nprint(sum(numbers))")
    assert isinstance(ran.error, NameError)
    assert any("step 'load' makes it, but" in n and "numbers.txt" in n for n in ran.notes), (
        ran.notes
    )
