"""``step``: the with-block and the call form, for notebooks and plain scripts.

``with step("key"):`` skips its body on a hit. Python has no way to skip a
``with`` body, so on a hit ``__enter__`` sets a trace function on the caller's
frame that raises a private exception when the body's first line runs;
``__exit__`` swallows it, restores the variables and replays the output. The
previous tracer (a debugger, coverage) is put back at once.
"""

from __future__ import annotations

import ast
import functools
import inspect
import linecache
import os
import sys
import types
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import FrameType, TracebackType

from awaitly_nb.core import process
from awaitly_nb.core.digest import value_digest
from awaitly_nb.core.engine import Decision, StepEngine, StepSpec
from awaitly_nb.core.fingerprint import (
    code_fingerprint,
    function_fingerprint,
    global_names,
    parse,
)
from awaitly_nb.core.payload import StepPayload
from awaitly_nb.core.sharing import SHARED, shared_objects
from awaitly_nb.errors import AwaitlyError
from awaitly_nb.files import ReadRecorder, code_constants, literal_paths, named_paths
from awaitly_nb.notebook.capture import OutputRecorder, replay_outputs
from awaitly_nb.notebook.many import map_steps
from awaitly_nb.notebook.namespace import (
    assigned_names,
    definition_changes,
    definition_digests,
    is_internal_name,
    module_changes,
    module_digests,
    reach,
    step_inputs,
)
from awaitly_nb.notebook.restore import restore, set_definition_state, set_module_attributes
from awaitly_nb.notebook.running import (
    NotebookStep,
    bound_to,
    changed_inputs,
    changed_since,
    code_calls_seed,
    digests,
    reapply_process,
    rerun_note,
    show_note,
    state_inputs,
)
from awaitly_nb.notebook.shell import session_for_shell
from awaitly_nb.storage.names import check_name

TYPE_CHECKING = False  # typing is not imported at run time: see awaitly_nb._namedtuple
if TYPE_CHECKING:
    from typing import Any, TypeVar, overload

    T = TypeVar("T")

__all__ = ["StepBlock", "step"]


class _SkipBody(Exception):
    """Raised by the trace function to leave a restored ``with step(...)`` body unrun."""


def _names(value: str | Iterable[str] | None, what: str) -> list[str] | None:
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [n.strip() for n in items]
    if not names or not all(isinstance(n, str) and n.isidentifier() for n in names):
        raise ValueError(
            f"{what}= takes variable names, e.g. {what}=['df', 'model']; got {value!r}"
        )
    return names


def _with_body(frame: FrameType) -> list[ast.stmt] | None:
    """The statements of the ``with`` block that ``frame`` is entering, if its source is known."""
    lines = linecache.getlines(frame.f_code.co_filename, frame.f_globals)
    if not lines:
        return None
    try:
        tree = parse("".join(lines))
    except (SyntaxError, ValueError):
        return None
    line = frame.f_lineno
    best: ast.With | ast.AsyncWith | None = None
    for node in ast.walk(tree):
        if isinstance(node, _WITH) and node.lineno <= line < node.body[0].lineno:
            if best is None or node.lineno >= best.lineno:
                best = node
        elif isinstance(node, _WITH) and node.lineno == line == node.body[0].lineno:
            raise AwaitlyError(
                "put the body of `with step(...):` on its own lines; a body on the "
                "`with` line cannot be skipped"
            )
    return None if best is None else best.body


_WITH = (ast.With, ast.AsyncWith)


