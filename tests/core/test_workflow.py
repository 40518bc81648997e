"""create_workflow and step: bodies, keyed steps, failures, keys, resume_state, cache=."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest
from awaitly_testing import Counted

from awaitly_nb import (
    AwaitlyError,
    InvalidKeyError,
    StepEntry,
    StepMeta,
    WorkflowState,
    create_step_collector,
    create_workflow,
    parse_state,
    stringify_state,
)


class AsyncCounted(Counted):
    async def __call__(self) -> Any:  # type: ignore[override]
        self.calls += 1
        await asyncio.sleep(0)
        return self.value


def state_of(**values: Any) -> WorkflowState:
    return WorkflowState({k: StepEntry(v, StepMeta(saved_at=1.0)) for k, v in values.items()})


# --- bodies --------------------------------------------------------------------------------


def test_sync_body_returns_its_value() -> None:
    workflow = create_workflow()
    assert workflow(lambda step: step(lambda: 21 * 2)) == 42


def test_body_taking_two_parameters_gets_deps() -> None:
    deps = {"fetch_user": lambda user_id: {"id": user_id}}
    seen = []

    def main(step: Any, d: Any) -> Any:
        seen.append(d)
        return step(lambda: d["fetch_user"]("1"), key="user:1")

    assert create_workflow(deps)(main) == {"id": "1"}
    assert seen[0] is deps


def test_body_taking_one_parameter_gets_only_step() -> None:
    got = []

    def one(step: Any) -> str:  # called with deps too, this would raise TypeError
        got.append(step)
        return "ok"

    assert create_workflow({"x": 1})(one) == "ok"
    assert callable(got[0])


def test_body_with_varargs_receives_step_and_deps() -> None:
    got: list[tuple[Any, ...]] = []

    def main(*args: Any) -> None:
        got.append(args)

    deps = object()
    create_workflow(deps)(main)
    assert len(got[0]) == 2
    assert got[0][1] is deps


def test_async_body_makes_the_call_awaitable() -> None:
    async def main(step: Any) -> int:
        return await step(lambda: 7)

    pending = create_workflow()(main)
    assert inspect.isawaitable(pending)
    assert asyncio.run(pending) == 7


def test_async_body_awaits_sync_and_async_step_functions() -> None:
    sync_fn, async_fn = Counted("a"), AsyncCounted("b")

    async def main(step: Any, deps: Any) -> Any:
        first = await step(sync_fn, key="sync")
        second = await step(async_fn, key="async")
        return first, second, deps

    assert asyncio.run(create_workflow("deps")(main)) == ("a", "b", "deps")
    assert (sync_fn.calls, async_fn.calls) == (1, 1)


def test_async_body_keyed_hit_does_not_call_async_function() -> None:
    fn = AsyncCounted({"n": 1})
    workflow = create_workflow(cache={})

    async def main(step: Any) -> Any:
        return await step(fn, key="n")

    assert asyncio.run(workflow(main)) == {"n": 1}
    assert asyncio.run(workflow(main)) == {"n": 1}
    assert fn.calls == 1


def test_workflow_rejects_a_non_callable_body() -> None:
    with pytest.raises(TypeError, match="body"):
        create_workflow()(42)  # type: ignore[call-overload]


# --- keyed and unkeyed steps -----------------------------------------------------------------


def test_keyed_hit_returns_saved_value_without_calling_fn() -> None:
    fn = Counted({"name": "Ada"})
    workflow = create_workflow(cache={})
    main = lambda step: step(fn, key="user:1")  # noqa: E731
    first = workflow(main)
    second = workflow(main)
    assert first == second == {"name": "Ada"}
    assert fn.calls == 1


def test_different_keys_are_different_steps() -> None:
    fn = Counted(1)
    workflow = create_workflow(cache={})
    workflow(lambda step: step(fn, key="a"))
    workflow(lambda step: step(fn, key="b"))
    assert fn.calls == 2


def test_saved_none_is_a_hit_not_a_miss() -> None:
    fn = Counted(None)
    workflow = create_workflow(cache={})
    assert workflow(lambda step: step(fn, key="nothing")) is None
    assert workflow(lambda step: step(fn, key="nothing")) is None
    assert fn.calls == 1


def test_unkeyed_steps_always_run_and_are_not_saved() -> None:
    fn = Counted(5)
    cache: dict[str, Any] = {}
    workflow = create_workflow(cache=cache)
    workflow(lambda step: step(fn))
    workflow(lambda step: step(fn, name="named but unkeyed"))
    assert fn.calls == 2
    assert cache == {}


def test_keyed_step_is_saved_in_the_cache_with_meta() -> None:
    cache: dict[str, Any] = {}
    create_workflow(cache=cache)(lambda step: step(lambda: [1, 2], key="k", name="load"))
    entry = cache["k"]
    assert entry.value == [1, 2]
    assert entry.meta.name == "load"
    assert entry.meta.saved_at > 0
    assert entry.meta.duration_ms >= 0


class Boom(Exception):
    pass


def test_failing_step_propagates_the_original_exception_and_is_not_saved() -> None:
    error = Boom("no network")
    events: list[Any] = []
    cache: dict[str, Any] = {}
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise error
        return "fetched"

    workflow = create_workflow(cache=cache, on_event=events.append)
    main = lambda step: step(flaky, key="flaky")  # noqa: E731
    with pytest.raises(Boom) as info:
        workflow(main)
    assert info.value is error
    assert "flaky" not in cache
    step_errors = [e for e in events if e.type == "step_error"]
    assert len(step_errors) == 1
    assert step_errors[0].error is error
    assert step_errors[0].step_key == "flaky"
    assert not any(e.type == "step_complete" for e in events)

    # the next run executes it again
    assert workflow(main) == "fetched"
    assert len(calls) == 2
    assert cache["flaky"].value == "fetched"


def test_failing_step_is_not_collected() -> None:
    collector = create_step_collector()

    def fail() -> None:
        raise Boom

    with pytest.raises(Boom):
        create_workflow(on_event=collector.handle_event)(
            lambda step: (step(lambda: 1, key="ok"), step(fail, key="bad"))
        )
    state = collector.get_state()
    assert "ok" in state
    assert "bad" not in state


def test_failing_async_step_propagates_the_original_exception() -> None:
    error = Boom("async")
    cache: dict[str, Any] = {}

    async def fail() -> None:
        raise error

    async def main(step: Any) -> Any:
        return await step(fail, key="k")

    with pytest.raises(Boom) as info:
        asyncio.run(create_workflow(cache=cache)(main))
    assert info.value is error
    assert cache == {}


def test_keyboard_interrupt_is_not_saved_and_the_step_runs_again() -> None:
    cache: dict[str, Any] = {}
    calls = []

    def interrupted() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return "done"

    workflow = create_workflow(cache=cache)
    with pytest.raises(KeyboardInterrupt):
        workflow(lambda step: step(interrupted, key="long"))
    assert cache == {}
    assert workflow(lambda step: step(interrupted, key="long")) == "done"
    assert len(calls) == 2


# --- keys and arguments ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (1, "must be a str"),
        (b"user:1", "must be a str"),
        (("user", 1), "must be a str"),
        ("", "must not be empty"),
        ("user\x00:1", "NUL"),
    ],
)
def test_invalid_keys_raise_before_fn_runs(key: Any, message: str) -> None:
    fn = Counted(1)
    cache: dict[str, Any] = {}
    with pytest.raises(InvalidKeyError, match=message) as info:
        create_workflow(cache=cache)(lambda step: step(fn, key=key))
    assert isinstance(info.value, ValueError)
    assert fn.calls == 0
    assert cache == {}


@pytest.mark.parametrize("key", [3, "", "a\x00b"])
def test_invalid_keys_raise_in_async_bodies_too(key: Any) -> None:
    fn = AsyncCounted(1)

    async def main(step: Any) -> Any:
        return await step(fn, key=key)

    with pytest.raises(InvalidKeyError):
        asyncio.run(create_workflow(cache={})(main))
    assert fn.calls == 0


@pytest.mark.parametrize("not_a_function", [42, "fetch_user", None])
def test_step_given_a_non_callable_raises_type_error(not_a_function: Any) -> None:
    with pytest.raises(TypeError, match="function"):
        create_workflow()(lambda step: step(not_a_function, key="k"))


def test_async_step_given_a_non_callable_raises_type_error() -> None:
    async def main(step: Any) -> Any:
        return await step(42)

    with pytest.raises(TypeError, match="function"):
        asyncio.run(create_workflow()(main))


def test_sync_step_whose_fn_returns_a_coroutine_raises_type_error() -> None:
    async def work() -> int:
        return 1

    cache: dict[str, Any] = {}
    with pytest.raises(TypeError, match="async def"):
        create_workflow(cache=cache)(lambda step: step(work, key="k"))
    assert cache == {}


# --- resume_state ----------------------------------------------------------------------------


def test_resume_state_value_returns_saved_values_without_calling() -> None:
    fn = Counted("fresh")
    workflow = create_workflow(resume_state=state_of(**{"user:1": "saved"}))
    assert workflow(lambda step: step(fn, key="user:1")) == "saved"
    assert fn.calls == 0
    assert workflow(lambda step: step(fn, key="user:2")) == "fresh"
    assert fn.calls == 1


def test_resume_state_function_is_evaluated_at_the_start_of_each_run() -> None:
    log: list[str] = []

    def resume() -> WorkflowState:
        log.append("resume")
        return state_of()

    def main(step: Any) -> None:
        log.append("body")

    workflow = create_workflow(resume_state=resume)
    assert log == []  # not at creation
    workflow(main)
    workflow(main)
    assert log == ["resume", "body", "resume", "body"]


def test_resume_state_changing_between_runs_is_seen() -> None:
    fn = Counted("fresh")
    holder = {"state": state_of()}
    workflow = create_workflow(resume_state=lambda: holder["state"])
    main = lambda step: step(fn, key="k")  # noqa: E731
    assert workflow(main) == "fresh"
    holder["state"] = state_of(k="restored")
    assert workflow(main) == "restored"
    assert fn.calls == 1


def test_resume_state_function_returning_none_runs_everything() -> None:
    fn = Counted(1)
    workflow = create_workflow(resume_state=lambda: None)
    workflow(lambda step: step(fn, key="k"))
    workflow(lambda step: step(fn, key="k"))
    assert fn.calls == 2


def test_async_resume_state_with_async_body() -> None:
    resume_calls = []

    async def resume() -> WorkflowState:
        resume_calls.append(1)
        await asyncio.sleep(0)
        return state_of(k="restored")

    fn = AsyncCounted("fresh")

    async def main(step: Any) -> Any:
        return await step(fn, key="k"), await step(fn, key="other")

    workflow = create_workflow(resume_state=resume)
    assert asyncio.run(workflow(main)) == ("restored", "fresh")
    assert asyncio.run(workflow(main)) == ("restored", "fresh")
    assert len(resume_calls) == 2
    assert fn.calls == 2


def test_async_resume_state_with_sync_body_outside_an_event_loop() -> None:
    resume_calls = []

    async def resume() -> WorkflowState:
        resume_calls.append(1)
        return state_of(k="restored")

    fn = Counted("fresh")
    workflow = create_workflow(resume_state=resume)
    assert workflow(lambda step: step(fn, key="k")) == "restored"
    assert workflow(lambda step: step(fn, key="k")) == "restored"
    assert fn.calls == 0
    assert len(resume_calls) == 2


def test_async_resume_state_with_sync_body_inside_a_running_loop_says_what_to_do() -> None:
    async def resume() -> WorkflowState:
        return state_of()

    workflow = create_workflow(resume_state=resume)

    async def in_loop() -> None:
        workflow(lambda step: step(lambda: 1, key="k"))

    with pytest.raises(AwaitlyError, match="async def"):
        asyncio.run(in_loop())


def test_resume_state_of_the_wrong_type_is_rejected() -> None:
    with pytest.raises(TypeError, match="resume_state"):
        create_workflow(resume_state={"k": 1})  # type: ignore[arg-type]
    workflow = create_workflow(resume_state=lambda: {"k": 1})  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="resume_state"):
        workflow(lambda step: step(lambda: 1, key="k"))


def test_resume_state_is_looked_up_before_the_cache() -> None:
    fn = Counted("fresh")
    workflow = create_workflow(
        resume_state=state_of(k="from state"), cache={"k": StepEntry("from cache", StepMeta(1.0))}
    )
    assert workflow(lambda step: step(fn, key="k")) == "from state"
    assert fn.calls == 0


# --- cache= ----------------------------------------------------------------------------------


class ObjectCache:
    """awaitly's StepCache shape: get/set/has/delete/clear."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.gets: list[str] = []

    def get(self, key: str) -> Any:
        self.gets.append(key)
        return self.data.get(key)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value

    def has(self, key: str) -> bool:
        return key in self.data

    def delete(self, key: str) -> bool:
        return self.data.pop(key, None) is not None

    def clear(self) -> None:
        self.data.clear()


