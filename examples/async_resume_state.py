"""Seed section "Async resume state loading".

``resume_state`` may be an async function: it is awaited at the start of
each run, so the state is loaded lazily (here from the ``workflow_states``
table of ``workflows.db``, through a thread as an async database client
would). Returning ``None`` means "nothing saved yet": every step runs.
"""

from __future__ import annotations

import asyncio
import sqlite3

from awaitly_nb import (
    WorkflowState,
    create_step_collector,
    create_workflow,
    parse_state,
    stringify_state,
)

DB = "workflows.db"
calls: list[str] = []


async def fetch_user(user_id: str) -> dict:
    calls.append(f"fetch_user({user_id!r})")
    await asyncio.sleep(0.01)
    return {"id": user_id, "name": "Ada"}


async def fetch_posts(user_id: str) -> list[dict]:
    calls.append(f"fetch_posts({user_id!r})")
    await asyncio.sleep(0.01)
    return [{"id": 1, "title": "Hello"}]


def query(sql: str, *params: object) -> list[tuple]:
    with sqlite3.connect(DB) as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS workflow_states"
            " (id TEXT PRIMARY KEY, state TEXT NOT NULL, created_at TEXT NOT NULL)"
        )
        rows = db.execute(sql, params).fetchall()
    db.close()
    return rows


async def find_saved_state(workflow_id: str) -> str | None:
    rows = await asyncio.to_thread(
        query, "SELECT state FROM workflow_states WHERE id = ?", workflow_id
    )
    return rows[0][0] if rows else None


async def load_resume_state() -> WorkflowState | None:
    saved = await find_saved_state("wf-123")
    return parse_state(saved) if saved else None


async def load_user_and_posts(step):
    user = await step(lambda: fetch_user("1"), key="user:1")
    posts = await step(lambda: fetch_posts(user["id"]), key=f"posts:{user['id']}")
    return {"user": user, "posts": posts}


async def run_demo() -> None:
    await asyncio.to_thread(query, "DELETE FROM workflow_states WHERE id = 'wf-123'")

    collector = create_step_collector()
    workflow = create_workflow(
        {"fetch_user": fetch_user, "fetch_posts": fetch_posts},
        on_event=collector.handle_event,
        resume_state=load_resume_state,
    )

    first = await workflow(load_user_and_posts)  # nothing saved yet: both steps run
    print(f"first run (no saved state) called: {', '.join(calls)}")
    assert calls == ["fetch_user('1')", "fetch_posts('1')"]

    json_text = stringify_state(collector.get_state(), {"workflow_id": "wf-123"})
    await asyncio.to_thread(
        query,
        "INSERT OR REPLACE INTO workflow_states VALUES (?, ?, datetime('now'))",
        "wf-123",
        json_text,
    )
    print("state saved as wf-123")

    calls.clear()
    second = await workflow(load_user_and_posts)  # the same workflow loads it now
    print(f"second run (state loaded lazily) called: {', '.join(calls) or 'nothing'}")
    assert calls == []
    assert second == first


def main() -> None:
    asyncio.run(run_demo())


if __name__ == "__main__":
    main()