class StepBlock:
    """The context manager returned by ``step("key")``; see :func:`step`.

    ``async with step("key"):`` works where ``with`` does (a cell with top-level
    ``await``, a module's top level)."""

    def __init__(
        self,
        key: str,
        *,
        outputs: str | Iterable[str] | None = None,
        exclude: str | Iterable[str] | None = None,
        force: bool = False,
        pin: bool = False,
        quiet: bool = False,
        deps: str | Iterable[str] = (),
    ) -> None:
        self.key = check_name(key)
        self.deps = _deps(deps)
        self.outputs = _names(outputs, "outputs")
        self.exclude = set(_names(exclude, "exclude") or ())
        self.force, self.pin, self.quiet = force, pin, quiet
        self.restored = False
        self._frame: FrameType | None = None

    def __enter__(self) -> StepBlock:
        return self._enter(sys._getframe(1))

    async def __aenter__(self) -> StepBlock:
        return self._enter(sys._getframe(1))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        return self.__exit__(exc_type, exc, tb)

    def _enter(self, frame: FrameType) -> StepBlock:
        if frame.f_code.co_name != "<module>" or frame.f_locals is not frame.f_globals:
            raise AwaitlyError(
                "`with step(...)` and `async with step(...)` work at notebook or module "
                "level only; inside a function use the call form: "
                "value = step(work, arg, key=...), or value = await step(fetch, arg, key=...) "
                "for async work"
            )
        self._frame = frame
        body = _with_body(frame)
        session, shell = session_for_shell()
        reads, values = step_inputs(
            body or [],
            frame.f_globals,
            getattr(shell, "user_ns_hidden", None)
            if getattr(shell, "user_ns", None) is frame.f_globals
            else None,
            session.engine.own_module,
        )
        spec = StepSpec(
            key=self.key,
            kind="block",
            code=None
            if body is None
            else code_fingerprint(ast.unparse(ast.Module(body=body, type_ignores=[]))),
            reads=reads,
            values=values,
            deps=(
                *self.deps,
                *literal_paths(body or []),
                *named_paths(values.get(n) for n in reads),
            ),
            pin=self.pin,
            force=self.force,
        )
        self._body = body or []
        self._step = NotebookStep(
            spec,
            frame.f_globals,
            shell,
            outputs=self.outputs,
            exclude=self.exclude,
            quiet=self.quiet,
            hint='exclude="{names}" to step(...)',
            targets=None if body is None else assigned_names(body).bound,
        )
        if self._step.lookup().hit:
            self._previous_trace = sys.gettrace()
            self._previous_frame_trace = frame.f_trace
            # A global tracer (even one that does nothing) must be set for frame
            # tracing to run; a debugger's own stays in place if there is one.
            if self._previous_trace is None:
                sys.settrace(_no_trace)
            frame.f_trace = self._skip
            return self
        self._step.start(self._body)
        return self

    def _skip(self, frame: FrameType, event: str, arg: Any) -> Any:
        raise _SkipBody

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        frame, self._frame = self._frame, None
        assert frame is not None
        if hasattr(self, "_previous_trace"):
            frame.f_trace = self._previous_frame_trace
            sys.settrace(self._previous_trace)
            del self._previous_trace, self._previous_frame_trace
            self._step.restore()
            self.restored = True
            return exc_type is _SkipBody or exc_type is None
        # `with step(...) as s` binds the block itself: not an output.
        itself = {n for n, v in frame.f_globals.items() if v is self}
        self._step.end(exc, exclude=itself)
        return False


def _no_trace(frame: FrameType, event: str, arg: Any) -> None:
    return None


def _function_inputs(fn: Callable[..., Any]) -> tuple[frozenset[str], dict[str, Any]]:
    """What a step function reads: the globals its code names (compared by value).

    Variables it closes over are not inputs: a closure often holds state the
    step changes itself (a counter, a list of results), which would make it
    stale at every call; the key says what the call is for.
    """
    code = getattr(fn, "__code__", None)
    if not isinstance(code, types.CodeType):
        return frozenset(), {}
    names = global_names(code)
    globals_: dict[str, Any] = getattr(fn, "__globals__", {})
    values = {n: globals_[n] for n in names if n in globals_ and not is_internal_name(n)}
    return frozenset(values), values


def _callable_inputs(
    fn: Callable[..., Any], module_version: Callable[[str], str] | None = None
) -> dict[str, Any]:
    """What a callable holds besides its code and globals, compared by value.

    A bound method's object (``client.get``: ``client``), a callable object (its
    attributes, and its class's code), a function's default arguments (a
    partial's arguments: :func:`_unwrap`). Without them, ``step(client.get, 1, key=...)``
    would replay a value computed with another client. An object is compared as
    it was when a step first used it in this process (:class:`_FirstUse`).
    """
    label = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    if isinstance(fn, types.FunctionType):
        if fn.__defaults__ or fn.__kwdefaults__:
            return {f"{label}() defaults": (fn.__defaults__, fn.__kwdefaults__)}
        return {}
    if isinstance(fn, types.BuiltinFunctionType) and isinstance(
        getattr(fn, "__self__", None), (types.ModuleType, type(None))
    ):
        return {}  # len, math.sqrt: nothing of their own
    holder = fn.__self__ if isinstance(fn, types.MethodType) else fn
    # Input names must not be identifiers: digests look names up among the globals.
    use = _first_use(holder, getattr(fn, "__globals__", None), module_version)
    return {label if isinstance(fn, types.MethodType) else f"{label} object": use}


