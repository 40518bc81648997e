"""Seed section "Crash recovery pattern".

Save a checkpoint after each critical step. If the workflow crashes later,
a new run resumes from the last checkpoint: completed steps return their
saved values and only the rest runs. Checkpoints go to the
``workflow_states`` table of ``workflows.db`` in the current directory.
"""

from __future__ import annotations

import sqlite3
import time

from awaitly_nb import (
    WorkflowState,
    create_step_collector,
    create_workflow,
    parse_state,
    stringify_state,
)

DB = "workflows.db"
calls: list[str] = []
network_up = False  # the first run loses the network in its second step


def fetch_user(user_id: str) -> dict:
    calls.append(f"fetch_user({user_id!r})")
    time.sleep(0.01)
    return {"id": user_id, "name": "Ada"}


def fetch_posts(user_id: str) -> list[dict]:
    calls.append(f"fetch_posts({user_id!r})")
    time.sleep(0.01)
    if not network_up:
        raise ConnectionError("network went down")
    return [{"id": 1, "title": "Hello"}]


deps = {"fetch_user": fetch_user, "fetch_posts": fetch_posts}


def connect() -> sqlite3.Connection:
    db = sqlite3.connect(DB)
    db.execute(
        "CREATE TABLE IF NOT EXISTS workflow_states"
        " (id TEXT PRIMARY KEY, state TEXT NOT NULL, created_at TEXT NOT NULL)"
    )
    return db


def save_checkpoint(state: WorkflowState, workflow_id: str = "wf-123") -> None:
    db = connect()
    with db:
        db.execute(
            "INSERT OR REPLACE INTO workflow_states (id, state, created_at)"
            " VALUES (?, ?, datetime('now'))",
            (workflow_id, stringify_state(state, {"workflow_id": workflow_id})),
        )
    db.close()


def load_checkpoint(workflow_id: str) -> WorkflowState | None:
    db = connect()
    row = db.execute("SELECT state FROM workflow_states WHERE id = ?", (workflow_id,)).fetchone()
    db.close()
    return parse_state(row[0]) if row else None


def run(resume_state: WorkflowState | None = None) -> dict:
    collector = create_step_collector()
    workflow = create_workflow(deps, on_event=collector.handle_event, resume_state=resume_state)

    def load_user_and_posts(step):
        user = step(lambda: fetch_user("1"), key="user:1")

        # Save after critical step
        save_checkpoint(collector.get_state())

        posts = step(lambda: fetch_posts(user["id"]), key=f"posts:{user['id']}")
        return {"user": user, "posts": posts}

    result = workflow(load_user_and_posts)

    # Final save
    save_checkpoint(collector.get_state())
    return result


def main() -> None:
    global network_up
    db = connect()  # start the demo from scratch
    with db:
        db.execute("DELETE FROM workflow_states WHERE id = 'wf-123'")
    db.close()

    try:
        run()
    except ConnectionError as exc:
        print(f"first run crashed: {exc!r} after {', '.join(calls)}")
    checkpoint = load_checkpoint("wf-123")
    assert checkpoint is not None
    print(f"last checkpoint holds: {sorted(checkpoint.steps)}")
    assert calls == ["fetch_user('1')", "fetch_posts('1')"]
    assert sorted(checkpoint.steps) == ["user:1"]  # the failed step was not saved

    network_up = True
    calls.clear()
    saved_state = load_checkpoint("wf-123")
    # Completed steps use cached values
    result = run(resume_state=saved_state)
    print(f"second run called only: {', '.join(calls)}")
    print(f"second run returned: {result}")
    assert calls == ["fetch_posts('1')"]  # the user was not fetched again
    # The collector records restored steps too, so the final checkpoint is complete.
    final = load_checkpoint("wf-123")
    assert final is not None and sorted(final.steps) == ["posts:1", "user:1"]


if __name__ == "__main__":
    main()
