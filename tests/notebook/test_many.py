"""``step.map``: many keyed async calls at once, each saved when it completes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import awaitly_nb
from awaitly_nb import step
from awaitly_nb.config import get_session
from awaitly_nb.notebook.many import StepMapError


class FakeService:
    """An async service that counts requests and how many run at once."""

    def __init__(self) -> None:
        self.requests: list[int] = []
        self.running = 0
        self.most = 0

    async def fetch_user(self, uid: int) -> dict[str, int]:
        self.requests.append(uid)
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(0.001)
            return {"id": uid}
        finally:
            self.running -= 1

    def flaky(self, down: set[int]) -> Callable[[int], Awaitable[dict[str, int]]]:
        """``fetch_user``, failing for the users in ``down`` (an outage: not the service's
        state, which a bound method's step compares)."""

        async def fetch_user(uid: int) -> dict[str, int]:
            if uid in down:
                self.requests.append(uid)
                await asyncio.sleep(0.05)  # after the others answered
                raise ConnectionError(f"user {uid} timed out")
            return await self.fetch_user(uid)

        return fetch_user


@pytest.fixture
def store(tmp_path: Path) -> Any:
    awaitly_nb.configure(dir=tmp_path / "store", workflow="many")
    yield tmp_path
    awaitly_nb.configure(dir=None, workflow=None)


def test_hits_return_at_once_and_misses_run_concurrently_up_to_the_limit(store: Any) -> None:
    service = FakeService()
    ids = list(range(50))
    users = asyncio.run(step.map(service.fetch_user, ids, key="user:{}", concurrency=5))
    assert users == [{"id": i} for i in ids]
    assert sorted(service.requests) == ids
    assert service.most == 5
    again = FakeService()
    assert asyncio.run(step.map(again.fetch_user, ids, key="user:{}")) == users
    assert again.requests == []  # every call restored


def test_a_failure_halfway_keeps_the_completed_calls_and_the_next_run_makes_only_the_rest(
    store: Any,
) -> None:
    flaky = FakeService().flaky(down={7, 31})
    with pytest.raises(StepMapError) as failed:
        asyncio.run(step.map(flaky, range(50), key="user:{}", progress=False))
    assert set(failed.value.errors) == {"user:7", "user:31"}
    assert "2 of 50 calls failed" in str(failed.value)
    fixed = FakeService()
    users = asyncio.run(step.map(fixed.flaky(down=set()), range(50), key="user:{}"))
    assert sorted(fixed.requests) == [7, 31]
    assert users[7] == {"id": 7}


def test_interrupting_a_map_keeps_what_completed(store: Any) -> None:
    service = FakeService()

    async def interrupted() -> None:
        task = asyncio.ensure_future(
            step.map(service.fetch_user, range(40), key="u:{}", concurrency=4)
        )
        while len(service.requests) < 10:
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(interrupted())
    done = len(service.requests) - service.running
    rest = FakeService()
    asyncio.run(step.map(rest.fetch_user, range(40), key="u:{}"))
    assert 0 < len(rest.requests) < 40  # only what was not saved
    assert len(rest.requests) <= 40 - done + 4


def test_bad_arguments_are_clear(store: Any) -> None:
    service = FakeService()
    with pytest.raises(TypeError, match="where the item goes"):
        asyncio.run(step.map(service.fetch_user, [1], key="user"))
    with pytest.raises(ValueError, match="same key"):
        asyncio.run(step.map(service.fetch_user, [1, 1], key="user:{}"))
    with pytest.raises(ValueError, match="concurrency"):
        asyncio.run(step.map(service.fetch_user, [1], key="u:{}", concurrency=0))


def test_gather_of_keyed_calls_with_arguments_saves_each_and_restores_all(store: Any) -> None:
    ids = list(range(20))

    async def fetch_all(service: FakeService, down: set[int] = set()) -> list[Any]:  # noqa: B006
        fetch = service.flaky(down)
        return await asyncio.gather(*(step(fetch, uid, key=f"user:{uid}") for uid in ids))

    first = FakeService()
    with pytest.raises(ConnectionError):
        asyncio.run(fetch_all(first, {13}))
    assert sorted(first.requests) == ids
    second = FakeService()
    assert asyncio.run(fetch_all(second)) == [{"id": i} for i in ids]
    assert second.requests == [13]  # only the failed call was made again
    third = FakeService()
    assert asyncio.run(fetch_all(third)) == [{"id": i} for i in ids]
    assert third.requests == []


def test_arguments_are_inputs_compared_by_value(store: Any) -> None:
    calls: list[tuple[int, int]] = []

    def power(base: int, exponent: int) -> int:
        calls.append((base, exponent))
        return int(base**exponent)

    assert step(power, 2, 10, key="power") == 1024
    assert step(power, 2, 10, key="power") == 1024
    assert calls == [(2, 10)]
    assert step(power, 3, 10, key="power") == 59049  # same key, another argument: runs
    assert calls == [(2, 10), (3, 10)]
    (row,) = [r for r in get_session().engine.status() if r.key == "power"]
    assert row.why == "args[0] changed (2 → 3)"


def test_the_block_form_takes_no_arguments(store: Any) -> None:
    with pytest.raises(TypeError, match="arguments go with a function"):
        step("posts:1", 1)


def test_a_bound_methods_object_is_an_input_of_map_and_of_the_call_form(store: Any) -> None:
    class Client:
        def __init__(self, base: str) -> None:
            self.base = base
            self.calls = 0  # changed by every call: compared as at the first use

        async def get(self, uid: int, sep: str = ":") -> str:
            self.calls += 1
            return f"{self.base}{sep}{uid}"

    a = Client("A")
    assert asyncio.run(step.map(a.get, [1, 2], key="user:{}")) == ["A:1", "A:2"]
    assert asyncio.run(step.map(a.get, [1, 2, 3], key="user:{}")) == ["A:1", "A:2", "A:3"]
    assert a.calls == 3  # its own counter did not make the saved calls run again
    again = Client("A")  # as a new kernel makes it
    assert asyncio.run(step.map(again.get, [1, 2, 3], key="user:{}")) == ["A:1", "A:2", "A:3"]
    assert again.calls == 0
    b = Client("B")
    assert asyncio.run(step.map(b.get, [1, 2], key="user:{}")) == ["B:1", "B:2"]
    assert b.calls == 2  # another client: not A's answers

    async def keywords() -> list[str]:
        first = await step(b.get, 3, sep="/", key="kw")
        return [first, await step(b.get, 3, sep="/", key="kw"), await step(b.get, 3, key="kw")]

    assert asyncio.run(keywords()) == ["B/3", "B/3", "B:3"]  # sep= is an input too
    assert b.calls == 4


def test_keyword_arguments_are_refused_by_the_block_form(store: Any) -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'sep'"):
        step("posts:1", sep="/")


def test_what_a_call_printed_is_shown_again_when_it_is_restored(
    store: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    def report(n: int) -> int:
        print(f"computing {n}")
        return n * 2

    async def fetch(uid: int) -> int:
        print(f"fetching {uid}")
        await asyncio.sleep(0)
        return uid

    async def fetch_all() -> list[int]:
        return await asyncio.gather(*(step(fetch, u, key=f"f:{u}") for u in range(3)))

    assert step(report, 4, key="report") == 8
    assert asyncio.run(fetch_all()) == [0, 1, 2]
    first = capsys.readouterr().out
    assert step(report, 4, key="report") == 8  # restored: prints what the run printed
    assert asyncio.run(fetch_all()) == [0, 1, 2]
    assert capsys.readouterr().out == first == ("computing 4\nfetching 0\nfetching 1\nfetching 2\n")


def test_warnings_point_at_the_users_line_not_at_awaitly_nb(store: Any) -> None:
    import threading

    with pytest.warns(awaitly_nb.CacheWarning) as caught:
        step(threading.Lock, key="lock")  # cannot be saved
    (ours,) = [w for w in caught if w.category is awaitly_nb.CacheWarning]
    assert ours.filename == __file__


def test_map_says_what_is_wrong_with_a_key_or_a_plain_function(store: Any) -> None:
    async def fetch(uid: int) -> int:
        return uid

    with pytest.raises(ValueError, match=r"cannot fill key='named:\{u\}' with the item 1"):
        asyncio.run(step.map(fetch, [1], key="named:{u}"))
    with pytest.raises(StepMapError) as failed:
        asyncio.run(step.map(lambda u: u * 2, [1, 2], key="double:{}"))
    assert "needs an async function" in str(failed.value.errors["double:1"])
    lambdas = asyncio.run(step.map(lambda u: fetch(u), [1, 2], key="lambda:{}"))
    assert lambdas == [1, 2]  # a function returning a coroutine is fine