@dataclass(frozen=True)
class _FirstUse:
    """An object as a step first used it in this process, by digest.

    Calls change the objects they belong to (a client counts its requests, fills
    a cache); a replay makes no call. Comparing the object's state at each call
    would make every call after the first run again in a new kernel, so the
    state compared is the one it had when a step first used it: a rebound name
    (``client = Client("B")``) or an edited class is a new object, and a new
    kernel sees what the notebook's code made before the first step.
    """

    kind: str
    digest: str

    def __repr__(self) -> str:
        return f"{self.kind} {self.digest[:8]}"


_FIRST_USES: dict[int, tuple[weakref.ref[Any], _FirstUse]] = {}


def _first_use(
    obj: Any,
    namespace: Mapping[str, Any] | None,
    module_version: Callable[[str], str] | None,
) -> Any:
    """``obj``'s :class:`_FirstUse` (``obj`` itself if it cannot be digested or referenced
    weakly: then it is compared as it is now, or not by value)."""
    found = _FIRST_USES.get(id(obj))
    if found is not None and found[0]() is obj:
        return found[1]
    digest = value_digest(obj, namespace, module_version)
    if digest is None:
        return obj
    use = _FirstUse(type(obj).__qualname__, digest)
    key = id(obj)
    try:
        ref = weakref.ref(obj, lambda _: _FIRST_USES.pop(key, None))
    except TypeError:
        return use
    _FIRST_USES[key] = (ref, use)
    return use


