"""Seed section "Collect state during execution".

A step collector listens to the workflow's events and gathers every keyed
step that completes. Only steps with a ``key`` are saved.
"""

from __future__ import annotations

import time

from awaitly_nb import create_step_collector, create_workflow

calls: list[str] = []


def fetch_user(user_id: str) -> dict:
    calls.append(f"fetch_user({user_id!r})")
    time.sleep(0.01)
    return {"id": user_id, "name": "Ada"}


def fetch_posts(user_id: str) -> list[dict]:
    calls.append(f"fetch_posts({user_id!r})")
    time.sleep(0.01)
    return [{"id": 1, "title": "Hello"}, {"id": 2, "title": "Resumable steps"}]


def main() -> None:
    collector = create_step_collector()
    workflow = create_workflow(
        {"fetch_user": fetch_user, "fetch_posts": fetch_posts},
        on_event=collector.handle_event,
    )

    def load_user_and_posts(step):
        user = step(lambda: fetch_user("1"), key="user:1")
        posts = step(lambda: fetch_posts(user["id"]), key=f"posts:{user['id']}")
        greeting = step(lambda: f"Hello, {user['name']}!")  # no key: not saved
        return {"user": user, "posts": posts, "greeting": greeting}

    result = workflow(load_user_and_posts)

    # Get collected state
    state = collector.get_state()

    print(f"workflow returned {result['greeting']!r} and {len(result['posts'])} posts")
    print(f"functions called: {', '.join(calls)}")
    print(f"collected steps: {sorted(state.steps)}")
    for key, entry in state.steps.items():
        print(f"  {key}: {entry.value!r} (took {entry.meta.duration_ms:.0f} ms)")

    assert calls == ["fetch_user('1')", "fetch_posts('1')"]
    assert sorted(state.steps) == ["posts:1", "user:1"]  # the unkeyed step is not saved
    assert state["user:1"].value == result["user"]
    assert state["posts:1"].value == result["posts"]


if __name__ == "__main__":
    main()
