"""``create_workflow``: run a body whose keyed steps are saved and resumed.

awaitly's steps trust the key alone: a keyed step found in ``resume_state``
or the ``cache`` is returned without running (the step engine's ``pin``
rule), a step that raises is never saved, and the step events come from
the engine's :class:`~awaitly_nb.core.engine.StepEvents`, so notebooks and
workflows report steps the same way.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from typing import Any, Protocol, TypeAlias, TypeVar, cast, overload, runtime_checkable

from awaitly_nb.core.engine import StepEngine, StepEvents, StepSpec
from awaitly_nb.core.events import Event, WorkflowError, WorkflowStart, WorkflowSuccess
from awaitly_nb.core.payload import StepPayload
from awaitly_nb.core.state import StepEntry, StepMeta, WorkflowState
from awaitly_nb.errors import AwaitlyError, CacheWarning, warn
from awaitly_nb.storage.names import check_name

__all__ = ["EngineCache", "StepCache", "Workflow", "create_workflow"]

T = TypeVar("T")

_MISSING: Any = object()


@runtime_checkable
class StepCache(Protocol):
    """awaitly's ``StepCache``: what ``cache=`` accepts besides a plain mapping."""

    def get(self, key: str) -> Any: ...
    def set(self, key: str, value: Any) -> None: ...
    def has(self, key: str) -> bool: ...
    def delete(self, key: str) -> bool: ...
    def clear(self) -> None: ...


class EngineCache:
    """awaitly's ``StepCache`` over the step store that notebooks use.

    ``create_workflow(cache=step_cache())`` saves a workflow's keyed steps where
    ``%%step`` and ``step(fn, ...)`` save theirs, in the current workflow (see
    :func:`~awaitly_nb.configure`): ``%steps``, the widget and the CLI list them,
    and the session's listeners get their events. Like awaitly, a workflow
    trusts the key alone: ``get`` returns any value saved by a call step with
    that key (a notebook's ``step(fn, key=...)`` too). A notebook takes the
    workflow's values with ``step(fn, key=..., pin=True)``: saved without the
    notebook's code, they cannot be compared with it.
    """

    def __init__(self, engine: StepEngine) -> None:
        self.engine = engine

    def _spec(self, key: str, **options: Any) -> StepSpec:
        return StepSpec(check_name(key), "call", pin=True, **options)

    def get(self, key: str) -> StepEntry | None:
        decision = self.engine.lookup(self._spec(key))
        if not decision.hit or decision.payload is None or decision.manifest is None:
            return None
        meta = decision.manifest
        return StepEntry(decision.payload.value, StepMeta(meta.saved_at, meta.duration_ms))

    def set(self, key: str, value: Any) -> None:
        meta = value.meta if isinstance(value, StepEntry) else None
        value = value.value if isinstance(value, StepEntry) else value
        run = self.engine.begin(self.engine.lookup(self._spec(key, force=True)))
        if meta is not None:  # the workflow timed the run; the engine only the save
            run = run._replace(started=run.started - meta.duration_ms / 1000)
        self.engine.finish(run, StepPayload(value=value))

    def has(self, key: str) -> bool:
        entry = self.engine.store.entry(self.engine.workflow_id(), check_name(key))
        return entry is not None and entry.manifest.kind == "call"

    def delete(self, key: str) -> bool:
        return self.has(key) and self.engine.forget(key)

    def clear(self) -> None:
        """Forget the call steps of the workflow (cells and blocks stay)."""
        for manifest in self.engine.steps():
            if manifest.kind == "call":
                self.engine.forget(manifest.key)


ResumeState: TypeAlias = (
    WorkflowState
    | Callable[[], WorkflowState | None]
    | Callable[[], Awaitable[WorkflowState | None]]
    | None
)


class _CacheView:
    """One way to look up and store entries, whatever kind of cache was given."""

    def __init__(self, cache: StepCache | MutableMapping[str, Any]) -> None:
        self.cache = cache
        self.mapping = cache if isinstance(cache, MutableMapping) else None
        if self.mapping is None and not (
            callable(getattr(cache, "get", None)) and callable(getattr(cache, "set", None))
        ):
            raise TypeError(
                "cache= takes a dict (or any MutableMapping), create_file_cache(...), "
                f"or an object with get/set/has/delete/clear; got {type(cache).__name__}"
            )

    def lookup(self, key: str) -> StepEntry | None:
        if self.mapping is not None:
            found = self.mapping.get(key, _MISSING)
            if found is _MISSING:
                return None
        else:
            found = cast(StepCache, self.cache).get(key)
            if found is None:
                return None
        if isinstance(found, StepEntry):
            return found
        return StepEntry(found, StepMeta(saved_at=0.0))  # a value put there by hand

    def store(self, key: str, entry: StepEntry) -> None:
        if self.mapping is not None:
            self.mapping[key] = entry
        else:
            cast(StepCache, self.cache).set(key, entry)


