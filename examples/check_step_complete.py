"""Seed section "Check if step is complete".

``is_step_complete(state, key)`` tells whether a loaded state already holds a
step, before running anything. It accepts ``None`` too: what
``persistence.load`` returns for an id that was never saved.
"""

from __future__ import annotations

import time

from awaitly_nb import (
    MemoryAdapter,
    create_state_persistence,
    create_step_collector,
    create_workflow,
    is_step_complete,
)

calls: list[str] = []


def fetch_user(user_id: str) -> dict:
    calls.append(f"fetch_user({user_id!r})")
    time.sleep(0.01)
    return {"id": user_id, "name": "Ada"}


def main() -> None:
    persistence = create_state_persistence(MemoryAdapter(), "workflow:state:")

    # An earlier run fetched user 1 and saved its state.
    collector = create_step_collector()
    workflow = create_workflow({"fetch_user": fetch_user}, on_event=collector.handle_event)
    workflow(lambda step: step(lambda: fetch_user("1"), key="user:1"))
    persistence.save("wf-123", collector.get_state())

    state = persistence.load("wf-123")

    if is_step_complete(state, "user:1"):
        print("User already fetched")
    if not is_step_complete(state, "posts:1"):
        print("Posts not fetched yet")

    never_saved = persistence.load("wf-999")
    print(f"wf-999 was never saved: load() -> {never_saved}")

    assert is_step_complete(state, "user:1")
    assert not is_step_complete(state, "posts:1")
    assert never_saved is None and not is_step_complete(never_saved, "user:1")
    assert calls == ["fetch_user('1')"]  # checking runs nothing


if __name__ == "__main__":
    main()
