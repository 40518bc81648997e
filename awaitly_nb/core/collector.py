"""``create_step_collector``: gather a workflow's completed steps from its events."""

from __future__ import annotations

from awaitly_nb.core.events import Event
from awaitly_nb.core.state import StepEntry, WorkflowState

__all__ = ["StepCollector", "create_step_collector"]


class StepCollector:
    """Records every keyed step that completes or is restored.

    Pass :meth:`handle_event` as ``on_event``; :meth:`get_state` then returns
    the completed steps. Unlike awaitly's collector it also records cache
    hits, so the state gathered during a resumed run holds every completed
    step, not only those that ran this time.
    """

    def __init__(self) -> None:
        self._steps: dict[str, StepEntry] = {}

    def handle_event(self, event: Event) -> None:
        """Record ``step_complete`` and ``step_cache_hit`` events; ignore the rest."""
        if event.type == "step_complete" or event.type == "step_cache_hit":
            self._steps[event.step_key] = StepEntry(event.value, event.meta)

    def get_state(self) -> WorkflowState:
        """A snapshot of the steps recorded so far (later events do not change it)."""
        return WorkflowState(dict(self._steps))

    def clear(self) -> None:
        """Forget every recorded step."""
        self._steps.clear()

    def __len__(self) -> int:
        return len(self._steps)


def create_step_collector() -> StepCollector:
    """Create a collector to pass as ``on_event=collector.handle_event``.

    >>> from awaitly_nb import create_workflow
    >>> collector = create_step_collector()
    >>> workflow = create_workflow(on_event=collector.handle_event)
    >>> workflow(lambda step: step(lambda: 42, key="answer"))
    42
    >>> collector.get_state()["answer"].value
    42
    """
    return StepCollector()