def _unwrap(fn: Callable[..., Any]) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The function a ``functools.partial`` calls, and the arguments it adds (inputs:
    the function itself is compared as any function, closures left out)."""
    bound: dict[str, Any] = {}
    while isinstance(fn, functools.partial):
        name = getattr(fn.func, "__qualname__", type(fn.func).__qualname__)
        bound[f"partial({name}) arguments"] = (fn.args, fn.keywords)
        fn = fn.func
    return fn, bound


def _code_of(fn: Callable[..., Any]) -> str:
    """The fingerprint of a function's code; for a callable without code of its own (a
    partial, an object with ``__call__``) its type: the object itself is an input."""
    return function_fingerprint(fn) or f"callable:{type(fn).__module__}.{type(fn).__qualname__}"


def _deps(deps: str | Iterable[str]) -> tuple[str, ...]:
    items = [deps] if isinstance(deps, (str, os.PathLike)) else list(deps)
    if not all(isinstance(d, (str, os.PathLike)) for d in items):
        raise TypeError(f"deps= takes file paths or globs, e.g. deps=['data/*.csv']; got {deps!r}")
    return tuple(os.fspath(d) for d in items)


def call_step(
    fn: Callable[..., T],
    key: str,
    *,
    args: tuple[Any, ...] = (),
    kwargs: Mapping[str, Any] | None = None,
    force: bool = False,
    pin: bool = False,
    deps: str | Iterable[str] = (),
    like: Callable[..., Any] | None = None,
    quiet: bool = False,
    caller: dict[str, Any] | None = None,
) -> T:
    """Run ``fn(*args, **kwargs)`` once for ``key``; later calls (and later kernels) get
    the saved value.

    The arguments are inputs, compared by value like the globals ``fn`` uses
    (``args[0] changed (3 → 4)``). ``like``: the function whose code and globals
    identify the step, when ``fn`` is a wrapper around it
    (:func:`~awaitly_nb.notebook.many.map_steps`). A step that runs again though
    it was saved says why, unless ``quiet``. ``caller``: the globals of the code
    calling ``step``, where the variables the call changes in place (an argument,
    the object of ``clf.fit``) are bound again on a replay (default: ``fn``'s).
    """
    if not callable(fn):
        raise TypeError(f"step() takes a function to call, got {type(fn).__name__}")
    session, shell = session_for_shell()
    engine = session.engine
    target, bound = _unwrap(like or fn)
    reads, values = _function_inputs(target)
    kwargs = dict(kwargs or {})
    arguments = {
        **bound,
        **_callable_inputs(target, engine._module_version),
        **{f"args[{i}]": a for i, a in enumerate(args)},
        **{f"{name}=": a for name, a in kwargs.items()},
    }
    if arguments:
        reads, values = reads | arguments.keys(), {**values, **arguments}
    namespace = caller if caller is not None else getattr(target, "__globals__", None)
    shared = shared_objects(
        {n: values[n] for n in reads},
        namespace if isinstance(namespace, dict) else {},
        is_internal_name,
    )
    if shared is not None:  # one object under two names is not two equal values
        reads, values = reads | {SHARED}, {**values, SHARED: shared}
    spec = StepSpec(
        key=key,
        kind="call",
        code=_code_of(target),
        reads=reads,
        values=values,
        deps=(
            *_deps(deps),
            *named_paths(
                [
                    *(values.get(n) for n in reads),
                    *code_constants(getattr(target, "__code__", None)),
                ]
            ),
        ),
        pin=pin,
        force=force,
    )
    if _is_async(fn):
        return _call_async(fn, args, kwargs, spec, session, shell, quiet)  # type: ignore[return-value]
    decision = engine.lookup(spec)
    _say_why(decision, shell, quiet)
    if decision.hit:
        assert decision.payload is not None and decision.manifest is not None
        ReadRecorder.inherit([*decision.manifest.files, *decision.manifest.deps])
        if decision.manifest.extra.get("awaitable"):  # saved from `await step(lambda: coro())`
            return _ready(decision.payload, shell)  # type: ignore[return-value]
        reapply_process(key, decision.payload, shell)
        home = getattr(target, "__globals__", None)
        if decision.payload.variables and isinstance(home, dict):
            restore(home, decision.payload)  # what it changed in place, bound again
        problems = set_module_attributes(decision.payload.modules)
        if isinstance(home, dict):
            problems += set_definition_state(home, decision.payload.definitions)
        if problems:
            where = "; ".join(problems)
            show_note(f"{key!r} changed what it cannot set again here: {where}", shell)
        replay_outputs(list(decision.payload.outputs), shell)
        return decision.payload.value  # type: ignore[no-any-return]
    in_place = _InPlace(target, decision, caller, engine.own_module)
    run = engine.begin(decision)
    shown = OutputRecorder(shell)
    before = process.snapshot()
    try:
        with ReadRecorder(ignore=[session.store.directory]) as opened, shown:
            value = fn(*args, **kwargs)
    except BaseException as exc:
        engine.fail(run, exc)
        raise
    if inspect.isawaitable(value):  # step(lambda: fetch(x), key=...) to be awaited
        return _finish_async(value, run, engine, opened, shown)  # type: ignore[return-value]
    # What it changed in the process (it drew random numbers, set os.environ) is
    # saved and set again on a replay, as the code after the step sees it now.
    changed = process.changes(before, process.snapshot())
    code = getattr(target, "__code__", None)
    touched = in_place.changed(engine, values)
    parts = {**touched["definitions"], **touched["modules"]}
    engine.finish(
        run,
        StepPayload(value=value, outputs=tuple(shown.outputs), process=changed, **touched),
        # one that cannot be saved is left out, not an error
        optional={*touched["variables"], *(f"{n}.{p}" for n, ps in parts.items() for p in ps)},
        files=opened.files(),
        written=opened.written,
        inputs=state_inputs(
            before,
            changed,
            seeds=isinstance(code, types.CodeType) and code_calls_seed(code),
            namespace=getattr(target, "__globals__", {}),
        ),
    )
    return value


class _InPlace:
    """The data a call may change in place without returning it: the globals its
    function reaches (``log.append`` inside ``record()``, a ``rng`` it draws from), its
    arguments (``add_column(df)``), the object of a bound method (``clf.fit``), the
    state of the notebook's functions and classes (a memo default) and the data of
    your modules it reaches (``helpers.CACHE``). What changed is saved with the step
    and set again on a replay, as a cell's variables are (the same rules:
    :mod:`.running`): the function's globals in its module, the arguments and the
    object under the caller's names for them."""

    def __init__(
        self,
        target: Callable[..., Any],
        decision: Decision,
        caller: dict[str, Any] | None,
        own: Callable[[str], bool],
    ) -> None:
        home = getattr(target, "__globals__", None)
        self.home: dict[str, Any] | None = home if isinstance(home, dict) else None
        self.caller = caller if caller is not None else self.home
        self.decision = decision
        self.reached: dict[str, tuple[int, str]] = {}
        self.definitions: dict[str, tuple[int, dict[str, str | None]]] = {}
        self.modules: dict[str, dict[str, tuple[int, str | None]]] = {}
        holder = getattr(target, "__self__", None) if isinstance(target, types.MethodType) else None
        if self.home is not None:
            direct = [n for n in decision.spec.reads if n in self.home]
            # step(f): f's defaults; step(Counter.bump): the class's attributes
            mine = [target] if holder is None else [target, holder]
            direct += [n for n, v in self.home.items() if any(v is m for m in mine)]
            reached = reach(direct, self.home)
            self.reached = digests(reached.data - set(decision.inputs), self.home)
            self.definitions = definition_digests(reached.definitions, self.home)
            self.modules = module_digests(reached.modules, own)
        self.holder: dict[str, Any] = {}
        self.held: dict[str, tuple[int, str]] = {}
        if holder is not None and not isinstance(holder, (type, types.ModuleType)):
            self.holder = {"self": holder}
            self.held = digests(self.holder, self.holder)

    def changed(self, engine: StepEngine, values: Mapping[str, Any]) -> dict[str, Any]:
        """What the call changed in place, as :class:`StepPayload` fields: ``variables``
        (the function's globals, and the caller's variables when the caller's globals
        are the function's), ``modules`` (your modules' data; the caller's variables
        by module otherwise: ``{"__main__": {"clf": clf}}``) and ``definitions``."""
        home, caller = self.home, self.caller
        found = {} if home is None else {n: home[n] for n in changed_since(self.reached, home)}
        objects = []  # changed in place, bound to the caller's names for them
        for name in changed_inputs(engine, self.decision, values):
            value = values[name]
            if home is not None and home.get(name) is value:  # a global it reads directly
                found[name] = value
            else:  # an argument
                objects.append(value)
        if changed_since(self.held, self.holder):
            objects.append(self.holder["self"])
        if home is not None and found:  # other names for what changed (arrays viewing it)
            found.update((n, home[n]) for n in bound_to(list(found.values()), home))
        bound = {n: caller[n] for n in bound_to(objects, caller)} if caller is not None else {}
        modules = module_changes(self.modules)
        if caller is None or caller is home:
            found.update(bound)
        elif bound:
            modules.setdefault(str(caller.get("__name__", "__main__")), {}).update(bound)
        definitions = {} if home is None else definition_changes(self.definitions, home)
        return {"variables": found, "modules": modules, "definitions": definitions}


