"""What state each step is in this session: the data behind ``%steps`` and the widget.

The engine tells a :class:`StatusTracker` what each step did (the same moments as
awaitly's events, which are made only when someone listens);
:meth:`StatusTracker.rows` merges what it saw with the saved manifests into one
:class:`StepStatus` per step.
"""

from __future__ import annotations

from collections.abc import Mapping

TYPE_CHECKING = False  # typing is not imported at run time: see awaitly_nb._namedtuple
if TYPE_CHECKING:
    from typing import Any, Literal, NamedTuple

    from awaitly_nb.storage.manifest import StepManifest

    State = Literal["complete", "running", "restored", "stale", "failed", "not run yet"]
else:
    from awaitly_nb._namedtuple import NamedTuple

__all__ = ["STATES", "StatusTracker", "StepStatus"]

STATES: tuple[State, ...] = ("complete", "running", "restored", "stale", "failed", "not run yet")


class StepStatus(NamedTuple):
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


class _Seen:
    __slots__ = ("error", "order", "replay_ms", "state", "why")

    def __init__(
        self,
        state: State,
        *,
        order: int,
        replay_ms: float | None = None,
        error: str | None = None,
        why: str | None = None,
    ) -> None:
        self.state = state
        self.order = order
        self.replay_ms = replay_ms
        self.error = error
        self.why = why


class StatusTracker:
    """Knows each step's state this session and the time replays saved.

    >>> tracker = StatusTracker()
    >>> tracker.started("nb", "load")
    >>> [(row.key, row.state) for row in tracker.rows("nb", [])]
    [('load', 'running')]
    """

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], _Seen] = {}
        self.time_saved_ms = 0.0
        self.restores = 0
        self._order = 0

    def _set(self, workflow: str, key: str, state: State, **extra: Any) -> None:
        self._order += 1
        before = self.seen.get((workflow, key))
        if "why" not in extra and state in ("running", "complete", "failed") and before:
            extra["why"] = before.why  # the run a stale entry started: keep why it ran
        self.seen[(workflow, key)] = _Seen(state, order=self._order, **extra)

    def started(self, workflow: str, key: str) -> None:
        """The step's body is running (``step_start``)."""
        self._set(workflow, key, "running")

    def completed(self, workflow: str, key: str) -> None:
        """The step ran and was saved (``step_complete``)."""
        self._set(workflow, key, "complete")

    def failed(self, workflow: str, key: str, error: BaseException) -> None:
        """The step raised (``step_error``)."""
        self._set(workflow, key, "failed", error=f"{type(error).__name__}: {error}")

    def restored(self, workflow: str, key: str, replay_ms: float, original_ms: float) -> None:
        """The step was restored in ``replay_ms``; running it took ``original_ms``."""
        self._set(workflow, key, "restored", replay_ms=replay_ms)
        self.restores += 1
        self.time_saved_ms += max(0.0, original_ms - replay_ms)

    def stale(self, workflow: str, key: str, why: str | None) -> None:
        """A saved entry is not used because ``why`` changed; the step runs again."""
        self._set(workflow, key, "stale", why=why)

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
            rows.append(StepStatus(key=key, state=state, error=seen.error))
        return rows
