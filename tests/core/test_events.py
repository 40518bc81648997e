"""Workflow events: frozen dataclasses with awaitly's names, emitted in awaitly's order."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import pytest

from awaitly_nb import (
    StepCacheHit,
    StepCacheMiss,
    StepComplete,
    StepEntry,
    StepError,
    StepMeta,
    StepStart,
    StepSuccess,
    WorkflowError,
    WorkflowStart,
    WorkflowState,
    WorkflowSuccess,
    create_workflow,
)


def run_recording(body: Any, **options: Any) -> list[Any]:
    events: list[Any] = []
    workflow = create_workflow(on_event=events.append, **options)
    try:
        result = workflow(body)
        if asyncio.iscoroutine(result):
            asyncio.run(result)
    except Exception:
        pass
    return events


def types_of(events: list[Any]) -> list[str]:
    return [e.type for e in events]


# --- the event classes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "type_name", "fields"),
    [
        (WorkflowStart, "workflow_start", {"workflow_id", "ts"}),
        (WorkflowSuccess, "workflow_success", {"workflow_id", "ts", "duration_ms", "value"}),
        (WorkflowError, "workflow_error", {"workflow_id", "ts", "duration_ms", "error"}),
        (StepStart, "step_start", {"workflow_id", "ts", "step_key", "name"}),
        (
            StepSuccess,
            "step_success",
            {"workflow_id", "ts", "step_key", "name", "duration_ms", "value"},
        ),
        (
            StepError,
            "step_error",
            {"workflow_id", "ts", "step_key", "name", "duration_ms", "error"},
        ),
        (
            StepComplete,
            "step_complete",
            {"workflow_id", "ts", "step_key", "name", "duration_ms", "value"},
        ),
        (StepCacheHit, "step_cache_hit", {"workflow_id", "ts", "step_key", "name", "value"}),
        (StepCacheMiss, "step_cache_miss", {"workflow_id", "ts", "step_key", "name"}),
    ],
)
def test_event_classes_have_awaitly_names_and_fields(
    cls: type, type_name: str, fields: set[str]
) -> None:
    assert dataclasses.is_dataclass(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    assert "type" in names
    assert fields <= names
    assert cls.__dataclass_fields__["type"].default == type_name  # type: ignore[attr-defined]


def test_emitted_events_are_frozen() -> None:
    events = run_recording(lambda step: step(lambda: 1, key="k"), cache={})
    assert len(events) == 6
    for event in events:
        with pytest.raises(dataclasses.FrozenInstanceError):
            event.workflow_id = "changed"
        with pytest.raises(dataclasses.FrozenInstanceError):
            event.type = "something_else"


# --- sequences -------------------------------------------------------------------------------


def test_keyed_miss_with_a_cache_emits_the_full_sequence() -> None:
    events = run_recording(lambda step: step(lambda: {"id": 1}, key="user:1"), cache={})
    assert types_of(events) == [
        "workflow_start",
        "step_cache_miss",
        "step_start",
        "step_success",
        "step_complete",
        "workflow_success",
    ]
    miss, start, success, complete, done = events[1:]
    assert miss.step_key == start.step_key == success.step_key == complete.step_key == "user:1"
    assert success.value == complete.value == {"id": 1}
    assert done.value == {"id": 1}


def test_keyed_miss_with_resume_state_only_emits_cache_miss() -> None:
    events = run_recording(lambda step: step(lambda: 1, key="k"), resume_state=WorkflowState())
    assert types_of(events) == [
        "workflow_start",
        "step_cache_miss",
        "step_start",
        "step_success",
        "step_complete",
        "workflow_success",
    ]


def test_keyed_step_without_cache_or_resume_state_has_no_cache_events() -> None:
    events = run_recording(lambda step: step(lambda: 1, key="k"))
    assert types_of(events) == [
        "workflow_start",
        "step_start",
        "step_success",
        "step_complete",
        "workflow_success",
    ]


def test_hit_emits_only_step_cache_hit_for_that_step() -> None:
    cache: dict[str, Any] = {}
    run_recording(lambda step: step(lambda: "v", key="k", name="load"), cache=cache)
    events = run_recording(lambda step: step(lambda: "v", key="k", name="load"), cache=cache)
    assert types_of(events) == ["workflow_start", "step_cache_hit", "workflow_success"]
    hit = events[1]
    assert hit.step_key == "k"
    assert hit.name == "load"
    assert hit.value == "v"
    assert hit.meta.name == "load"


def test_hit_from_resume_state_carries_the_saved_meta() -> None:
    meta = StepMeta(saved_at=123.0, duration_ms=4.5, name="n")
    state = WorkflowState({"k": StepEntry("saved", meta)})
    events = run_recording(lambda step: step(lambda: "fresh", key="k"), resume_state=state)
    assert types_of(events) == ["workflow_start", "step_cache_hit", "workflow_success"]
    assert events[1].meta == meta
    assert events[1].value == "saved"


def test_unkeyed_step_has_no_cache_events_and_no_step_complete() -> None:
    events = run_recording(lambda step: step(lambda: 1, name="plain"), cache={})
    assert types_of(events) == ["workflow_start", "step_start", "step_success", "workflow_success"]
    assert events[1].step_key is None
    assert events[1].name == "plain"


def test_failing_step_and_body_give_step_error_then_workflow_error() -> None:
    error = ValueError("bad")

    def fail() -> None:
        raise error

    events = run_recording(lambda step: step(fail, key="k"), cache={})
    assert types_of(events) == [
        "workflow_start",
        "step_cache_miss",
        "step_start",
        "step_error",
        "workflow_error",
    ]
    assert events[3].error is error
    assert events[4].error is error
    assert events[3].duration_ms >= 0


def test_failing_body_without_steps_gives_workflow_error() -> None:
    error = RuntimeError("body")

    def main(step: Any) -> None:
        raise error

    events = run_recording(main)
    assert types_of(events) == ["workflow_start", "workflow_error"]
    assert events[1].error is error


def test_async_body_emits_the_same_sequence() -> None:
    async def work() -> int:
        return 2

    async def main(step: Any) -> Any:
        return await step(work, key="k"), await step(lambda: 3)

    events = run_recording(main, cache={})
    assert types_of(events) == [
        "workflow_start",
        "step_cache_miss",
        "step_start",
        "step_success",
        "step_complete",
        "step_start",
        "step_success",
        "workflow_success",
    ]
    assert events[-1].value == (2, 3)


def test_several_steps_in_order() -> None:
    cache = {"b": StepEntry("B", StepMeta(1.0))}
    events = run_recording(
        lambda step: [step(lambda: "A", key="a"), step(lambda: "x", key="b"), step(lambda: "C")],
        cache=cache,
    )
    assert [(e.type, getattr(e, "step_key", None)) for e in events] == [
        ("workflow_start", None),
        ("step_cache_miss", "a"),
        ("step_start", "a"),
        ("step_success", "a"),
        ("step_complete", "a"),
        ("step_cache_hit", "b"),
        ("step_start", None),
        ("step_success", None),
        ("workflow_success", None),
    ]
    assert events[-1].value == ["A", "B", "C"]


# --- ids and times ---------------------------------------------------------------------------


def test_given_workflow_id_is_carried_by_every_event() -> None:
    events = run_recording(
        lambda step: [step(lambda: 1, key="a"), step(lambda: 2)], cache={}, workflow_id="wf-123"
    )
    assert len(events) > 4
    assert {e.workflow_id for e in events} == {"wf-123"}


def test_without_workflow_id_each_run_gets_its_own_random_id() -> None:
    events: list[Any] = []
    workflow = create_workflow(on_event=events.append)
    workflow(lambda step: step(lambda: 1, key="a"))
    first = {e.workflow_id for e in events}
    events.clear()
    workflow(lambda step: step(lambda: 1, key="a"))
    second = {e.workflow_id for e in events}
    assert len(first) == len(second) == 1
    (first_id,) = first
    (second_id,) = second
    assert isinstance(first_id, str)
    assert first_id
    assert first_id != second_id


def test_workflow_id_must_be_a_string() -> None:
    with pytest.raises(TypeError, match="workflow_id"):
        create_workflow(workflow_id=123)  # type: ignore[arg-type]


def test_events_carry_timestamps_and_durations() -> None:
    before = time.time()
    events = run_recording(lambda step: step(lambda: 1, key="k"), cache={})
    after = time.time()
    assert all(before <= e.ts <= after for e in events)
    assert [e.ts for e in events] == sorted(e.ts for e in events)
    timed = {e.type: e.duration_ms for e in events if hasattr(e, "duration_ms")}
    assert set(timed) == {"step_success", "step_complete", "workflow_success"}
    assert all(duration >= 0 for duration in timed.values())
    complete = next(e for e in events if e.type == "step_complete")
    assert before <= complete.meta.saved_at <= after
