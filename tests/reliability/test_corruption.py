"""Damaged stores: recoverable damage warns, the step runs again, the process lives on.

Guarantees (STYLE.md 5, DESIGN.md "Storage"): *recoverable cache damage warns
and recomputes; it never kills the kernel*, and ``verify()`` finds every
damaged entry. Proven for each kind of damage:

- a blob with a flipped byte (below ``values.VERIFY_LIMIT``, so loads check
  its hash), a truncated blob, a deleted blob; each for a buffer blob (numpy
  data out of band) and for a pickle-stream blob (a long stream);
- a blob above ``VERIFY_LIMIT`` with a flipped byte: only ``verify()`` (and
  ``awaitly-nb verify``) reads it all, and it does report it;
- an index whose file was overwritten at its start: it is moved aside with a
  :class:`CacheWarning` and a new one is started;
- an index record that is not a step record, or whose bytes are damaged.

through four doors: ``StepStore.load`` (a :class:`StateFormatError`), the
notebook call form ``awaitly_nb.step(fn, key=...)``, a ``%%step`` cell in an
in-process IPython shell, and ``create_file_cache`` + ``create_workflow``.
Each time a :class:`CacheWarning` names the step (or the damaged index),
the step's code runs again (counted), the fresh value is saved and the next
run restores it without running.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import sqlite3
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import faults
import numpy as np
import pytest
from awaitly_testing import close_session_stores, flip_byte
from click.testing import CliRunner

import awaitly_nb
from awaitly_nb import CacheWarning, StateFormatError
from awaitly_nb.cli import main as cli
from awaitly_nb.config import get_session
from awaitly_nb.storage import values
from awaitly_nb.storage.local import LocalStore
from awaitly_nb.storage.manifest import ValueRecord

WF = faults.WF

# --- helpers ----------------------------------------------------------------------------------


def value_for(kind: str, seed: int) -> Any:
    """A value that needs a blob: an out-of-band buffer, or a long pickle stream."""
    if kind == "buffer":
        return np.arange(50_000, dtype=np.float64) * seed  # 400 KB, read (not mapped) on load
    return [f"row {i} of {seed}" for i in range(3_000)]  # a ~50 KB pickle stream


def equal(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return bool(np.array_equal(a, b))
    return bool(a == b)


def step_blobs(store: LocalStore, workflow: str, key: str) -> list[Path]:
    entry = store.entry(workflow, key)
    assert entry is not None, f"{key} is not saved"
    paths = [store.blobs.path(ref.name) for ref in entry.record.blobs()]
    assert paths, f"{key} has no blob"
    return paths


def damage_blob(path: Path, how: str) -> None:
    if how == "flipped":
        flip_byte(path)
    elif how == "truncated":
        os.truncate(path, os.path.getsize(path) // 2)
    else:
        path.unlink()


def damage_index_file(directory: Path) -> None:
    """Overwrite the start of a closed diskcache's database (its header and first page)."""
    db = directory / "cache.db"
    with open(db, "r+b") as f:
        f.write(b"\xa5" * 4096)


def set_raw_record(index_dir: Path, raw: bytes) -> None:
    """Replace the stored bytes of every record of a closed diskcache with ``raw``."""
    with sqlite3.connect(str(index_dir / "cache.db")) as con:
        con.execute("UPDATE Cache SET value = ?, mode = 4 WHERE filename IS NULL", (raw,))
    con.close()


@contextlib.contextmanager
def cache_warning(match: str) -> Iterator[None]:
    """Like ``pytest.warns(CacheWarning, match=...)``, but lets another exception through
    unchanged (``pytest.warns`` turns it into "DID NOT WARN"), as ``xfail(raises=...)`` needs."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    messages = [str(w.message) for w in caught if issubclass(w.category, CacheWarning)]
    assert any(re.search(match, m) for m in messages), messages


class Counter:
    """Counts how often a step's code ran; ``mark()`` in a cell, ``counted(fn)`` in Python."""

    def __init__(self) -> None:
        self.runs = 0

    def __call__(self) -> None:
        self.runs += 1

    def __reduce__(self) -> Any:
        # The same for every count: a counter kept outside the notebook's state is not
        # an input whose change should make the steps it counts run again.
        return (Counter, ())

    def counted(self, value: Any) -> Callable[[], Any]:
        def compute() -> Any:
            self.runs += 1
            return value

        return compute


