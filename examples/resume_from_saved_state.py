"""Seed section "Resume from saved state".

Load the state text from the ``workflow_states`` table, parse it with
``parse_state`` and pass it to a new workflow as ``resume_state``: the
completed steps return their saved values without running again.
"""

from __future__ import annotations

import sqlite3
import time

from awaitly_nb import create_step_collector, create_workflow, parse_state, stringify_state

calls: list[str] = []


def fetch_user(user_id: str) -> dict:
    calls.append(f"fetch_user({user_id!r})")
    time.sleep(0.01)
    return {"id": user_id, "name": "Ada"}


def fetch_posts(user_id: str) -> list[dict]:
    calls.append(f"fetch_posts({user_id!r})")
    time.sleep(0.01)
    return [{"id": 1, "title": "Hello"}]


def load_user_and_posts(step):
    user = step(lambda: fetch_user("1"), key="user:1")
    posts = step(lambda: fetch_posts(user["id"]), key=f"posts:{user['id']}")
    return {"user": user, "posts": posts}


def first_run(db: sqlite3.Connection) -> dict:
    """Run the workflow once and save its state (as in save_to_database.py)."""
    collector = create_step_collector()
    workflow = create_workflow(
        {"fetch_user": fetch_user, "fetch_posts": fetch_posts},
        on_event=collector.handle_event,
    )
    result = workflow(load_user_and_posts)
    json_text = stringify_state(collector.get_state(), {"workflow_id": "wf-123"})
    with db:
        db.execute(
            "INSERT OR REPLACE INTO workflow_states (id, state, created_at)"
            " VALUES (?, ?, datetime('now'))",
            ("wf-123", json_text),
        )
    return result


def main() -> None:
    db = sqlite3.connect("workflows.db")
    db.execute(
        "CREATE TABLE IF NOT EXISTS workflow_states"
        " (id TEXT PRIMARY KEY, state TEXT NOT NULL, created_at TEXT NOT NULL)"
    )
    first = first_run(db)
    print(f"first run called: {', '.join(calls)}; state saved as wf-123")
    calls.clear()

    # Later, maybe in another process: load the saved state and resume.
    (saved_state,) = db.execute(
        "SELECT state FROM workflow_states WHERE id = ?", ("wf-123",)
    ).fetchone()
    db.close()
    resume_state = parse_state(saved_state)

    workflow = create_workflow(
        {"fetch_user": fetch_user, "fetch_posts": fetch_posts},
        resume_state=resume_state,
    )
    # These steps return cached values - no actual fetch
    result = workflow(load_user_and_posts)

    print(f"resumed run called: {', '.join(calls) or 'nothing'}")
    print(f"resumed run returned: {result}")
    assert calls == []  # neither fetch_user nor fetch_posts ran again
    assert result == first


if __name__ == "__main__":
    main()
