"""Seed section "Save to database".

Serialize the collected state with ``stringify_state`` and store the text in
a ``workflow_states`` table (SQLite here, in ``workflows.db`` in the current
directory).
"""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import datetime, timezone

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


def main() -> None:
    collector = create_step_collector()
    workflow = create_workflow(
        {"fetch_user": fetch_user, "fetch_posts": fetch_posts},
        on_event=collector.handle_event,
    )
    workflow(load_user_and_posts)
    state = collector.get_state()

    json_text = stringify_state(state, {"workflow_id": "wf-123", "timestamp": time.time()})

    db = sqlite3.connect("workflows.db")
    with db:  # one transaction, committed on success
        db.execute(
            "CREATE TABLE IF NOT EXISTS workflow_states"
            " (id TEXT PRIMARY KEY, state TEXT NOT NULL, created_at TEXT NOT NULL)"
        )
        db.execute(
            "INSERT OR REPLACE INTO workflow_states (id, state, created_at) VALUES (?, ?, ?)",
            ("wf-123", json_text, datetime.now(timezone.utc).isoformat()),
        )
    db.close()

    # A new connection finds the state in the database.
    db = sqlite3.connect("workflows.db")
    (stored,) = db.execute("SELECT state FROM workflow_states WHERE id = ?", ("wf-123",)).fetchone()
    db.close()

    print(f"saved {len(state)} steps of wf-123 to workflows.db ({len(stored)} characters)")
    print(f"the text is plain JSON with steps {sorted(json.loads(stored)['steps'])}")
    saved = parse_state(stored)
    print(f"parsed back: {saved.values()}, metadata workflow_id={saved.metadata['workflow_id']!r}")

    assert saved.metadata["workflow_id"] == "wf-123"
    assert saved.values() == state.values()
    assert calls == ["fetch_user('1')", "fetch_posts('1')"]


if __name__ == "__main__":
    main()