class _Run:
    """The bookkeeping of one workflow run, shared by the sync and async step."""

    def __init__(self, workflow: Workflow, resume: WorkflowState | None) -> None:
        self.workflow_id = workflow.workflow_id or uuid.uuid4().hex
        self.events = StepEvents(self.workflow_id, workflow._emit if workflow.on_event else None)
        self._emit = workflow._emit
        self.resume = resume
        self.cache = workflow._cache

    def emit(self, event: Event) -> None:
        self._emit(event)

    def lookup(self, key: str, name: str | None) -> StepEntry | None:
        entry = None
        if self.resume is not None:
            entry = self.resume.steps.get(key)
        if entry is None and self.cache is not None:
            entry = self.cache.lookup(key)
        if entry is not None:
            self.events.hit(key, entry.value, entry.meta, name=name)
        elif self.resume is not None or self.cache is not None:
            self.events.miss(key, name=name)
        return entry

    def begin(self, key: str | None, name: str | None) -> float:
        return self.events.start(key, name=name)

    def fail(self, key: str | None, name: str | None, started: float, error: BaseException) -> None:
        self.events.fail(key, started, error, name=name)

    def succeed(self, key: str | None, name: str | None, started: float, value: Any) -> None:
        duration_ms = self.events.success(key, started, value, name=name)
        if key is None:
            return
        meta = StepMeta(saved_at=time.time(), duration_ms=duration_ms, name=name)
        if self.cache is not None:
            try:
                self.cache.store(key, StepEntry(value, meta))
            except Exception as exc:  # unpicklable, disk full, a cache that refuses
                warn(
                    f"step {key!r} ran but its value cannot be saved, so it is not "
                    f"recorded as complete: {exc}",
                    CacheWarning,
                )
                return
        self.events.complete(key, value, meta, name=name)


def _check_step_args(fn: Any, key: Any) -> str | None:
    if key is not None:
        key = check_name(key)
    if not callable(fn):
        raise TypeError(
            f"step() takes a function to call, got {type(fn).__name__}; "
            "wrap the work in a lambda: step(lambda: fetch_user('1'), key='user:1')"
        )
    return key  # type: ignore[no-any-return]


