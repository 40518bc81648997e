"""Disk full: a refused write keeps the previous entry and says so clearly.

Guarantee (DESIGN.md "Storage", ``StepStore.save``'s contract): when the disk
refuses a write (``ENOSPC`` from ``os.write`` while a blob is written, at the
first byte, half-way through, or on the second blob of a value; ``ENOSPC``
when the temporary file is created; the index's sqlite answering "database or
disk is full"):

- ``StepStore.save`` and ``FileCache.set`` raise :class:`StorageError` naming
  the cause; the notebook forms (``awaitly_nb.step(fn, key=...)``, ``%%step``)
  warn with a :class:`CacheWarning` "... could not be saved" and carry on with
  the computed value; ``create_workflow`` warns that the value "cannot be
  saved" and does not record the step as complete;
- the previous entry under the key is intact and loads, byte for byte;
- no temporary file is left in ``blobs/tmp``, and after ``gc(min_age=0)``
  ``verify()`` reports the store clean; the store works again once there is
  space.

The last test does it for real: a child process whose file size limit
(``RLIMIT_FSIZE``) makes the kernel refuse a blob write.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faults
import numpy as np
import pytest
from faults import (
    WF,
    WRITE_MOMENTS,
    clean_after_gc,
    fail_blob_writes,
    fail_index_writes,
    same,
    temporaries,
    value,
)

import awaitly_nb
from awaitly_nb import CacheWarning, StorageError
from awaitly_nb.config import get_session
from awaitly_nb.storage.local import LocalStore

# The shared fixtures, by name, so pytest finds them in this module.
session = faults.session
shell = faults.shell


ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def refuse_writes(monkeypatch: pytest.MonkeyPatch, fault: str, error: BaseException) -> None:
    """Make the disk refuse: ``os.write`` in the blob store, or the temp file's creation."""
    if fault == "mkstemp":

        def mkstemp(*args: Any, **kwargs: Any) -> Any:
            raise error

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    else:
        fail_blob_writes(monkeypatch, fault, error)


BLOB_FAULTS = [*WRITE_MOMENTS, "mkstemp"]

# --- StepStore ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", BLOB_FAULTS)
def test_step_store_save_raises_storage_error_and_keeps_the_previous_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    store = LocalStore(tmp_path / "store")
    store.save(WF, "k", {"n": 1}, value(1.0))
    with monkeypatch.context() as patch:
        refuse_writes(patch, fault, ENOSPC)
        with pytest.raises(StorageError, match="No space left on device"):
            store.save(WF, "k", {"n": 2}, value(2.0))

    assert same(store.load(WF, "k"), value(1.0))
    assert store.manifest(WF, "k").extra["n"] == 1
    clean_after_gc(store)
    store.save(WF, "k", {"n": 3}, value(3.0))  # space again: the store works
    assert same(store.load(WF, "k"), value(3.0))
    clean_after_gc(store)


def test_step_store_save_with_a_full_index_raises_storage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path / "store")
    store.save(WF, "k", {"n": 1}, value(1.0))
    with monkeypatch.context() as patch:
        fail_index_writes(patch, store.index, sqlite3.OperationalError("database or disk is full"))
        with pytest.raises(StorageError, match="database or disk is full"):
            store.save(WF, "k", {"n": 2}, value(2.0))

    assert same(store.load(WF, "k"), value(1.0))
    assert store.manifest(WF, "k").extra["n"] == 1
    clean_after_gc(store)  # the blobs written before the refusal are collected
    store.save(WF, "k", {"n": 3}, value(3.0))
    assert same(store.load(WF, "k"), value(3.0))


# --- the notebook call form and %%step ---------------------------------------------------------


def refuse(monkeypatch: pytest.MonkeyPatch, fault: str, error: BaseException) -> None:
    if fault == "index-full":
        fail_index_writes(monkeypatch, get_session().store.index, error)
    else:
        refuse_writes(monkeypatch, fault, error)


FAULTS = [*BLOB_FAULTS, "index-full"]


def error_for(fault: str) -> BaseException:
    return sqlite3.OperationalError("database or disk is full") if fault == "index-full" else ENOSPC


