"""Workflow events, named as in awaitly.

Every event is a small frozen dataclass whose ``type`` field holds awaitly's
event name. Handlers passed as ``on_event=`` receive them in order:

- ``workflow_start`` / ``workflow_success`` / ``workflow_error`` around a run;
- for a keyed step that is found: only ``step_cache_hit``;
- otherwise ``step_cache_miss`` (keyed steps, when there is a cache or resume
  state to look in), ``step_start``, then ``step_success`` and, for keyed
  steps, ``step_complete`` — or ``step_error`` if the function raised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

from awaitly_nb.core.state import StepMeta

__all__ = [
    "Event",
    "StepCacheHit",
    "StepCacheMiss",
    "StepComplete",
    "StepError",
    "StepStart",
    "StepSuccess",
    "WorkflowError",
    "WorkflowStart",
    "WorkflowSuccess",
]


@dataclass(frozen=True, kw_only=True)
class WorkflowStart:
    """A workflow run began."""

    type: Literal["workflow_start"] = field(default="workflow_start", init=False)
    workflow_id: str
    ts: float


@dataclass(frozen=True, kw_only=True)
class WorkflowSuccess:
    """A workflow run returned ``value``."""

    type: Literal["workflow_success"] = field(default="workflow_success", init=False)
    workflow_id: str
    ts: float
    duration_ms: float
    value: Any = None


@dataclass(frozen=True, kw_only=True)
class WorkflowError:
    """A workflow run raised ``error``."""

    type: Literal["workflow_error"] = field(default="workflow_error", init=False)
    workflow_id: str
    ts: float
    duration_ms: float
    error: BaseException


@dataclass(frozen=True, kw_only=True)
class StepStart:
    """A step's function is about to run."""

    type: Literal["step_start"] = field(default="step_start", init=False)
    workflow_id: str
    ts: float
    step_key: str | None = None
    name: str | None = None


@dataclass(frozen=True, kw_only=True)
class StepSuccess:
    """A step's function returned ``value``."""

    type: Literal["step_success"] = field(default="step_success", init=False)
    workflow_id: str
    ts: float
    duration_ms: float
    step_key: str | None = None
    name: str | None = None
    value: Any = None


@dataclass(frozen=True, kw_only=True)
class StepError:
    """A step's function raised ``error``; nothing was saved."""

    type: Literal["step_error"] = field(default="step_error", init=False)
    workflow_id: str
    ts: float
    duration_ms: float
    error: BaseException
    step_key: str | None = None
    name: str | None = None


@dataclass(frozen=True, kw_only=True)
class StepComplete:
    """A keyed step finished and its value is saved; ``meta`` describes the entry."""

    type: Literal["step_complete"] = field(default="step_complete", init=False)
    workflow_id: str
    ts: float
    step_key: str
    duration_ms: float
    value: Any
    meta: StepMeta
    name: str | None = None


@dataclass(frozen=True, kw_only=True)
class StepCacheHit:
    """A keyed step was found saved; ``value`` is returned and the function does not run.

    ``duration_ms`` is how long restoring it took (0 when it was already in memory).
    """

    type: Literal["step_cache_hit"] = field(default="step_cache_hit", init=False)
    workflow_id: str
    ts: float
    step_key: str
    value: Any
    meta: StepMeta
    name: str | None = None
    duration_ms: float = 0.0


@dataclass(frozen=True, kw_only=True)
class StepCacheMiss:
    """A keyed step was looked up and not found; its function will run.

    ``reason`` says why a saved entry was not used: ``"stale"`` (its code,
    an input or a file it reads changed), ``"forced"`` or ``"unreadable"``;
    None when nothing was saved. ``detail`` says what changed
    (``"t changed (5 → 6)"``).
    """

    type: Literal["step_cache_miss"] = field(default="step_cache_miss", init=False)
    workflow_id: str
    ts: float
    step_key: str
    name: str | None = None
    reason: str | None = None
    detail: str | None = None


Event: TypeAlias = (
    WorkflowStart
    | WorkflowSuccess
    | WorkflowError
    | StepStart
    | StepSuccess
    | StepError
    | StepComplete
    | StepCacheHit
    | StepCacheMiss
)
"""Any workflow event; dispatch on ``event.type``."""
