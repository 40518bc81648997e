"""A store written by a released awaitly_nb still loads and replays (tests/fixtures/store-v1).

The fixture was written by awaitly_nb 0.1.0 (manifest format 1, value record
format 2) with ``tests/fixtures/make_store_v1.py``; the cells below are the
ones it ran, so today's code must restore them without running anything.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import awaitly_nb
from awaitly_nb.config import get_session
from awaitly_nb.storage.local import LocalStore

FIXTURE = Path(__file__).parent.parent / "fixtures" / "store-v1"
WORKFLOW = "fixture.ipynb"
CELL = (
    "%%step key=cell:1\n"
    "from IPython.display import HTML, display\n"
    "rows = [1, 2, 3]\n"
    "total = sum(rows)\n"
    "print('total is', total)\n"
    "display(HTML('<b>bold</b>'))\n"
    "total * 2\n"
)
BLOCK = (
    "import awaitly_nb\n"
    "with awaitly_nb.step('block:1'):\n"
    "    doubled = [r * 2 for r in rows]\n"
    "    print(doubled)\n"
)


@pytest.fixture
def old_store(tmp_path: Path) -> Path:
    """A copy of the fixture (loading must not change the committed files)."""
    target = tmp_path / "store-v1"
    shutil.copytree(FIXTURE, target)
    return target


def test_the_fixture_holds_the_released_formats(old_store: Path) -> None:
    store = LocalStore(old_store)
    try:
        raw = store.read(WORKFLOW, "cell:1")
        assert raw["manifest"]["format"] == 1 and raw["value"]["format"] == 2
        assert [m.key for m in store.manifests()] == ["cell:1", "block:1", "call:array"]
        assert store.verify() == []
        array = store.load(WORKFLOW, "call:array")["value"]
        np.testing.assert_array_equal(array, np.arange(20_000, dtype=np.float64))
    finally:
        store.close()


def test_cells_saved_by_the_released_format_replay_without_running(
    ip: Any, old_store: Path, transcript: Any, execute_results: list[dict[str, Any]]
) -> None:
    awaitly_nb.configure(dir=old_store, workflow=WORKFLOW)
    with transcript() as shown:
        assert ip.run_cell(CELL, store_history=True).success
        assert ip.run_cell(BLOCK).success
        result = ip.run_cell(
            "import numpy as np\n"
            "array = awaitly_nb.step(lambda: np.arange(20_000, dtype=np.float64), key='call:array')"
        )
    assert result.success, result.error_in_exec or result.error_before_exec
    notes = shown.notes()
    assert len(notes) == 3
    assert notes[0].startswith("[awaitly_nb] restored 'cell:1' (HTML, display, rows, total)")
    # 0.1.0 compared inputs by lineage only: the block and the call run again once,
    # and say why.
    assert notes[1] == (
        "[awaitly_nb] running 'block:1' again: rows was not compared by value when it was saved"
    )
    # The call form is fingerprinted by compiled code: on another Python than the
    # fixture's, its code differs too.
    assert notes[2] in (
        "[awaitly_nb] running 'call:array' again: np was not compared by value when it was saved",
        "[awaitly_nb] running 'call:array' again: code changed",
    )
    events = shown.without_notes()
    assert events[0] == ("stdout", "total is 6\n")
    assert events[1][0] == "display" and events[1][1]["text/html"] == "<b>bold</b>"
    assert ("stdout", "[2, 4, 6]\n") in events
    assert execute_results[-1]["text/plain"] == "12"
    assert ip.user_ns["total"] == 6 and ip.user_ns["doubled"] == [2, 4, 6]
    np.testing.assert_array_equal(ip.user_ns["array"], np.arange(20_000, dtype=np.float64))
    tracker = get_session().engine.tracker
    assert tracker.restores == 1  # the cell; the block and the call read inputs 0.1 did not
    assert {row.key: row.state for row in get_session().engine.status()} == {
        "cell:1": "restored",
        "block:1": "complete",
        "call:array": "complete",
    }