# The shared fixtures, by name, so pytest finds them in this module.
session = faults.session
nb = faults.shell  # the shell on the session's store


def forget_variables(shell: Any, *names: str) -> None:
    for name in names:
        shell.user_ns.pop(name, None)


def cell(kind: str, seed: int) -> str:
    body = (
        f"x = np.arange(50_000, dtype=np.float64) * {seed}"
        if kind == "buffer"
        else f"x = [f'row {{i}} of {seed}' for i in range(3_000)]"
    )
    return f"%%step key=damaged\nmark()\n{body}"


KINDS = ["buffer", "stream"]
DAMAGES = ["flipped", "truncated", "deleted"]

# --- blob damage ------------------------------------------------------------------------------


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("kind", KINDS)
def test_store_load_raises_state_format_error_and_verify_names_the_step(
    tmp_path: Path, kind: str, how: str
) -> None:
    store = LocalStore(tmp_path / "store")
    store.save(WF, "damaged", {}, value_for(kind, 3))
    store.save(WF, "intact", {}, value_for(kind, 4))
    for path in step_blobs(store, WF, "damaged"):
        damage_blob(path, how)

    with pytest.raises(StateFormatError, match=r"blob|stream"):
        store.load(WF, "damaged")
    assert equal(store.load(WF, "intact"), value_for(kind, 4))
    problems = store.verify()
    assert len(problems) == 1 and problems[0].startswith(f"{WF} / damaged: ")

    store.save(WF, "damaged", {}, value_for(kind, 3))  # the recomputed value repairs it
    assert equal(store.load(WF, "damaged"), value_for(kind, 3))
    store.gc(min_age=0)
    assert store.verify() == []


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("kind", KINDS)
def test_call_form_warns_and_runs_again(session: Path, kind: str, how: str) -> None:
    counter = Counter()
    assert equal(
        awaitly_nb.step(counter.counted(value_for(kind, 5)), key="damaged"), value_for(kind, 5)
    )
    for path in step_blobs(get_session().store, WF, "damaged"):
        damage_blob(path, how)

    with pytest.warns(CacheWarning, match="'damaged'"):
        again = awaitly_nb.step(counter.counted(value_for(kind, 5)), key="damaged")
    assert equal(again, value_for(kind, 5))
    assert counter.runs == 2

    restored = awaitly_nb.step(counter.counted(value_for(kind, 5)), key="damaged")
    assert equal(restored, value_for(kind, 5))
    assert counter.runs == 2  # the recomputed value was saved
    get_session().store.gc(min_age=0)
    assert get_session().store.verify() == []


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("kind", KINDS)
def test_step_cell_warns_and_runs_again(nb: Any, kind: str, how: str) -> None:
    counter = Counter()
    nb.user_ns.update(mark=counter, np=np)
    assert nb.run_cell(cell(kind, 6)).success
    for path in step_blobs(get_session().store, WF, "damaged"):
        damage_blob(path, how)
    forget_variables(nb, "x")

    with pytest.warns(CacheWarning, match="'damaged'"):
        result = nb.run_cell(cell(kind, 6))
    assert result.success, result.error_in_exec
    assert counter.runs == 2
    assert equal(nb.user_ns["x"], value_for(kind, 6))

    forget_variables(nb, "x")
    assert nb.run_cell(cell(kind, 6)).success
    assert counter.runs == 2
    assert equal(nb.user_ns["x"], value_for(kind, 6))


