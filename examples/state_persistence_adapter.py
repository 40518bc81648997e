"""Seed section "State persistence adapter".

``create_state_persistence`` saves and loads workflow states through any
key/value store. The adapter is a dict of five functions (or an object with
these methods). Here the store is a ``diskcache.Cache`` in ``workflow-store/``,
standing in for the seed's Redis client; ``awaitly_nb.DiskCacheAdapter`` is
the ready-made adapter over the same kind of store. The second half shows the
async form: ``async def`` functions, and ``await`` on every persistence call.
"""

from __future__ import annotations

import asyncio
import fnmatch
import time

import diskcache

from awaitly_nb import (
    DiskCacheAdapter,
    create_state_persistence,
    create_step_collector,
    create_workflow,
)

calls: list[str] = []


def fetch_user(user_id: str) -> dict:
    calls.append(f"fetch_user({user_id!r})")
    time.sleep(0.01)
    return {"id": user_id, "name": "Ada"}


def fetch_posts(user_id: str) -> list[dict]:
    calls.append(f"fetch_posts({user_id!r})")
    time.sleep(0.01)
    return [{"id": 1, "title": "Hello"}]


deps = {"fetch_user": fetch_user, "fetch_posts": fetch_posts}


def load_user_and_posts(step):
    user = step(lambda: fetch_user("1"), key="user:1")
    posts = step(lambda: fetch_posts(user["id"]), key=f"posts:{user['id']}")
    return {"user": user, "posts": posts}


def run_and_collect():
    collector = create_step_collector()
    result = create_workflow(deps, on_event=collector.handle_event)(load_user_and_posts)
    return result, collector.get_state()


def sync_adapter(store: diskcache.Cache) -> None:
    persistence = create_state_persistence(
        {
            "get": lambda key: store.get(key),
            "set": lambda key, value: store.set(key, value),
            "delete": lambda key: store.delete(key),
            "exists": lambda key: key in store,
            "keys": lambda pattern: [k for k in store if fnmatch.fnmatchcase(k, pattern)],
        },
        "workflow:state:",
    )
    first, state = run_and_collect()
    calls.clear()

    # Save
    persistence.save("wf-123", state, {"user_id": "user-1"})
    # Load
    saved_state = persistence.load("wf-123")
    print(f"saved and loaded wf-123: steps {sorted(saved_state.steps)}, {saved_state.metadata}")

    # Resume
    workflow = create_workflow(deps, resume_state=saved_state)
    result = workflow(load_user_and_posts)
    print(f"resumed from the store; functions called: {calls or 'none'}")
    assert result == first and calls == []
    assert saved_state.metadata == {"user_id": "user-1"}

    # The ready-made adapter reads the same store.
    ready = create_state_persistence(DiskCacheAdapter(store))
    assert ready.load("wf-123").values() == saved_state.values()
    assert "wf-123" in ready.list()


async def async_adapter(store: diskcache.Cache) -> None:
    # With an async client (e.g. redis.asyncio) the functions are coroutines.
    async def get(key):
        return store.get(key)

    async def set_(key, value):
        store.set(key, value)

    async def delete(key):
        return store.delete(key)

    async def exists(key):
        return key in store

    async def keys(pattern):
        return [k for k in store if fnmatch.fnmatchcase(k, pattern)]

    persistence = create_state_persistence(
        {"get": get, "set": set_, "delete": delete, "exists": exists, "keys": keys},
        "workflow:state:",
    )
    first, state = run_and_collect()
    calls.clear()

    await persistence.save("wf-async", state, {"user_id": "user-1"})
    saved_state = await persistence.load("wf-async")
    print(f"async adapter: saved ids {await persistence.list()}")

    workflow = create_workflow(deps, resume_state=saved_state)

    async def load_user_and_posts_async(step):
        user = await step(lambda: fetch_user("1"), key="user:1")
        posts = await step(lambda: fetch_posts(user["id"]), key=f"posts:{user['id']}")
        return {"user": user, "posts": posts}

    result = await workflow(load_user_and_posts_async)
    print(f"async resume; functions called: {calls or 'none'}")
    assert result == first and calls == []
    assert await persistence.delete("wf-async") is True
    assert await persistence.load("wf-async") is None


def main() -> None:
    with diskcache.Cache("workflow-store") as store:
        sync_adapter(store)
        asyncio.run(async_adapter(store))


if __name__ == "__main__":
    main()
