"""Fault-injection helpers shared by the disk-full and Ctrl-C tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from IPython.testing import globalipapp

import awaitly_nb
from awaitly_nb.core.session import get_session
from awaitly_nb.storage.store import StepStore

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


def clean_after_gc(store: StepStore) -> None:
    assert temporaries(store.directory) == []
    store.gc(min_age=0)
    assert store.verify() == []
    assert set(store.blobs.names()) == store.referenced_blobs()


def close_session_stores() -> None:
    """Close the stores the notebook session opened (as a kernel shutdown would)."""
    session = get_session()
    for store in session._stores.values():
        store.close()
    session._stores.clear()


@pytest.fixture
def session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AWAITLY_NB_DIR", raising=False)
    monkeypatch.delenv("AWAITLY_NB_STORE", raising=False)
    awaitly_nb.configure(dir=tmp_path / "store", workflow=WF)
    yield tmp_path / "store"
    close_session_stores()
    awaitly_nb.configure(dir=None, workflow=None)


@pytest.fixture
def shell(session: Path) -> Iterator[Any]:
    found: Any = globalipapp.start_ipython() or globalipapp.get_ipython()
    if found.find_cell_magic("step") is None:
        if "awaitly_nb" in found.extension_manager.loaded:
            found.extension_manager.unload_extension("awaitly_nb")
        found.run_line_magic("load_ext", "awaitly_nb")
    baseline = set(found.user_ns)
    yield found
    for name in set(found.user_ns) - baseline:
        del found.user_ns[name]
