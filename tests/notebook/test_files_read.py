"""Files a step reads are its inputs; files it writes are not; a content change is always seen."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from awaitly_nb.files import FileProbe, ReadRecorder, stamp


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


def test_a_helper_that_imports_another_of_your_modules_reruns_when_that_one_changes(
    ip: Any, run: Any, marks: Any, restart: Any, here: Path
) -> None:
    import importlib

    inner, outer = "awaitly_probe_inner", "awaitly_probe_outer"
    (here / f"{inner}.py").write_text("def g(x):\n    return x * 2\n")
    (here / f"{outer}.py").write_text(f"from {inner} import g\n\ndef f(x):\n    return g(x) + 1\n")
    sys.path.insert(0, str(here))
    cell = "%%step key=k\nmark()\ny = f(5)"
    try:
        assert run(f"from {outer} import f").error is None
        assert run(cell).error is None and ip.user_ns["y"] == 11
        restart()
        for name in (inner, outer):  # a new kernel imports them afresh
            sys.modules.pop(name, None)
        (here / f"{inner}.py").write_text("def g(x):\n    return x * 30\n")  # not f's module
        importlib.invalidate_caches()
        assert run(f"from {outer} import f").error is None
        again = run(cell)
        assert marks.count() == 2 and ip.user_ns["y"] == 151
        assert any("f() changed" in n for n in again.notes), again.notes
    finally:
        sys.path.remove(str(here))
        for name in (inner, outer):
            sys.modules.pop(name, None)


def test_a_global_of_your_module_set_at_run_time_is_read_by_its_functions(here: Path) -> None:
    from awaitly_nb.core.digest import value_digest

    (here / "awaitly_probe_scaled.py").write_text("SCALE = 1\n\ndef f(x):\n    return x * SCALE\n")
    sys.path.insert(0, str(here))
    try:
        import awaitly_probe_scaled as helpers

        probe = FileProbe()
        before = value_digest(helpers.f, {}, probe.module_version)
        helpers.SCALE = 2  # as a plain cell might
        assert value_digest(helpers.f, {}, probe.module_version) != before
    finally:
        sys.path.remove(str(here))
        sys.modules.pop("awaitly_probe_scaled", None)


def test_a_lock_among_your_modules_globals_leaves_its_functions_compared(here: Path) -> None:
    from awaitly_nb.core.digest import value_digest

    source = (
        "import threading\nLOCK = threading.Lock()\n\ndef f():\n    with LOCK:\n        return 1\n"
    )
    (here / "awaitly_probe_locked.py").write_text(source)
    sys.path.insert(0, str(here))
    try:
        import awaitly_probe_locked as helpers

        assert value_digest(helpers.f, {}, FileProbe().module_version) is not None
    finally:
        sys.path.remove(str(here))
        sys.modules.pop("awaitly_probe_locked", None)


def test_a_file_read_by_a_thread_pool_the_step_started_is_an_input(
    ip: Any, run: Any, marks: Any, restart: Any, here: Path
) -> None:
    (here / "part.txt").write_text("one")
    cell = (
        "%%step key=pool\nmark()\nfrom concurrent.futures import ThreadPoolExecutor\n"
        "def read(name):\n    with open(name) as f:\n        return f.read()\n"
        "with ThreadPoolExecutor(2) as pool:\n    parts = list(pool.map(read, ['part' + '.txt']))"
    )
    assert run(cell).error is None and ip.user_ns["parts"] == ["one"]
    restart()
    (here / "part.txt").write_text("two!")
    again = run(cell)
    assert any("part.txt changed" in n for n in again.notes), again.notes
    assert marks.count() == 2 and ip.user_ns["parts"] == ["two!"]


def test_a_step_restored_inside_another_passes_on_the_files_it_read(here: Path) -> None:
    import subprocess

    (here / "d.txt").write_text("one")
    (here / "job.py").write_text(
        "import sys\nfrom awaitly_nb import configure, step\n"
        "configure(dir=sys.argv[1], workflow='w')\n"
        "def load():\n    return open('d.txt').read()\n"
        "def outer():\n    return step(load, key='load').upper()\n"
        "print(step(load, key='load'), step(outer, key='outer'))\n"
    )

    def job() -> str:
        done = subprocess.run(
            [sys.executable, "job.py", str(here / "store")],
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    assert job() == "one ONE"  # 'outer' ran while 'load' was already saved: a hit inside it
    (here / "d.txt").write_text("two")
    assert job() == "two TWO"


def test_a_global_of_your_module_set_by_a_plain_cell_is_an_input_of_the_steps_using_it(
    ip: Any, run: Any, marks: Any, restart: Any, here: Path
) -> None:
    (here / "awaitly_probe_settings.py").write_text(
        "SCALE = 1\n\ndef scaled(x):\n    return x * SCALE\n"
    )
    sys.path.insert(0, str(here))
    cell = "%%step key=k\nmark()\ny = settings.scaled(5) + settings.SCALE"
    try:
        run("import awaitly_probe_settings as settings\nsettings.SCALE = 2")
        assert run(cell).error is None and ip.user_ns["y"] == 12
        restart()
        run("import awaitly_probe_settings as settings\nsettings.SCALE = 2")
        assert any("restored" in n for n in run(cell).notes)
        restart()
        run("import awaitly_probe_settings as settings\nsettings.SCALE = 3")
        again = run(cell)
        assert marks.count() == 2 and ip.user_ns["y"] == 18
        assert any("settings.SCALE changed (2 → 3)" in n for n in again.notes), again.notes
    finally:
        sys.path.remove(str(here))
        sys.modules.pop("awaitly_probe_settings", None)


def test_a_global_of_a_module_that_a_step_sets_is_set_again_by_its_replay(
    ip: Any, run: Any, marks: Any, restart: Any, here: Path
) -> None:
    (here / "awaitly_probe_knobs.py").write_text("SCALE = 1\n")
    sys.path.insert(0, str(here))
    cell = "%%step key=setup\nmark()\nknobs.SCALE = 5\nknobs.NAME = 'five'"
    try:
        run("import awaitly_probe_knobs as knobs")
        assert run(cell).error is None
        restart()
        sys.modules.pop("awaitly_probe_knobs")  # a new kernel imports it afresh
        run("import awaitly_probe_knobs as knobs")
        assert ip.user_ns["knobs"].SCALE == 1
        ran = run(cell)
        assert marks.count() == 1 and any("restored" in n for n in ran.notes)
        assert (ip.user_ns["knobs"].SCALE, ip.user_ns["knobs"].NAME) == (5, "five")
    finally:
        sys.path.remove(str(here))
        sys.modules.pop("awaitly_probe_knobs", None)


def test_a_file_added_to_a_folder_the_step_globbed_makes_it_run_again(
    ip: Any, run: Any, marks: Any, restart: Any, here: Path
) -> None:
    (here / "data").mkdir()
    for name, rows in (("a.csv", "1\n2\n"), ("b.csv", "3\n")):
        (here / "data" / name).write_text(rows)
    cell = (
        "%%step key=rows\nmark()\nimport glob\n"
        "n = sum(len(open(p).read().split()) for p in glob.glob(f'{folder}/*.csv'))\nprint(n)"
    )
    ip.user_ns["folder"] = "data"  # the folder's name is not in the step's code
    run(cell)
    restart()
    ip.user_ns["folder"] = "data"
    assert any("restored" in n for n in run(cell).notes) and marks.count() == 1
    restart()
    ip.user_ns["folder"] = "data"
    (here / "data" / "c.csv").write_text("4\n5\n")
    ran = run(cell)
    assert ip.user_ns["n"] == 5 and marks.count() == 2
    assert any("data/ has other files: c.csv added" in n for n in ran.notes), ran.notes


def test_folders_listed_by_os_walk_and_pathlib_are_inputs_and_imports_list_none(
    here: Path,
) -> None:
    (here / "data" / "sub").mkdir(parents=True)
    (here / "fresh_module_for_listing.py").write_text("X = 1\n")
    sys.path.insert(0, str(here))
    try:
        with ReadRecorder() as recorder:
            import fresh_module_for_listing  # noqa: F401 - the import system lists sys.path

            list(Path("data").glob("*.csv"))
            list(os.walk("data/sub"))
    finally:
        sys.path.remove(str(here))
        sys.modules.pop("fresh_module_for_listing", None)
    listed = {k: v for k, v in recorder.files().items() if k.endswith(os.sep)}
    assert set(listed) == {str(here / "data") + os.sep, str(here / "data" / "sub") + os.sep}
    assert (
        FileProbe().change(str(here / "data") + os.sep, listed[str(here / "data") + os.sep]) is None
    )
    (here / "data" / "sub" / "x.csv").write_text("1")
    (here / "data" / "old.txt").write_text("1")
    assert FileProbe().change(str(here / "data") + os.sep, listed[str(here / "data") + os.sep]) == (
        "data/ has other files: old.txt added"
    )


def _parquet(path: Path, rows: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": list(range(rows))}), path)


def test_a_file_named_by_a_variable_and_read_by_arrow_is_an_input(
    ip: Any, run: Any, marks: Any, restart: Any, here: Path
) -> None:
    _parquet(here / "sales.parquet", 3)
    params = "DATA = 'sales.parquet'"
    cell = (
        "%%step key=load\nmark()\nimport pyarrow.parquet as pq\nrows = pq.read_table(DATA).num_rows"
    )
    run(params)
    run(cell)
    restart()
    run(params)
    assert any("restored" in n for n in run(cell).notes) and marks.count() == 1
    restart()
    _parquet(here / "sales.parquet", 5)  # Arrow reads it in C++: Python never sees it opened
    run(params)
    ran = run(cell)
    assert ip.user_ns["rows"] == 5 and marks.count() == 2
    assert any("sales.parquet changed" in n for n in ran.notes), ran.notes


def test_a_file_named_in_a_called_function_or_its_argument_is_an_input(
    ip: Any, run: Any, marks: Any, restart: Any, here: Path
) -> None:
    _parquet(here / "a.parquet", 2)
    _parquet(here / "b.parquet", 2)
    cells = (
        "import pyarrow.parquet as pq\nfrom awaitly_nb import step\n"
        "a = step(lambda: (mark(), pq.read_table('a.parquet').num_rows)[1], key='a')\n"
        "b = step(lambda p: (mark(), pq.read_table(p).num_rows)[1], 'b.parquet', key='b')"
    )
    run(cells)
    restart()
    run(cells)
    assert marks.count() == 2
    restart()
    _parquet(here / "a.parquet", 4)
    _parquet(here / "b.parquet", 6)
    run(cells)
    assert (ip.user_ns["a"], ip.user_ns["b"], marks.count()) == (4, 6, 4)


def test_a_value_no_digest_describes_is_an_input_by_the_plain_cell_that_made_it(
    ip: Any, run: Any, marks: Any, restart: Any, here: Path
) -> None:
    import numpy as np

    np.savez(here / "a.npz", a=np.arange(3))
    make = (
        "import numpy as np\nz = np.load('a.npz')\n"
        "@np.errstate(all='ignore')\ndef f(x):\n    return x * {}"
    )
    step = "%%step key=use\nmark()\nout = (z['a'].tolist(), f(3))"
    run(make.format(2))
    run(step)
    assert ip.user_ns["out"] == ([0, 1, 2], 6)
    restart()
    run(make.format(2))
    ran = run(step)
    assert marks.count() == 1, ran.notes  # the same cell made them: replayed

    restart()
    run(make.format(3))  # the cell that makes f was edited
    ran = run(step)
    assert ip.user_ns["out"] == ([0, 1, 2], 9) and marks.count() == 2
    assert any("made again by a cell that changed" in n for n in ran.notes), ran.notes

    restart()
    np.savez(here / "a.npz", a=np.arange(3) * 10)  # the file the lazy reader reads
    run(make.format(3))
    run(step)
    assert ip.user_ns["out"] == ([0, 10, 20], 9) and marks.count() == 3


def test_a_watched_plain_cell_keeps_only_so_many_paths_and_counts_the_rest(here: Path) -> None:
    for name in ("a.txt", "b.txt", "c.txt"):
        (here / name).write_text(name)
    recorder = ReadRecorder(limit=2).watch()
    try:
        for name in ("a.txt", "b.txt", "c.txt"):
            open(name).close()
    finally:
        recorder.unwatch()
    assert len(recorder.paths) == 2 and recorder.more == 1
    assert recorder.file_states() == [("(files read)", 3, 0, 0, 0)]


def test_a_file_a_shell_command_reads_is_an_input(
    ip: Any, run: Any, marks: Any, restart: Any, here: Path
) -> None:
    data = here / "data.txt"
    data.write_text("one\ntwo\n")
    cell = "%%step key=s\nmark()\nlines = !cat data.txt"
    assert run(cell).error is None
    restart()
    before = data.stat()
    data.write_text("uno\ndos\n")  # the same size, its old time put back
    os.utime(data, ns=(before.st_atime_ns, before.st_mtime_ns))
    ran = run(cell)
    assert list(ip.user_ns["lines"]) == ["uno", "dos"] and marks.count() == 2
    assert any("data.txt changed" in n for n in ran.notes), ran.notes


def test_which_copy_of_a_module_a_step_imports_is_an_input(
    ip: Any, run: Any, marks: Any, restart: Any, here: Path
) -> None:
    for folder, add in (("libA", 1), ("libB", 100)):
        (here / folder).mkdir()
        (here / folder / "awaitly_test_mod.py").write_text(f"def f(x):\n    return x + {add}\n")
    cell = "%%step key=s\nmark()\nimport awaitly_test_mod\nr = awaitly_test_mod.f(1)"
    try:
        for folder in ("libA", "libB"):  # a cell puts another copy first on sys.path
            restart()
            sys.modules.pop("awaitly_test_mod", None)
            sys.path[:] = [p for p in sys.path if not p.endswith(("libA", "libB"))]
            assert run(f"import sys\nsys.path.insert(0, {str(here / folder)!r})").error is None
            ran = run(cell)
        assert ip.user_ns["r"] == 101 and marks.count() == 2
        assert any("import awaitly_test_mod changed" in n for n in ran.notes), ran.notes
    finally:
        sys.modules.pop("awaitly_test_mod", None)
        sys.path[:] = [p for p in sys.path if not p.endswith(("libA", "libB"))]


def test_a_variable_a_shell_command_expands_is_an_input(
    ip: Any, run: Any, marks: Any, restart: Any, here: Path
) -> None:
    (here / "a.txt").write_text("one\n")
    (here / "b.txt").write_text("two\n")
    cell = "%%step key=s\nmark()\nlines = !cat {path}"
    assert run("path = 'a.txt'").error is None and run(cell).error is None
    restart()
    assert run("path = 'b.txt'").error is None
    again = run(cell)
    assert list(ip.user_ns["lines"]) == ["two"] and marks.count() == 2, again.notes


def test_a_step_importing_your_package_depends_on_all_its_modules(
    ip: Any, run: Any, marks: Any, restart: Any, here: Path
) -> None:
    pkg = here / "awaitly_test_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from .core import f\n")
    (pkg / "core.py").write_text("from .util import g\ndef f(x):\n    return g(x) + 1\n")
    (pkg / "util.py").write_text("def g(x):\n    return x * 2\n")
    cell = "%%step key=q\nmark()\nimport awaitly_test_pkg.core as core\nr = core.f(10)"
    sys.path.insert(0, str(here))
    try:
        assert run("import awaitly_test_pkg").error is None and run(cell).error is None
        restart()
        for name in [m for m in sys.modules if m.startswith("awaitly_test_pkg")]:
            del sys.modules[name]
        (pkg / "util.py").write_text("def g(x):\n    return x * 3\n")  # only util.py changes
        later = (pkg / "util.py").stat().st_mtime + 5  # past Python's cached bytecode's time
        os.utime(pkg / "util.py", (later, later))
        assert run("import awaitly_test_pkg").error is None
        again = run(cell)
        assert ip.user_ns["r"] == 31 and marks.count() == 2, again.notes
    finally:
        sys.path.remove(str(here))
        for name in [m for m in sys.modules if m.startswith("awaitly_test_pkg")]:
            del sys.modules[name]
