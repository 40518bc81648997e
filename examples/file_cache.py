"""Seed section "File-based persistence".

``create_file_cache`` returns a step cache kept in a directory. Pass it as
``cache=``: keyed steps are saved there as they complete, and any later
workflow using the same directory (in this process or a new one) gets them
back without running them. Entries expire after the TTL.
"""

from __future__ import annotations

import time
from datetime import timedelta

from awaitly_nb import create_file_cache, create_workflow

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


def main() -> None:
    cache = create_file_cache(
        "./workflow-state",
        ttl_ms=7 * 24 * 60 * 60 * 1000,  # 7 days; or ttl=timedelta(days=7)
    )
    assert cache.ttl == timedelta(days=7).total_seconds()
    cache.clear()  # start the demo from scratch

    workflow = create_workflow(deps, cache=cache)
    first = workflow(load_user_and_posts)
    print(f"first run called: {', '.join(calls)}")
    print(f"saved in {cache.directory}: {sorted(cache.keys())}")
    cache.close()
    assert calls == ["fetch_user('1')", "fetch_posts('1')"]

    # A new cache object on the same directory, as a new process would open it.
    calls.clear()
    with create_file_cache("./workflow-state", ttl=timedelta(days=7)) as cache:
        workflow = create_workflow(deps, cache=cache)
        second = workflow(load_user_and_posts)
    print(f"second run called: {', '.join(calls) or 'nothing'}")
    assert calls == []
    assert second == first


if __name__ == "__main__":
    main()