def _say_why(decision: Decision, shell: Any, quiet: bool) -> None:
    """A saved step that runs again says why (``running 'k' again: n changed (3 → 4)``)."""
    note = None if quiet else rerun_note(decision)
    if note:
        show_note(note, shell)


def _is_async(fn: Callable[..., Any]) -> bool:
    target = getattr(fn, "func", fn)  # functools.partial
    method = vars(type(target)).get("__call__")  # an object with `async def __call__`
    return inspect.iscoroutinefunction(target) or inspect.iscoroutinefunction(method)


async def _ready(payload: StepPayload, shell: Any) -> Any:
    """A saved value for ``await``, with what the call showed shown again."""
    replay_outputs(list(payload.outputs), shell)
    return payload.value


async def _call_async(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    spec: StepSpec,
    session: Any,
    shell: Any,
    quiet: bool,
) -> Any:
    """``await step(async_fn, key=...)``: a hit returns at once, a miss awaits and saves."""
    engine = session.engine
    decision = engine.lookup(spec)
    _say_why(decision, shell, quiet)
    if decision.hit:
        ReadRecorder.inherit([*decision.manifest.files, *decision.manifest.deps])
        return await _ready(decision.payload, shell)
    run = engine.begin(decision)
    shown = OutputRecorder(shell)
    try:
        with ReadRecorder(ignore=[session.store.directory]) as opened, shown:
            value = await fn(*args, **kwargs)
    except BaseException as exc:
        engine.fail(run, exc)
        raise
    return _save_awaited(value, run, engine, opened, shown)