def _wants_deps(body: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(body).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = 0
    for p in params:
        if p.kind is p.VAR_POSITIONAL:
            return True
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            positional += 1
    return positional >= 2


def _is_async_callable(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    )


class Workflow:
    """A configured workflow; call it with a body to run it.

    ``workflow(body)`` calls ``body(step)`` (or ``body(step, deps)`` when the
    body takes two parameters) and returns what the body returns. With an
    ``async def`` body the call returns an awaitable and ``step`` must be
    awaited inside. Build one with :func:`create_workflow`.
    """

    def __init__(
        self,
        deps: Any = None,
        *,
        on_event: Callable[[Event], Any] | None = None,
        resume_state: ResumeState = None,
        cache: StepCache | MutableMapping[str, Any] | None = None,
        workflow_id: str | None = None,
    ) -> None:
        if on_event is not None and not callable(on_event):
            raise TypeError("on_event must be a function taking one event")
        if workflow_id is not None and not isinstance(workflow_id, str):
            raise TypeError("workflow_id must be a string")
        if not (
            resume_state is None
            or isinstance(resume_state, WorkflowState)
            or callable(resume_state)
        ):
            raise TypeError(
                "resume_state= takes a WorkflowState (e.g. parse_state(text)), a function "
                f"returning one, or an async function; got {type(resume_state).__name__}"
            )
        self.deps = deps
        self.on_event = on_event
        self.resume_state = resume_state
        self.workflow_id = workflow_id
        self._cache = None if cache is None else _CacheView(cache)

    @property
    def cache(self) -> Any:
        """The cache given to :func:`create_workflow`, or None."""
        return None if self._cache is None else self._cache.cache

    def _emit(self, event: Event) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(event)
        except Exception as exc:
            warn(
                f"on_event handler raised {type(exc).__name__}: {exc} "
                f"(while handling {event.type}); the workflow goes on",
                RuntimeWarning,
            )

    def _check_resume(self, value: Any) -> WorkflowState | None:
        if value is None or isinstance(value, WorkflowState):
            return value
        raise TypeError(
            f"resume_state returned {type(value).__name__}; it must return a "
            "WorkflowState (e.g. parse_state(text)) or None"
        )

    def _resume_sync(self) -> WorkflowState | None:
        source = self.resume_state
        if not callable(source):
            return source
        value = source()
        if inspect.isawaitable(value):
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                value = asyncio.run(_await(value))
            else:
                if inspect.iscoroutine(value):
                    value.close()
                raise AwaitlyError(
                    "resume_state is async but the workflow body is not, and an event loop "
                    "is already running (as in Jupyter); use an `async def` body and "
                    "`await workflow(body)`"
                )
        return self._check_resume(value)

    async def _resume_async(self) -> WorkflowState | None:
        source = self.resume_state
        if not callable(source):
            return source
        value = source()
        if inspect.isawaitable(value):
            value = await value
        return self._check_resume(value)

    @overload
    def __call__(self, body: Callable[..., Coroutine[Any, Any, T]]) -> Coroutine[Any, Any, T]: ...
    @overload
    def __call__(self, body: Callable[..., T]) -> T: ...

    def __call__(self, body: Callable[..., Any]) -> Any:
        if not callable(body):
            raise TypeError(f"a workflow runs a function body(step), got {type(body).__name__}")
        if _is_async_callable(body):
            return self._run_async(body)
        return self._run_sync(body)

    def _start(self, run: _Run) -> float:
        run.emit(WorkflowStart(workflow_id=run.workflow_id, ts=time.time()))
        return time.perf_counter()

    def _finish(
        self, run: _Run, started: float, value: Any = None, error: BaseException | None = None
    ) -> None:
        duration_ms = (time.perf_counter() - started) * 1000
        if error is None:
            run.emit(
                WorkflowSuccess(
                    workflow_id=run.workflow_id,
                    ts=time.time(),
                    duration_ms=duration_ms,
                    value=value,
                )
            )
        else:
            run.emit(
                WorkflowError(
                    workflow_id=run.workflow_id,
                    ts=time.time(),
                    duration_ms=duration_ms,
                    error=error,
                )
            )

    def _run_sync(self, body: Callable[..., Any]) -> Any:
        run = _Run(self, self._resume_sync())

        def step(fn: Callable[[], T], key: str | None = None, name: str | None = None) -> T:
            key = _check_step_args(fn, key)
            if key is not None:
                entry = run.lookup(key, name)
                if entry is not None:
                    return entry.value  # type: ignore[no-any-return]
            started = run.begin(key, name)
            try:
                value = fn()
            except BaseException as exc:
                run.fail(key, name, started, exc)
                raise
            if inspect.isawaitable(value):
                if inspect.iscoroutine(value):
                    value.close()
                error = TypeError(
                    "the step function returned an awaitable inside a sync workflow body; "
                    "use an `async def` body and `await step(...)`"
                )
                run.fail(key, name, started, error)
                raise error
            run.succeed(key, name, started, value)
            return value

        started = self._start(run)
        try:
            value = body(step, self.deps) if _wants_deps(body) else body(step)
        except BaseException as exc:
            self._finish(run, started, error=exc)
            raise
        self._finish(run, started, value=value)
        return value

    async def _run_async(self, body: Callable[..., Any]) -> Any:
        run = _Run(self, await self._resume_async())

        async def step(fn: Any, key: str | None = None, name: str | None = None) -> Any:
            is_awaitable = inspect.isawaitable(fn)
            key = check_name(key) if is_awaitable and key is not None else key
            if not is_awaitable:
                key = _check_step_args(fn, key)
            if key is not None:
                entry = run.lookup(key, name)
                if entry is not None:
                    if inspect.iscoroutine(fn):
                        fn.close()
                    return entry.value
            started = run.begin(key, name)
            try:
                value = fn if is_awaitable else fn()
                if inspect.isawaitable(value):
                    value = await value
            except BaseException as exc:
                run.fail(key, name, started, exc)
                raise
            run.succeed(key, name, started, value)
            return value

        started = self._start(run)
        try:
            value = await (body(step, self.deps) if _wants_deps(body) else body(step))
        except BaseException as exc:
            self._finish(run, started, error=exc)
            raise
        self._finish(run, started, value=value)
        return value

    def __repr__(self) -> str:
        return f"Workflow(workflow_id={self.workflow_id!r}, cache={self.cache!r})"


async def _await(value: Awaitable[T]) -> T:
    return await value


def create_workflow(
    deps: Any = None,
    *,
    on_event: Callable[[Event], Any] | None = None,
    resume_state: ResumeState = None,
    cache: StepCache | MutableMapping[str, Any] | None = None,
    workflow_id: str | None = None,
) -> Workflow:
    """Create a workflow (awaitly's ``createWorkflow``).

    Args:
        deps: anything; passed as the body's second argument if it takes two.
        on_event: called with every :mod:`event <awaitly_nb.core.events>`.
        resume_state: a :class:`WorkflowState`, a function returning one (or
            None), or an async function; evaluated at the start of each run.
            Its steps are returned without running.
        cache: a dict, :func:`create_file_cache`, or any object with
            ``get/set/has/delete/clear``; keyed steps are looked up in it and
            saved to it.
        workflow_id: the id carried by events (a random one per run if None).

    A keyed step found in ``resume_state`` or ``cache`` returns its saved value
    without calling its function; a step that raises is never saved.

    >>> calls = []
    >>> def fetch_user(user_id):
    ...     calls.append(user_id)
    ...     return {"id": user_id}
    >>> cache = {}
    >>> workflow = create_workflow({"fetch_user": fetch_user}, cache=cache)
    >>> def main(step, deps):
    ...     return step(lambda: deps["fetch_user"]("1"), key="user:1")
    >>> workflow(main), workflow(main), calls
    ({'id': '1'}, {'id': '1'}, ['1'])
    """
    return Workflow(
        deps, on_event=on_event, resume_state=resume_state, cache=cache, workflow_id=workflow_id
    )