@pytest.mark.parametrize("how", DAMAGES)
@pytest.mark.parametrize("kind", KINDS)
def test_file_cache_workflow_warns_and_runs_again(tmp_path: Path, kind: str, how: str) -> None:
    counter = Counter()
    cache = awaitly_nb.create_file_cache(tmp_path / "cache")

    def body(step: Any) -> Any:
        return step(counter.counted(value_for(kind, 7)), key="damaged")

    assert equal(awaitly_nb.create_workflow(cache=cache)(body), value_for(kind, 7))
    record = cache._cache.get("damaged")
    for ref in ValueRecord.from_dict(record).blobs():
        damage_blob(cache._blobs.path(ref.name), how)

    with pytest.warns(CacheWarning, match="'damaged'"):
        assert equal(awaitly_nb.create_workflow(cache=cache)(body), value_for(kind, 7))
    assert counter.runs == 2
    assert equal(awaitly_nb.create_workflow(cache=cache)(body), value_for(kind, 7))
    assert counter.runs == 2
    cache.close()


def test_a_mapped_blob_flipped_below_the_limit_is_caught_on_load(session: Path) -> None:
    """Blobs of 1 MB and more are memory-mapped; their hash is still checked on load."""
    counter = Counter()
    big = np.arange(3_000_000, dtype=np.float64)  # 24 MB, below VERIFY_LIMIT
    assert big.nbytes < values.VERIFY_LIMIT and big.nbytes >= values.MAP_MIN
    awaitly_nb.step(counter.counted(big), key="mapped")
    for path in step_blobs(get_session().store, WF, "mapped"):
        flip_byte(path)
    with pytest.warns(CacheWarning, match="'mapped'"):
        again = awaitly_nb.step(counter.counted(big), key="mapped")
    assert counter.runs == 2
    assert np.array_equal(again, big)


