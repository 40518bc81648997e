"""``step_cache()``: a workflow and a notebook's steps share one store and one event stream."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import awaitly_nb
from awaitly_nb import create_step_collector, create_workflow, step, step_cache
from awaitly_nb.config import get_session
from awaitly_nb.core.events import Event


@pytest.fixture
def session(tmp_path: Path) -> Iterator[list[Event]]:
    """The notebook session on a fresh store; yields the events its listeners get."""
    awaitly_nb.configure(dir=tmp_path / "store", workflow="analysis.ipynb")
    seen: list[Event] = []
    engine = get_session().engine
    engine.listeners.append(seen.append)
    yield seen
    engine.listeners.remove(seen.append)
    awaitly_nb.configure(dir=None, workflow=None)


def test_a_workflows_steps_are_saved_in_the_notebook_store_and_restored_there(
    session: list[Event],
) -> None:
    calls: list[int] = []

    async def fetch_user(uid: int) -> dict[str, int]:
        calls.append(uid)
        await asyncio.sleep(0)
        return {"id": uid}

    async def body(s: Any) -> list[Any]:
        return [await s(lambda u=u: fetch_user(u), key=f"user:{u}") for u in range(3)]

    collector = create_step_collector()
    workflow = create_workflow(cache=step_cache(), on_event=collector.handle_event)
    assert asyncio.run(workflow(body)) == [{"id": 0}, {"id": 1}, {"id": 2}]
    assert calls == [0, 1, 2]
    saved = {m.key: m for m in get_session().engine.steps()}
    assert sorted(saved) == ["user:0", "user:1", "user:2"]
    assert {m.kind for m in saved.values()} == {"call"}
    # The session's listeners (the widget) saw them complete.
    assert [e.step_key for e in session if e.type == "step_complete"] == list(saved)

    # A later run of the workflow (a restarted script) restores every step.
    again = create_workflow(cache=step_cache(), on_event=collector.handle_event)
    assert asyncio.run(again(body)) == [{"id": 0}, {"id": 1}, {"id": 2}]
    assert calls == [0, 1, 2]

    # The notebook takes them by key.
    async def notebook() -> Any:
        return await step.map(fetch_user, range(3), key="user:{}", pin=True)

    assert asyncio.run(notebook()) == [{"id": 0}, {"id": 1}, {"id": 2}]
    assert calls == [0, 1, 2]


def test_a_workflow_restores_what_a_notebooks_call_saved(session: list[Event]) -> None:
    assert step(lambda: "from the notebook", key="report") == "from the notebook"
    workflow = create_workflow(cache=step_cache())
    assert workflow(lambda s: s(lambda: pytest.fail("saved"), key="report")) == (
        "from the notebook"
    )


def test_has_delete_and_clear_touch_only_call_steps(session: list[Event]) -> None:
    cache = step_cache()
    cache.set("a", 1)
    cache.set("b", 2)
    assert cache.has("a") and cache.get("a") is not None and not cache.has("zzz")
    script: dict[str, Any] = {"step": step}  # a block step in the same workflow
    exec("with step('cell-like'):\n    kept = 3", script)
    assert cache.delete("a") and not cache.has("a") and not cache.delete("a")
    assert not cache.has("cell-like") and not cache.delete("cell-like")
    cache.clear()
    assert [m.key for m in get_session().engine.steps()] == ["cell-like"]
    assert script["kept"] == 3
