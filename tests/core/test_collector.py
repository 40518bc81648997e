"""create_step_collector: handle_event, get_state (a snapshot), clear; cache hits count."""

from __future__ import annotations

from typing import Any

import pytest

from awaitly_nb import (
    StepEntry,
    StepMeta,
    WorkflowState,
    create_step_collector,
    create_workflow,
    parse_state,
    stringify_state,
)


def test_collects_completed_keyed_steps_with_value_and_meta() -> None:
    collector = create_step_collector()
    workflow = create_workflow(on_event=collector.handle_event)
    workflow(lambda step: [step(lambda: {"id": 1}, key="user:1", name="user"), step(lambda: 2)])
    state = collector.get_state()
    assert isinstance(state, WorkflowState)
    assert list(state.steps) == ["user:1"]
    assert state["user:1"].value == {"id": 1}
    assert state["user:1"].meta.name == "user"
    assert state["user:1"].meta.saved_at > 0
    assert len(collector) == 1


def test_records_cache_hits_so_a_resumed_run_holds_every_completed_step() -> None:
    first = create_step_collector()
    create_workflow(on_event=first.handle_event)(lambda step: step(lambda: "A", key="a"))
    restored = parse_state(stringify_state(first.get_state()))

    calls: list[str] = []

    def main(step: Any) -> Any:
        a = step(lambda: calls.append("a") or "A again", key="a")
        b = step(lambda: calls.append("b") or "B", key="b")
        return a, b

    second = create_step_collector()
    result = create_workflow(on_event=second.handle_event, resume_state=restored)(main)
    assert result == ("A", "B")
    assert calls == ["b"]
    state = second.get_state()
    assert set(state.steps) == {"a", "b"}
    assert state["a"].value == "A"
    assert state["a"].meta == restored["a"].meta


def test_records_cache_hits_from_a_cache() -> None:
    cache = {"k": StepEntry("cached", StepMeta(5.0))}
    collector = create_step_collector()
    create_workflow(on_event=collector.handle_event, cache=cache)(
        lambda step: step(lambda: "fresh", key="k")
    )
    assert collector.get_state()["k"].value == "cached"


def test_get_state_returns_a_snapshot() -> None:
    collector = create_step_collector()
    workflow = create_workflow(on_event=collector.handle_event)
    workflow(lambda step: step(lambda: 1, key="a"))
    snapshot = collector.get_state()
    workflow(lambda step: step(lambda: 2, key="b"))
    assert list(snapshot.steps) == ["a"]
    assert set(collector.get_state().steps) == {"a", "b"}
    snapshot.steps.clear()
    assert len(collector.get_state()) == 2


def test_clear_forgets_every_step() -> None:
    collector = create_step_collector()
    create_workflow(on_event=collector.handle_event)(lambda step: step(lambda: 1, key="a"))
    assert len(collector.get_state()) == 1
    collector.clear()
    assert len(collector.get_state()) == 0
    assert len(collector) == 0


def test_handle_event_ignores_other_events() -> None:
    collector = create_step_collector()

    def fail() -> None:
        raise ValueError

    with pytest.raises(ValueError):
        create_workflow(on_event=collector.handle_event, cache={})(
            lambda step: (step(lambda: 1), step(fail, key="bad"))
        )
    assert len(collector.get_state()) == 0


def test_rerun_replaces_the_collected_value() -> None:
    collector = create_step_collector()
    workflow = create_workflow(on_event=collector.handle_event)
    workflow(lambda step: step(lambda: "old", key="k"))
    workflow(lambda step: step(lambda: "new", key="k"))
    assert collector.get_state()["k"].value == "new"