def test_a_flipped_byte_above_the_load_limit_is_found_by_verify(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    store = LocalStore(directory)
    huge = np.ones(values.VERIFY_LIMIT // 8 + 1_000_000)  # 72 MB: loads check sizes only
    assert huge.nbytes > values.VERIFY_LIMIT
    store.save(WF, "huge", {}, huge)
    store.save(WF, "small", {}, value_for("buffer", 1))
    del huge
    assert store.verify() == []
    for path in step_blobs(store, WF, "huge"):
        flip_byte(path)

    problems = store.verify()
    assert len(problems) == 1
    assert problems[0].startswith(f"{WF} / huge: ") and "damaged" in problems[0]
    store.close()

    ran = CliRunner().invoke(cli, ["--dir", str(directory), "verify"])
    assert ran.exit_code == 1, ran.output
    assert "huge" in ran.output and "1 problem" in ran.output


# --- index damage -----------------------------------------------------------------------------


def test_a_damaged_index_file_is_moved_aside_and_replaced(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    store = LocalStore(directory)
    store.save(WF, "k", {}, value_for("buffer", 8))
    store.close()
    damage_index_file(directory / "index")

    store = LocalStore(directory)  # opens the index at the first look
    with pytest.warns(CacheWarning, match="index .* is damaged"):
        assert store.entry(WF, "k") is None  # the step runs again
    assert [p.name for p in directory.glob("index/cache.db.damaged-*")]  # kept for inspection
    store.save(WF, "k", {}, value_for("buffer", 9))
    assert np.array_equal(store.load(WF, "k"), value_for("buffer", 9))
    assert store.verify() == ["1 blob(s) no step refers to (run gc)"]  # the lost step's blob
    store.gc(min_age=0)
    assert store.verify() == []
    store.close()


def test_call_form_survives_a_damaged_index_file(session: Path) -> None:
    counter = Counter()
    awaitly_nb.step(counter.counted("first"), key="k")
    close_session_stores()  # a kernel restart: reopened on next use
    damage_index_file(session / "index")

    with pytest.warns(CacheWarning, match="index .* is damaged"):
        assert awaitly_nb.step(counter.counted("second"), key="k") == "second"
    assert counter.runs == 2
    assert awaitly_nb.step(counter.counted("third"), key="k") == "second"
    assert counter.runs == 2


def test_step_cell_survives_a_damaged_index_file(nb: Any, session: Path) -> None:
    counter = Counter()
    nb.user_ns.update(mark=counter, np=np)
    assert nb.run_cell(cell("buffer", 2)).success
    close_session_stores()  # a kernel restart: reopened on next use
    forget_variables(nb, "x")
    damage_index_file(session / "index")

    with pytest.warns(CacheWarning, match="index .* is damaged"):
        result = nb.run_cell(cell("buffer", 2))
    assert result.success, result.error_in_exec
    assert counter.runs == 2
    assert np.array_equal(nb.user_ns["x"], value_for("buffer", 2))
    forget_variables(nb, "x")
    assert nb.run_cell(cell("buffer", 2)).success
    assert counter.runs == 2


def test_file_cache_survives_a_damaged_index_file(tmp_path: Path) -> None:
    counter = Counter()
    cache = awaitly_nb.create_file_cache(tmp_path / "cache")
    awaitly_nb.create_workflow(cache=cache)(lambda step: step(counter.counted(1), key="k"))
    cache.close()
    damage_index_file(tmp_path / "cache")

    with cache_warning("damaged"):
        cache = awaitly_nb.create_file_cache(tmp_path / "cache")
    workflow = awaitly_nb.create_workflow(cache=cache)
    assert workflow(lambda step: step(counter.counted(2), key="k")) == 2
    assert counter.runs == 2


def test_an_index_record_that_is_not_a_step_record_is_a_miss(session: Path) -> None:
    counter = Counter()
    awaitly_nb.step(counter.counted("first"), key="k")
    close_session_stores()  # a kernel restart: reopened on next use
    set_raw_record(session / "index", pickle.dumps("not a step record", protocol=5))

    assert awaitly_nb.step(counter.counted("second"), key="k") == "second"
    assert counter.runs == 2
    assert awaitly_nb.step(counter.counted("third"), key="k") == "second"
    store = get_session().store
    store.gc(min_age=0)
    assert store.verify() == []


def test_call_form_survives_a_damaged_index_record(session: Path) -> None:
    counter = Counter()
    awaitly_nb.step(counter.counted("first"), key="k")
    close_session_stores()  # a kernel restart: reopened on next use
    set_raw_record(session / "index", b"garbage, not a pickle")

    with cache_warning("'k'"):
        assert awaitly_nb.step(counter.counted("second"), key="k") == "second"
    assert counter.runs == 2


def test_verify_and_gc_report_a_damaged_index_record(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    store.save(WF, "k", {}, value_for("buffer", 1))
    store.close()
    set_raw_record(tmp_path / "store" / "index", b"garbage, not a pickle")
    store = LocalStore(tmp_path / "store")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CacheWarning)  # verify's report is what counts here
        problems = store.verify()
        assert any(p.startswith(f"{WF} / k: ") and "damaged" in p for p in problems), problems
        store.gc(min_age=0)  # the blob only the damaged record needed goes
        assert list(store.blobs.names()) == []
        ran = CliRunner().invoke(cli, ["--dir", str(tmp_path / "store"), "verify"])
    assert ran.exit_code == 1 and "k" in ran.output, ran.output
    store.close()


def test_file_cache_workflow_survives_a_damaged_record(tmp_path: Path) -> None:
    counter = Counter()
    cache = awaitly_nb.create_file_cache(tmp_path / "cache")
    awaitly_nb.create_workflow(cache=cache)(lambda step: step(counter.counted(1), key="k"))
    cache.close()
    set_raw_record(tmp_path / "cache", b"garbage, not a pickle")

    with cache_warning("'k'"):
        result = awaitly_nb.create_workflow(cache=cache)(
            lambda step: step(counter.counted(2), key="k")
        )
    assert result == 2
