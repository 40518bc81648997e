"""What state each step is in this session: the data behind ``%steps`` and the widget.

A :class:`StatusTracker` follows the session's events; :meth:`StatusTracker.rows`
merges what it saw with the saved manifests into one :class:`StepStatus` per step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from awaitly_nb.core.events import Event
from awaitly_nb.storage.manifest import StepManifest

__all__ = ["STATES", "State", "StatusTracker", "StepStatus"]

State = Literal["complete", "running", "restored", "stale", "failed", "not run yet"]
STATES: tuple[State, ...] = ("complete", "running", "restored", "stale", "failed", "not run yet")


@dataclass(frozen=True)
class StepStatus:
    """One row of the status view.

    Attributes:
        key: the step's key.
        state: ``complete`` (saved), ``running``, ``restored`` (this session),
            ``stale`` (its code changed; about to run again), ``failed`` (its
            last run raised; nothing saved) or ``not run yet`` (forgotten, or
            not saved yet).
        saved_at: when the saved entry was written (epoch seconds), if saved.
        duration_ms: how long the original run took, if saved.
        replay_ms: how long restoring it took this session, if restored.
        size: bytes of the saved entry, if saved.
        variables: the variables it saves.
        error: the error of a failed run.
        why: why it was stale and ran again this session (``t changed (5 → 6)``).
        variants: how many variants (by code and inputs) the store keeps for it.
    """

    key: str
    state: State
    saved_at: float | None = None
    duration_ms: float | None = None
    replay_ms: float | None = None
    size: int | None = None
    variables: tuple[str, ...] = ()
    error: str | None = None
    why: str | None = None
    variants: int = 0


@dataclass
class _Seen:
    state: State
    replay_ms: float | None = None
    error: str | None = None
    order: int = 0
    why: str | None = None


@dataclass
class StatusTracker:
    """Follows step events; knows each step's state and the time replays saved.

    >>> from awaitly_nb.core.events import StepStart
    >>> tracker = StatusTracker()
    >>> tracker.handle_event(StepStart(workflow_id="nb", ts=0.0, step_key="load"))
    >>> [(row.key, row.state) for row in tracker.rows("nb", [])]
    [('load', 'running')]
    """

    seen: dict[tuple[str, str], _Seen] = field(default_factory=dict)
    time_saved_ms: float = 0.0
    restores: int = 0
    _order: int = 0

    def _set(self, workflow: str, key: str, state: State, **extra: Any) -> None:
        self._order += 1
        before = self.seen.get((workflow, key))
        if "why" not in extra and state in ("running", "complete", "failed") and before:
            extra["why"] = before.why  # the run a stale entry started: keep why it ran
        self.seen[(workflow, key)] = _Seen(state, order=self._order, **extra)

    def handle_event(self, event: Event) -> None:
        """Update the state of the step the event is about."""
        key = getattr(event, "step_key", None)
        if key is None:
            return
        workflow = event.workflow_id
        if event.type == "step_start":
            self._set(workflow, key, "running")
        elif event.type == "step_complete":
            self._set(workflow, key, "complete")
        elif event.type == "step_error":
            self._set(workflow, key, "failed", error=f"{type(event.error).__name__}: {event.error}")
        elif event.type == "step_cache_hit":
            self._set(workflow, key, "restored", replay_ms=event.duration_ms)
            self.restores += 1
            self.time_saved_ms += max(0.0, event.meta.duration_ms - event.duration_ms)
        elif event.type == "step_cache_miss" and event.reason == "stale":
            self._set(workflow, key, "stale", why=event.detail)

    def not_saved(self, workflow: str, key: str, reason: str) -> None:
        """The step ran but could not be saved."""
        self._set(workflow, key, "failed", error=f"ran, but not saved: {reason}")

    def drop(self, workflow: str, key: str) -> None:
        """Stop showing a step at all (a keyless cell's entry for its old code)."""
        self.seen.pop((workflow, key), None)

    def forgot(self, workflow: str, key: str) -> None:
        """The step's saved entry was deleted."""
        self._set(workflow, key, "not run yet")

    def rows(
        self,
        workflow: str,
        manifests: list[StepManifest],
        variants: Mapping[str, int] | None = None,
    ) -> list[StepStatus]:
        """One row per step of ``workflow``: saved ones (oldest first), then the others seen.

        ``variants`` counts the variants kept per key.
        """
        variants = variants or {}
        rows = []
        saved = {m.key: m for m in manifests}
        for key, manifest in saved.items():
            seen = self.seen.get((workflow, key))
            state: State = "complete"
            if seen is not None and seen.state != "not run yet":
                state = seen.state
            rows.append(
                StepStatus(
                    key=key,
                    state=state,
                    saved_at=manifest.saved_at,
                    duration_ms=manifest.duration_ms,
                    replay_ms=seen.replay_ms if seen is not None else None,
                    size=manifest.size,
                    variables=manifest.variables,
                    error=seen.error if seen is not None else None,
                    why=seen.why if seen is not None else None,
                    variants=variants.get(key, 0),
                )
            )
        unsaved = sorted(
            ((k, s) for (wf, k), s in self.seen.items() if wf == workflow and k not in saved),
            key=lambda item: item[1].order,
        )
        for key, seen in unsaved:
            state = seen.state if seen.state in ("running", "failed") else "not run yet"
            rows.append(replace(StepStatus(key=key, state=state), error=seen.error))
        return rows