def test_cache_object_with_step_cache_methods() -> None:
    cache = ObjectCache()
    fn = Counted(3)
    workflow = create_workflow(cache=cache)
    assert workflow(lambda step: step(fn, key="k")) == 3
    assert workflow(lambda step: step(fn, key="k")) == 3
    assert fn.calls == 1
    assert cache.gets == ["k", "k"]
    assert workflow.cache is cache


def test_cache_of_the_wrong_type_is_rejected() -> None:
    with pytest.raises(TypeError, match="cache="):
        create_workflow(cache=42)  # type: ignore[arg-type]


def test_none_put_in_a_dict_cache_by_hand_is_a_hit() -> None:
    fn = Counted("fresh")
    workflow = create_workflow(cache={"k": None})
    assert workflow(lambda step: step(fn, key="k")) is None
    assert fn.calls == 0


def test_a_value_put_in_a_dict_cache_by_hand_is_a_hit() -> None:
    fn = Counted("fresh")
    workflow = create_workflow(cache={"k": "by hand"})
    assert workflow(lambda step: step(fn, key="k")) == "by hand"
    assert fn.calls == 0


# --- on_event --------------------------------------------------------------------------------


def test_on_event_handler_that_raises_warns_and_the_workflow_goes_on() -> None:
    fn = Counted("value")
    seen: list[str] = []

    def handler(event: Any) -> None:
        seen.append(event.type)
        raise RuntimeError("handler bug")

    workflow = create_workflow(on_event=handler, cache={})
    with pytest.warns(RuntimeWarning, match="handler bug"):
        assert workflow(lambda step: step(fn, key="k")) == "value"
    assert fn.calls == 1
    assert seen[-1] == "workflow_success"


