"""Configuration and the session behind the notebook forms: gc of the current store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import awaitly_nb
from awaitly_nb.config import (
    default_directory,
    default_workflow,
    get_session,
    open_store,
    store_url,
)
from awaitly_nb.storage.local import LocalStore
from awaitly_nb.storage.shared import SharedStore


def test_gc_removes_the_blobs_of_forgotten_steps_only(tmp_path: Path) -> None:
    awaitly_nb.configure(dir=tmp_path / "store", workflow="gc")
    try:
        keep = awaitly_nb.step(lambda: np.arange(100_000.0), key="keep")
        awaitly_nb.step(lambda: np.ones(100_000), key="drop")
        blobs = tmp_path / "store" / "blobs"
        assert len([p for p in blobs.rglob("*") if p.is_file()]) == 2

        assert get_session().engine.forget("drop")
        report = awaitly_nb.gc(min_age=0)

        assert report.blobs == 1 and report.bytes == 800_000
        assert len([p for p in blobs.rglob("*") if p.is_file()]) == 1
        again = awaitly_nb.step(lambda: np.zeros(1), key="keep", pin=True)  # still restorable
        np.testing.assert_array_equal(again, keep)
        assert awaitly_nb.gc(min_age=0).blobs == 0
    finally:
        awaitly_nb.configure(dir=None, workflow=None)


def test_the_workflow_is_the_notebooks_name_when_the_front_end_tells_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)
    assert default_workflow({}) == "default"  # a kernel: its launcher is not a name
    assert default_workflow({"__vsc_ipynb_file__": "/home/a/vs.ipynb"}) == "vs.ipynb"
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/a/lab.ipynb")
    assert default_workflow({}) == "lab.ipynb"
    assert default_workflow({"__vsc_ipynb_file__": "/home/a/vs.ipynb"}) == "vs.ipynb"


def test_open_store_is_local_for_a_folder_and_shared_for_a_url(tmp_path: Path) -> None:
    local = open_store(tmp_path / "here")
    shared = open_store(tmp_path / "cache", "memory://awaitly-config-test", key=b"team")
    try:
        assert isinstance(local, LocalStore) and isinstance(shared, SharedStore)
        assert shared.blobs.directory == tmp_path / "cache" / "shared-cache" / "blobs"
    finally:
        local.close()
    with pytest.raises(ValueError, match="a shared store is a URL"):
        open_store(tmp_path, "not-a-url")


def test_the_environment_chooses_the_directory_and_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AWAITLY_NB_DIR", raising=False)
    monkeypatch.delenv("AWAITLY_NB_STORE", raising=False)
    assert default_directory() == tmp_path / ".awaitly"
    assert store_url() is None
    monkeypatch.setenv("AWAITLY_NB_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("AWAITLY_NB_STORE", "redis://127.0.0.1:1/0")
    assert default_directory() == tmp_path / "elsewhere"
    assert store_url() == "redis://127.0.0.1:1/0"
