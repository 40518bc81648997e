"""Configuration and the session behind the notebook forms: gc of the current store."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import awaitly_nb
from awaitly_nb.config import get_session


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