@pytest.mark.parametrize("fault", FAULTS)
def test_call_form_warns_could_not_be_saved_and_keeps_the_previous_entry(
    session: Path, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    runs: list[float] = []

    def compute(fill: float) -> Callable[[], Any]:
        return lambda: runs.append(fill) or value(fill)

    assert same(awaitly_nb.step(compute(1.0), key="k"), value(1.0))
    with monkeypatch.context() as patch:
        refuse(patch, fault, error_for(fault))
        with pytest.warns(CacheWarning, match="'k' ran, but it could not be saved"):
            assert same(awaitly_nb.step(compute(2.0), key="k", force=True), value(2.0))

    assert same(awaitly_nb.step(compute(3.0), key="k", pin=True), value(1.0))
    assert runs == [1.0, 2.0]
    clean_after_gc(get_session().store)


@pytest.mark.parametrize("fault", ["half-way", "index-full"])
def test_step_cell_warns_could_not_be_saved_and_keeps_the_previous_entry(
    shell: Any, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    shell.user_ns["make"] = value
    assert shell.run_cell("%%step key=k\nv = make(1.0)").success
    with monkeypatch.context() as patch:
        refuse(patch, fault, error_for(fault))
        with pytest.warns(CacheWarning, match="'k' ran, but it could not be saved"):
            result = shell.run_cell("%%step key=k --force\nv = make(2.0)")
    assert result.success, result.error_in_exec
    assert same(shell.user_ns["v"], value(2.0))  # the cell ran; its results are in memory

    del shell.user_ns["v"]  # a restart
    assert shell.run_cell("%%step key=k --pin\nv = make(3.0)").success
    assert same(shell.user_ns["v"], value(1.0))
    clean_after_gc(get_session().store)


# --- FileCache and create_workflow -------------------------------------------------------------


@pytest.mark.parametrize("fault", FAULTS)
def test_file_cache_set_raises_storage_error_and_keeps_the_previous_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    cache = awaitly_nb.create_file_cache(tmp_path / "cache")
    cache.set("k", value(1.0))
    with monkeypatch.context() as patch:
        if fault == "index-full":
            fail_index_writes(patch, cache._cache, error_for(fault))
        else:
            refuse_writes(patch, fault, error_for(fault))
        with pytest.raises(StorageError, match=r"No space left on device|database or disk is full"):
            cache.set("k", value(2.0))
    assert same(cache.get("k"), value(1.0))
    assert temporaries(tmp_path / "cache") == []
    cache.close()


@pytest.mark.parametrize("fault", FAULTS)
def test_workflow_warns_and_does_not_record_the_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    cache = awaitly_nb.create_file_cache(tmp_path / "cache")
    collector = awaitly_nb.create_step_collector()
    workflow = awaitly_nb.create_workflow(cache=cache, on_event=collector.handle_event)
    with monkeypatch.context() as patch:
        if fault == "index-full":
            fail_index_writes(patch, cache._cache, error_for(fault))
        else:
            refuse_writes(patch, fault, error_for(fault))
        with pytest.warns(CacheWarning, match="'k' ran but its value cannot be saved"):
            result = workflow(lambda step: step(lambda: value(2.0), key="k"))
    assert same(result, value(2.0))
    assert not cache.has("k")
    assert "k" not in collector.get_state()  # not recorded as complete
    assert temporaries(tmp_path / "cache") == []
    cache.close()


# --- for real: the kernel refuses a write -----------------------------------------------------

FSIZE_CHILD = r"""
import resource, signal, sys
import numpy as np
from awaitly_nb.errors import StorageError
from awaitly_nb.storage.local import LocalStore

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a refused write is then EFBIG, not a signal
store = LocalStore(sys.argv[1])
previous = np.full(100_000, 1.0)  # 800 KB: fits
store.save("wf", "k", {"n": 1}, previous)
resource.setrlimit(resource.RLIMIT_FSIZE, (2 * 1024 * 1024, resource.RLIM_INFINITY))
try:
    store.save("wf", "k", {"n": 2}, np.full(1_000_000, 2.0))  # 8 MB: refused
except StorageError as exc:
    print("refused:", exc)
else:
    sys.exit("the oversized save was not refused")
assert np.array_equal(store.load("wf", "k"), previous)
assert store.manifest("wf", "k").extra["n"] == 1
print("ok")
"""


def test_a_write_the_kernel_refuses_keeps_the_previous_entry(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    ran = subprocess.run(
        [sys.executable, "-c", FSIZE_CHILD, str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert ran.returncode == 0, ran.stderr
    assert "refused: cannot write a blob" in ran.stdout
    assert ran.stdout.strip().endswith("ok")
    store = LocalStore(directory)
    assert np.array_equal(store.load(WF, "k"), np.full(100_000, 1.0))
    clean_after_gc(store)
    store.close()
