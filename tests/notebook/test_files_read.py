"""Files a step reads are its inputs; files it writes are not; a content change is always seen."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from awaitly_nb.files import FileProbe, ReadRecorder, stamp


@pytest.fixture
def here(tmp_path: Path) -> Any:
    """Run in ``tmp_path`` (the notebook's folder, where every file read counts)."""
    before = os.getcwd()
    os.chdir(tmp_path)
    yield tmp_path
    os.chdir(before)


def test_a_step_that_writes_a_file_named_in_its_code_replays(
    ip: Any, run: Any, marks: Any, restart: Any, here: Path
) -> None:
    cell = (
        "%%step key=log exclude=f\nmark()\n"
        "with open('applog.txt', 'a') as f:\n    f.write('hello\\n')\nwritten = True"
    )
    assert run(cell).error is None
    restart()
    ran = run(cell)
    assert ran.error is None and any("restored" in n for n in ran.notes), ran.notes
    assert marks.count() == 1
    assert (here / "applog.txt").read_text() == "hello\n"


def test_a_file_read_then_written_by_others_is_still_an_input(
    ip: Any, run: Any, marks: Any, restart: Any, here: Path
) -> None:
    (here / "data.txt").write_text("1 2 3")
    cell = "%%step key=load\nmark()\ntotal = sum(int(x) for x in open('data.txt').read().split())"
    run(cell)
    restart()
    (here / "data.txt").write_text("1 2 4")
    ran = run(cell)
    assert ip.user_ns["total"] == 7 and marks.count() == 2
    assert any("data.txt changed" in n for n in ran.notes)


def test_a_same_size_rewrite_with_its_old_time_put_back_is_noticed(here: Path) -> None:
    data = here / "data.csv"
    data.write_text("a\n1\n")
    saved = stamp(str(data))
    assert saved is not None
    data.write_text("a\n2\n")  # same size
    os.utime(data, ns=(saved["mtime_ns"], saved["mtime_ns"]))  # as cp -p or rsync -t do
    assert FileProbe().change(str(data), saved) == "data.csv changed"
    # Stamps saved before change times were kept compare size and time only.
    old = {k: saved[k] for k in ("size", "mtime_ns", "xxh3")}
    assert FileProbe().change(str(data), old) is None


def test_the_recorder_keeps_reads_and_leaves_out_writes(here: Path) -> None:
    (here / "in.txt").write_text("x")
    with ReadRecorder() as recorder:
        open("in.txt").close()
        with open("out.txt", "w") as f:
            f.write("y")
        fd = os.open("raw.bin", os.O_WRONLY | os.O_CREAT)
        os.close(fd)
    assert set(recorder.files()) == {str(here / "in.txt")}
    assert recorder.written == {str(here / "out.txt"), str(here / "raw.bin")}


def test_a_comment_in_your_own_module_does_not_count_but_its_code_does(here: Path) -> None:
    module = here / "my_helpers_for_probe.py"
    module.write_text("def f():\n    return 1\n")
    sys.path.insert(0, str(here))
    try:
        import my_helpers_for_probe  # noqa: F401

        probe = FileProbe()
        first = probe.module_version("my_helpers_for_probe")
        module.write_text("# a note\ndef f():\n    return 1  # still one\n")
        assert probe.module_version("my_helpers_for_probe") == first
        module.write_text("def f():\n    return 2\n")
        assert probe.module_version("my_helpers_for_probe") != first
    finally:
        sys.path.remove(str(here))
        sys.modules.pop("my_helpers_for_probe", None)


def test_a_file_the_step_wrote_and_another_cell_changed_makes_it_run_again(
    ip: Any, run: Any, marks: Any, restart: Any, here: Path
) -> None:
    cell = "%%step key=writer\nmark()\nwith open('out.txt', 'w') as f:\n    f.write('A')"
    assert run(cell).error is None
    restart()
    assert any("restored" in n for n in run(cell).notes)  # as the step left it
    (here / "out.txt").write_text("AB")  # another cell appended to it
    restart()
    again = run(cell)
    assert any("out.txt changed since the step wrote it" in n for n in again.notes), again.notes
    assert marks.count() == 2 and (here / "out.txt").read_text() == "A"  # as a run leaves it