def test_on_event_must_be_callable() -> None:
    with pytest.raises(TypeError, match="on_event"):
        create_workflow(on_event="print")  # type: ignore[arg-type]


# --- the design's round trip -----------------------------------------------------------------


def test_collect_stringify_parse_resume_fetches_nothing() -> None:
    fetched: list[str] = []

    def fetch_user(user_id: str) -> dict[str, str]:
        fetched.append(f"user:{user_id}")
        return {"id": user_id, "name": "Ada"}

    def fetch_posts(user_id: str) -> list[tuple[int, str]]:
        fetched.append(f"posts:{user_id}")
        return [(1, "hello"), (2, "world")]

    def main(step: Any, deps: Any) -> Any:
        user = step(lambda: deps["fetch_user"]("1"), key="user:1")
        posts = step(lambda: fetch_posts(user["id"]), key=f"posts:{user['id']}")
        return {"user": user, "posts": posts}

    collector = create_step_collector()
    deps = {"fetch_user": fetch_user}
    result = create_workflow(deps, on_event=collector.handle_event)(main)
    saved = stringify_state(collector.get_state(), {"workflow_id": "wf-123"})
    assert fetched == ["user:1", "posts:1"]

    resumed = parse_state(saved)
    assert resumed.metadata == {"workflow_id": "wf-123"}
    again = create_workflow(deps, resume_state=resumed)(main)
    assert again == result
    assert fetched == ["user:1", "posts:1"]
