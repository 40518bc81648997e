"""Fault-injection helpers and notebook-session fixtures shared by the reliability tests."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from awaitly_testing import close_session_stores, ipython_shell

import awaitly_nb
from awaitly_nb.storage import blobs as blobs_module
from awaitly_nb.storage.local import LocalStore

WF = "wf"
PART = 100_000  # float64: 800 KB per buffer blob


def value(fill: float) -> dict[str, Any]:
    """A value with two buffer blobs and a ~60 KB pickle stream (a third blob)."""
    return {
        "a": np.full(PART, fill),
        "b": np.full(PART, fill + 0.5),
        "rows": [f"{fill} row {i}" for i in range(4_000)],
    }


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return (
        np.array_equal(a["a"], b["a"]) and np.array_equal(a["b"], b["b"]) and a["rows"] == b["rows"]
    )


def temporaries(directory: Path) -> list[Path]:
    tmp = directory / "blobs" / "tmp"
    return sorted(tmp.iterdir()) if tmp.exists() else []


def is_blob_temp(fd: int) -> bool:
    try:
        return f"{os.sep}blobs{os.sep}tmp{os.sep}" in os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return False


# Where a blob write fails: after this many bytes of a value's blob data (``value()``).
WRITE_MOMENTS = {"first-byte": 0, "half-way": PART * 8 // 2, "second-blob": PART * 8 + 1000}


def write_failing_after(
    limit: int, error: BaseException | type[BaseException]
) -> Callable[[int, Any], int]:
    """An ``os.write`` that writes ``limit`` bytes of blob data (short writes), then raises
    ``error`` (``ENOSPC``: a full disk; ``KeyboardInterrupt``: Ctrl-C). Other files are untouched.
    """
    real = os.write
    written = 0

    def write(fd: int, data: Any) -> int:
        nonlocal written
        if not is_blob_temp(fd):
            return real(fd, data)
        room = limit - written
        if room <= 0:
            raise error
        count = real(fd, memoryview(data)[:room])
        written += count
        return count

    return write


def fail_blob_writes(
    monkeypatch: pytest.MonkeyPatch, moment: str, error: BaseException | type[BaseException]
) -> None:
    """Blob writes raise ``error`` at ``WRITE_MOMENTS[moment]``."""
    monkeypatch.setattr(blobs_module.os, "write", write_failing_after(WRITE_MOMENTS[moment], error))


def fail_index_writes(
    monkeypatch: pytest.MonkeyPatch, index: Any, error: BaseException | type[BaseException]
) -> None:
    """Writing the index record (``index.set``) raises ``error``."""

    def set_(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(index, "set", set_)


def clean_after_gc(store: LocalStore) -> None:
    assert temporaries(store.directory) == []
    store.gc(min_age=0)
    assert store.verify() == []
    assert set(store.blobs.names()) == store.referenced_blobs()


@pytest.fixture
def session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The notebook session on a fresh store in ``tmp_path/store``; returns the store dir."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AWAITLY_NB_DIR", raising=False)
    monkeypatch.delenv("AWAITLY_NB_STORE", raising=False)
    awaitly_nb.configure(dir=tmp_path / "store", workflow=WF)
    try:
        yield tmp_path / "store"
    finally:
        close_session_stores()
        awaitly_nb.configure(dir=None, workflow=None)


@pytest.fixture
def shell(session: Path) -> Iterator[Any]:
    """The IPython shell on the session's store; variables the test creates are removed after."""
    found = ipython_shell()
    baseline = set(found.user_ns)
    try:
        yield found
    finally:
        for name in set(found.user_ns) - baseline:
            del found.user_ns[name]