async def _finish_async(
    awaitable: Any, run: Any, engine: Any, opened: ReadRecorder, shown: OutputRecorder
) -> Any:
    try:
        with opened, shown:
            value = await awaitable
    except BaseException as exc:
        engine.fail(run, exc)
        raise
    return _save_awaited(value, run, engine, opened, shown)


def _save_awaited(
    value: Any, run: Any, engine: Any, opened: ReadRecorder, shown: OutputRecorder
) -> Any:
    engine.finish(
        run,
        StepPayload(value=value, outputs=tuple(shown.outputs)),
        files=opened.files(),
        written=opened.written,
        extra={"awaitable": True},
    )
    return value


if TYPE_CHECKING:

    @overload
    def step(
        fn: Callable[..., T],
        /,
        *args: Any,
        key: str,
        force: bool = ...,
        pin: bool = ...,
        deps: str | Iterable[str] = ...,
        **kwargs: Any,
    ) -> T: ...
    @overload
    def step(
        fn: str,
        /,
        *,
        outputs: str | Iterable[str] | None = ...,
        exclude: str | Iterable[str] | None = ...,
        force: bool = ...,
        pin: bool = ...,
        quiet: bool = ...,
        deps: str | Iterable[str] = ...,
    ) -> StepBlock: ...


def step(
    fn: Any = None,
    /,
    *args: Any,
    key: str | None = None,
    outputs: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    force: bool = False,
    pin: bool = False,
    quiet: bool = False,
    deps: str | Iterable[str] = (),
    **kwargs: Any,
) -> Any:
    """A resumable step, as a with-block or as a call.

    ``with step("posts:1"):`` runs its body once; afterwards (next kernel, next
    day) the body is skipped, the variables it set are restored and its printed
    output is shown again. It works at notebook or module level (not inside a
    function). ``outputs=`` names the variables to save, ``exclude=`` leaves
    some out; ``force=True`` runs again, ``pin=True`` ignores code changes.
    ``deps=["data/*.parquet"]`` names files the step reads that Python does not
    see it open (files opened with ``open`` are found by themselves); a change
    to any of them makes the step run again.

    ``step(fn, key="total:3")`` calls ``fn()`` once and returns the saved value
    afterwards (also inside functions); ``step(fetch_user, uid, key=f"user:{uid}")``
    passes arguments (keyword ones too, except this function's own options),
    which count as inputs, as do a bound method's object and a partial's
    arguments. With an async function (or a
    lambda returning a coroutine) the call is awaited: ``await step(...)``, and
    ``asyncio.gather`` of many runs them concurrently. Both forms use the store
    and workflow that :func:`~awaitly_nb.configure` sets, like ``%%step``.

    >>> import tempfile, awaitly_nb
    >>> _ = awaitly_nb.configure(dir=tempfile.mkdtemp(), workflow="doc")
    >>> calls = []
    >>> step(lambda: calls.append(1) or len(calls), key="n"), step(lambda: 99, key="n", pin=True)
    (1, 1)
    >>> step(pow, 2, 10, key="pow:2:10")
    1024
    >>> _ = awaitly_nb.configure(dir=None, workflow=None)
    """
    if callable(fn):
        if key is None:
            raise TypeError("the call form needs a key: step(fn, key='...')")
        if outputs is not None or exclude is not None or quiet:
            raise TypeError("outputs=, exclude= and quiet= belong to the with-block form")
        caller = sys._getframe(1).f_globals
        return call_step(
            fn, key, args=args, kwargs=kwargs, force=force, pin=pin, deps=deps, caller=caller
        )
    if kwargs:
        raise TypeError(f"step() got an unexpected keyword argument {next(iter(kwargs))!r}")
    if args:
        raise TypeError(
            "arguments go with a function: step(fn, *args, key='...'); "
            f"the with-block form takes only its key, got step({fn!r}, {args[0]!r}, ...)"
        )
    if fn is None and key is not None:
        fn = key
    if not isinstance(fn, str):
        raise TypeError(
            "use `with step('key'):` for a block or `step(fn, key='key')` for a call; "
            f"got {type(fn).__name__}"
        )
    return StepBlock(
        fn, outputs=outputs, exclude=exclude, force=force, pin=pin, quiet=quiet, deps=deps
    )


step.map = map_steps  # type: ignore[attr-defined]
