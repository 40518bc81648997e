"""The step engine: every rule about a step, written once for every front end.

``%%step``, ``with step(...)`` and ``step(fn, key=...)`` all do the same
thing through a :class:`StepEngine`:

1. :meth:`StepEngine.lookup` decides **hit**, **miss**, **stale**, **forced**
   or **unreadable** (:func:`decide`, with the reason), loads a hit, emits
   ``step_cache_hit`` / ``step_cache_miss`` and updates lineage;
2. on anything but a hit the front end calls :meth:`StepEngine.begin`
   (``step_start``), runs the body, then either :meth:`StepEngine.fail`
   (``step_error``; nothing is saved) or :meth:`StepEngine.finish`
   (``step_success``, the manifest is built and the payload saved,
   ``step_complete``; an unsaveable variable is a warning and no entry).

The engine is pure policy: it reaches a store only through
:class:`~awaitly_nb.storage.base.StepStore` and knows nothing of IPython;
:class:`StepEvents` (awaitly's event order) is shared with
:func:`~awaitly_nb.create_workflow`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from types import MappingProxyType

import xxhash

from awaitly_nb.core.digest import OWN, VALUE, kind_digest, summary, value_digest
from awaitly_nb.core.lineage import CELL, Lineage
from awaitly_nb.core.memo import Known, ValueMemo
from awaitly_nb.core.payload import StepPayload
from awaitly_nb.core.process import INPUT_PREFIX, SETTINGS, state_digest
from awaitly_nb.core.sharing import SHARED
from awaitly_nb.core.tracker import StatusTracker, StepStatus
from awaitly_nb.core.upstream import Upstream
from awaitly_nb.errors import CacheWarning, SerializationError, StateFormatError, StorageError, warn
from awaitly_nb.formatting import format_time
from awaitly_nb.storage.base import StepStore, StoredStep, variant_key
from awaitly_nb.storage.codec import dumps_value
from awaitly_nb.storage.manifest import StepManifest
from awaitly_nb.storage.names import check_name

TYPE_CHECKING = False  # typing is not imported at run time: see awaitly_nb._namedtuple
if TYPE_CHECKING:
    from typing import Any, Literal, NamedTuple, Protocol

    from awaitly_nb.core.events import Event
    from awaitly_nb.core.state import StepMeta

    Kind = Literal["cell", "block", "call"]
    Status = Literal["hit", "miss", "stale", "forced", "unreadable"]

    class FileProbe(Protocol):
        """How the engine learns about files (the I/O lives in :mod:`awaitly_nb.files`)."""

        def stamp(self, path: str) -> dict[str, Any] | None: ...
        def change(self, path: str, saved: Mapping[str, Any]) -> str | None: ...
        def expand(self, patterns: Iterable[str]) -> list[str]: ...
        def module_version(self, name: str) -> str: ...
else:
    from awaitly_nb._namedtuple import NamedTuple

__all__ = [
    "Decision",
    "Run",
    "StepEngine",
    "StepEvents",
    "StepSpec",
    "decide",
    "unsaveable",
]

VARIANTS = 4
"""Variants kept per key by default: running with n=3, then 4, then 3 again replays n=3."""
_NONE: Mapping[str, Any] = MappingProxyType({})


class StepSpec(NamedTuple):
    """A step as a front end sees it before running it.

    Attributes:
        key: the step's key (its identity within the workflow).
        kind: ``cell``, ``block`` or ``call``; cells and blocks save
            variables, calls save a value.
        code: the fingerprint of its code (None: unknown, so not compared).
        reads: the names it reads before binding them (its possible inputs).
        values: where those names are looked up (the notebook's namespace, a
            module's or a function's globals); each name found is an input,
            compared by value (:mod:`awaitly_nb.core.digest`).
        deps: files the step reads that Python cannot see it open (globs allowed).
        pin: trust the key alone (awaitly's behaviour): code and inputs are not compared.
        force: run again and overwrite, whatever is saved.
    """

    key: str
    kind: Kind
    code: str | None = None
    reads: frozenset[str] = frozenset()
    values: Mapping[str, Any] | None = None
    deps: tuple[str, ...] = ()
    pin: bool = False
    force: bool = False

    def __repr__(self) -> str:  # not ``values``: a whole namespace
        return (
            f"StepSpec(key={self.key!r}, kind={self.kind!r}, code={self.code!r}, "
            f"reads={self.reads!r}, deps={self.deps!r}, pin={self.pin}, force={self.force})"
        )


class Decision(NamedTuple):
    """What :meth:`StepEngine.lookup` decided, and why.

    ``status`` is ``hit`` (``payload`` holds the saved results), ``miss``
    (nothing saved), ``stale`` (saved with other code or inputs),
    ``forced`` (re-run on request) or ``unreadable`` (saved but cannot be
    loaded here). ``reason`` says why a saved entry is not used.
    ``inputs`` are the fingerprints of what the step reads, ``summaries``
    their short descriptions, ``unchecked`` the inputs that could not be
    fingerprinted by value (compared by lineage instead).
    """

    spec: StepSpec
    status: Status
    inputs: Mapping[str, str] = _NONE
    manifest: StepManifest | None = None
    payload: StepPayload | None = None
    reason: str = ""
    summaries: Mapping[str, str] = _NONE
    unchecked: tuple[str, ...] = ()
    trusted: Mapping[str, str] = _NONE
    """Inputs not in the namespace, vouched for by saved steps: ``{name: step key}``."""
    sources: Mapping[str, str] = _NONE
    """Inputs that are exactly a saved step's value: ``{name: origin}`` (:mod:`.memo`)."""

    @property
    def hit(self) -> bool:
        return self.status == "hit"


class Run(NamedTuple):
    """A step that is running: what :meth:`StepEngine.finish` needs to save it."""

    decision: Decision
    started: float
    written: frozenset[str] = frozenset()
    extra: Mapping[str, Any] = _NONE

    @property
    def key(self) -> str:
        return self.decision.spec.key


def _shape(kind: str) -> str:
    """Cells and with-blocks save variables and outputs; the call form saves a value."""
    return "value" if kind == "call" else "variables"


def combined(code: str | None, inputs: Mapping[str, str]) -> str | None:
    """The code fingerprint folded with the versions of the inputs it reads."""
    if code is None or not inputs:
        return code
    text = code + "|" + "|".join(f"{n}={v}" for n, v in sorted(inputs.items()))
    return str(xxhash.xxh3_128_hexdigest(text.encode()))


def _input_change(
    name: str,
    before: str | None,
    now: str | None,
    was: str | None,
    is_: str | None,
    by_value: bool,
    missing: str | None = None,
) -> str:
    """``t changed (5 → 6)``, ``normalize() changed``, ``df is a new input``, ...

    ``missing`` says why an input that is not defined now was not vouched for.
    """
    if name == INPUT_PREFIX + SETTINGS:
        return (
            "settings made before it changed (pandas or numpy options, rcParams, logging, "
            "warnings filters, scikit-learn or IPython display)"
        )
    if name.startswith(INPUT_PREFIX):
        return f"the {name[len(INPUT_PREFIX) :]} state before it changed (another seed?)"
    if name == SHARED:  # one object under two names (df2 = df) or two (df2 = df.copy())
        return f"which inputs are one object changed ({was or 'none'} → {is_ or 'none'})"
    if before is None:
        if not by_value:
            return f"{name} was not compared by value when it was saved"
        return f"{name} is a new input"
    if now is None:
        return missing or f"{name} is not defined now"
    if not before.startswith(VALUE) and now.startswith(VALUE):
        return f"{name} was not compared by value when it was saved"
    made, _, kind = now.partition("|")
    if not now.startswith(VALUE) and before.partition("|")[0] == made and kind:
        return f"the class of {name} (or the code it runs) changed"
    if made.startswith(CELL):
        return f"{name} was made again by a cell that changed (its code or a file it read)"
    if not now.startswith(VALUE):
        source = made.rsplit("@", 1)[0] if "@" in made else ""
        return f"{name} was recomputed" + (f" (by {source!r})" if source else "")
    if was and is_ and was != is_:
        return f"{name} changed ({was} → {is_})"
    if is_ == f"{name}()":  # a function or class under its own name
        return f"{is_} changed"
    return f"{name} changed"


def _why_stale(
    manifest: StepManifest,
    code: str,
    inputs: Mapping[str, str],
    summaries: Mapping[str, str],
    missing: Mapping[str, str],
) -> str:
    if (manifest.code or manifest.fingerprint) != code:
        return "code changed"
    before = manifest.inputs
    changed = sorted(n for n in set(before) | set(inputs) if before.get(n) != inputs.get(n))
    saved = manifest.summaries
    # Entries saved before inputs were compared by value (awaitly_nb 0.1) have no summaries.
    by_value = bool(saved) or any(v.startswith(VALUE) for v in before.values())
    return ", ".join(
        _input_change(
            n,
            before.get(n),
            inputs.get(n),
            saved.get(n),
            summaries.get(n),
            by_value,
            missing.get(n),
        )
        for n in changed
    )


def decide(
    spec: StepSpec,
    manifest: StepManifest | None,
    inputs: Mapping[str, str],
    summaries: Mapping[str, str] | None = None,
    missing: Mapping[str, str] | None = None,
) -> tuple[Status, str]:
    """The rule: may the saved entry (``manifest``) stand for running ``spec`` now?

    Returns the status (``hit`` means "load it") and the reason for anything else;
    ``missing`` says why inputs not defined now could not be vouched for.

    >>> spec = StepSpec("k", "cell", code="c1")
    >>> decide(spec, None, {})
    ('miss', '')
    >>> decide(spec, StepManifest("wf", "k", fingerprint="c1", code="c1"), {})
    ('hit', '')
    >>> decide(spec, StepManifest("wf", "k", fingerprint="c0", code="c0"), {})
    ('stale', 'code changed')
    """
    if manifest is None:
        return "miss", ""
    if spec.force:
        return "forced", "--force"
    if _shape(manifest.kind) != _shape(spec.kind):
        return (
            "stale",
            f"the key was saved by a {manifest.kind} step, this is a {spec.kind} step",
        )
    code = None if spec.pin else spec.code
    if code is not None and manifest.fingerprint != combined(code, inputs):
        return "stale", _why_stale(manifest, code, inputs, summaries or {}, missing or {})
    return "hit", ""


def unsaveable(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The ``(name, type)`` of each value that cannot be serialised."""
    bad = []
    for name, value in values.items():
        try:
            dumps_value(value)
        except SerializationError:
            bad.append((name, type(value).__qualname__))
    return bad


def _nbytes(value: Any) -> int:
    """Memory a value holds, cheaply: arrays' ``nbytes``, frames' columns, else shallow size."""
    try:
        nbytes = getattr(value, "nbytes", None)
        if isinstance(nbytes, int):
            return nbytes
        usage = getattr(value, "memory_usage", None)
        if callable(usage):
            total = usage(index=True, deep=False)
            return int(total.sum()) if hasattr(total, "sum") else int(total)
    except Exception:
        pass
    return sys.getsizeof(value, 0)


def _deps_stamps(probe: FileProbe | None, patterns: tuple[str, ...]) -> dict[str, Any]:
    if probe is None or not patterns:
        return {}
    return {p: s for p in probe.expand(patterns) if (s := probe.stamp(p)) is not None}


def _meta(saved: StepMeta | StepManifest) -> StepMeta:
    """An event's ``meta`` (made only for an event: a script nobody watches never
    imports the workflow state's records)."""
    from awaitly_nb.core.state import StepMeta

    if isinstance(saved, StepMeta):
        return saved
    return StepMeta(saved_at=saved.saved_at, duration_ms=saved.duration_ms)


class StepEvents:
    """awaitly's step events for one workflow, in awaitly's order (see :mod:`.events`).

    An event is made only when ``emit`` is given (someone listens), so a
    script that nobody watches never builds one; ``tracker``, when given, is
    told what each step did either way.

    >>> seen = []
    >>> events = StepEvents("wf", seen.append)
    >>> started = events.start("k")
    >>> _ = events.success("k", started, 42)
    >>> [e.type for e in seen]
    ['step_start', 'step_success']
    """

    __slots__ = ("emit", "tracker", "workflow_id")

    def __init__(
        self,
        workflow_id: str,
        emit: Callable[[Event], Any] | None,
        tracker: StatusTracker | None = None,
    ) -> None:
        self.workflow_id = workflow_id
        self.emit = emit
        self.tracker = tracker

    def hit(
        self,
        key: str,
        value: Any,
        meta: StepMeta | StepManifest,
        *,
        duration_ms: float = 0.0,
        name: str | None = None,
    ) -> None:
        if self.tracker is not None:
            self.tracker.restored(self.workflow_id, key, duration_ms, meta.duration_ms)
        if self.emit is not None:
            from awaitly_nb.core.events import StepCacheHit

            self.emit(
                StepCacheHit(
                    workflow_id=self.workflow_id,
                    ts=time.time(),
                    step_key=key,
                    name=name,
                    value=value,
                    meta=_meta(meta),
                    duration_ms=duration_ms,
                )
            )

    def miss(
        self,
        key: str,
        *,
        reason: str | None = None,
        name: str | None = None,
        detail: str | None = None,
    ) -> None:
        if self.tracker is not None and reason == "stale":
            self.tracker.stale(self.workflow_id, key, detail)
        if self.emit is not None:
            from awaitly_nb.core.events import StepCacheMiss

            self.emit(
                StepCacheMiss(
                    workflow_id=self.workflow_id,
                    ts=time.time(),
                    step_key=key,
                    name=name,
                    reason=reason,
                    detail=detail,
                )
            )

    def start(self, key: str | None, *, name: str | None = None) -> float:
        """``step_start``; returns the start time for :meth:`fail` and :meth:`success`."""
        if self.tracker is not None and key is not None:
            self.tracker.started(self.workflow_id, key)
        if self.emit is not None:
            from awaitly_nb.core.events import StepStart

            self.emit(
                StepStart(workflow_id=self.workflow_id, ts=time.time(), step_key=key, name=name)
            )
        return time.perf_counter()

    def fail(
        self, key: str | None, started: float, error: BaseException, *, name: str | None = None
    ) -> None:
        if self.tracker is not None and key is not None:
            self.tracker.failed(self.workflow_id, key, error)
        if self.emit is not None:
            from awaitly_nb.core.events import StepError

            self.emit(
                StepError(
                    workflow_id=self.workflow_id,
                    ts=time.time(),
                    duration_ms=(time.perf_counter() - started) * 1000,
                    error=error,
                    step_key=key,
                    name=name,
                )
            )

    def success(
        self, key: str | None, started: float, value: Any = None, *, name: str | None = None
    ) -> float:
        """``step_success``; returns the step's duration in ms."""
        duration_ms = (time.perf_counter() - started) * 1000
        if self.emit is not None:
            from awaitly_nb.core.events import StepSuccess

            self.emit(
                StepSuccess(
                    workflow_id=self.workflow_id,
                    ts=time.time(),
                    duration_ms=duration_ms,
                    step_key=key,
                    name=name,
                    value=value,
                )
            )
        return duration_ms

    def complete(
        self, key: str, value: Any, meta: StepMeta | StepManifest, *, name: str | None = None
    ) -> None:
        if self.tracker is not None:
            self.tracker.completed(self.workflow_id, key)
        if self.emit is not None:
            from awaitly_nb.core.events import StepComplete

            self.emit(
                StepComplete(
                    workflow_id=self.workflow_id,
                    ts=time.time(),
                    step_key=key,
                    duration_ms=meta.duration_ms,
                    value=value,
                    meta=_meta(meta),
                    name=name,
                )
            )


class StepEngine:
    """Decides, loads, saves and reports steps of the current workflow in the current store.

    Args:
        store: returns the store to use (looked up on every call, so
            configuration changes apply at once).
        workflow: returns the current workflow id.

    >>> from awaitly_nb.storage.memory import MemoryStore
    >>> store = MemoryStore()
    >>> engine = StepEngine(lambda: store, lambda: "wf")
    >>> decision = engine.lookup(StepSpec("answer", "call", code="v1"))
    >>> decision.status
    'miss'
    >>> _ = engine.finish(engine.begin(decision), StepPayload(value=42))
    >>> engine.lookup(StepSpec("answer", "call", code="v1")).payload.value
    42
    """

    def __init__(
        self,
        store: Callable[[], StepStore],
        workflow: Callable[[], str],
        files: FileProbe | None = None,
    ) -> None:
        self._store = store
        self._workflow = workflow
        self.files = files
        self.variants = VARIANTS
        """How many variants (other inputs, other code) each key keeps; 0 keeps none."""
        self.lineage = Lineage()
        self.failed: set[str] = set()
        """Keys whose step raised in this session (and has not run since): their saved
        entries vouch for nothing (a plain run would have stopped there)."""
        self.memo = ValueMemo()
        """Digests of values no user code touched since (``%%step`` cells only)."""
        self.tracker = StatusTracker()
        self.listeners: list[Callable[[Event], Any]] = []
        """Called with every event (the status widget listens here)."""
        self.on_change: list[Callable[[], Any]] = []
        """Called after steps are forgotten, cleared or imported (events cover the rest)."""

    @property
    def store(self) -> StepStore:
        return self._store()

    @property
    def _module_version(self) -> Callable[[str], str] | None:
        """How digests learn module versions (your own modules: their code)."""
        return None if self.files is None else self.files.module_version

    def workflow_id(self) -> str:
        return self._workflow()

    def own_module(self, name: str) -> bool:
        """True for one of the user's own modules (its source is part of its version)."""
        version = self._module_version
        return version is not None and OWN in version(name)

    def reset(self) -> None:
        """Forget what this session saw (another store was configured)."""
        self.tracker = StatusTracker()
        self.lineage.clear()
        self.failed.clear()
        self.memo.clear()

    # --- events -------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception as exc:
                warn(
                    f"awaitly_nb listener {listener!r} raised {type(exc).__name__}: {exc}",
                    RuntimeWarning,
                )

    def events(self) -> StepEvents:
        return StepEvents(self.workflow_id(), self.emit if self.listeners else None, self.tracker)

    def notify_changed(self) -> None:
        """Tell ``on_change`` callbacks (the widget) that saved steps changed."""
        for callback in list(self.on_change):
            try:
                callback()
            except Exception as exc:
                warn(
                    f"awaitly_nb callback {callback!r} raised {type(exc).__name__}: {exc}",
                    RuntimeWarning,
                )

    # --- one step -----------------------------------------------------------------
    def lookup(self, spec: StepSpec) -> Decision:
        """Decide whether ``spec`` can be restored, and load it if so.

        Raises:
            InvalidKeyError: the key is not usable.
        """
        key = check_name(spec.key)
        started = time.perf_counter()
        events = self.events()
        try:
            entry = self.store.entry(events.workflow_id, key)
        except StorageError as exc:
            warn(f"the store cannot be read, so step {key!r} runs: {exc}", CacheWarning)
            entry = None
        manifest = None if entry is None else entry.manifest
        inputs, summaries, unchecked, sources = self._inputs(spec, manifest)
        status, reason = decide(spec, manifest, inputs, summaries)
        trusted: dict[str, str] = {}
        if status == "stale" and manifest is not None and not spec.pin:
            trusted, missing = self._vouch(spec, manifest, inputs, events.workflow_id)
            if trusted or missing:
                inputs = {**inputs, **{n: manifest.inputs[n] for n in trusted}}
                summaries = {
                    **summaries,
                    **{n: manifest.summaries[n] for n in trusted if n in manifest.summaries},
                }
                status, reason = decide(spec, manifest, inputs, summaries, missing)
        if status == "hit" and not spec.pin and manifest is not None:
            changed = self._files_changed(spec, manifest)
            if changed:
                status, reason = "stale", changed
        if status == "stale" and self.variants and manifest is not None:
            variant = self._variant(spec, events.workflow_id, inputs)
            if variant is not None:  # this code with these inputs ran before: restore that
                entry, manifest, status, reason = variant, variant.manifest, "hit", ""
        payload = None
        if status == "hit":
            assert entry is not None and manifest is not None
            try:
                payload = StepPayload.from_saved(entry.load(), call=spec.kind == "call")
            except (StateFormatError, StorageError) as exc:
                warn(
                    f"saved step {key!r} cannot be restored and runs again: {exc}",
                    CacheWarning,
                )
                status, reason = "unreadable", str(exc)
        decision = Decision(
            spec,
            status,
            inputs,
            manifest,
            payload,
            reason,
            summaries,
            tuple(unchecked),
            trusted if status == "hit" else {},
            sources,
        )
        if decision.hit:
            assert manifest is not None and payload is not None
            self.lineage.produced(key, manifest.saved_at, manifest.variables)
            self.failed.discard(key)
            events.hit(
                key,
                payload.to_saved(),
                manifest,
                duration_ms=(time.perf_counter() - started) * 1000,
            )
        else:
            events.miss(key, reason=None if status == "miss" else status, detail=reason or None)
        return decision

    def _vouch(
        self, spec: StepSpec, manifest: StepManifest, inputs: Mapping[str, str], workflow: str
    ) -> tuple[dict[str, str], dict[str, str]]:
        """Saved inputs not defined now: ``({name: vouching step}, {name: why none could})``."""
        values = spec.values
        if values is None or (manifest.code or manifest.fingerprint) != spec.code:
            return {}, {}
        absent = sorted(
            n for n in manifest.inputs if n in spec.reads and n not in inputs and n not in values
        )
        if not absent:
            return {}, {}
        probe = self.files
        upstream = Upstream(
            self.store,
            workflow,
            values,
            None if probe is None else probe.change,
            self._module_version,
            failed=self.failed,
        )
        trusted, missing = {}, {}
        for name in absent:
            maker, why = upstream.vouch(spec.key, name, manifest.inputs[name])
            if maker is not None:
                trusted[name] = maker
            else:
                missing[name] = why
        return trusted, missing

    def _variant(
        self, spec: StepSpec, workflow: str, inputs: Mapping[str, str]
    ) -> StoredStep | None:
        """A kept variant of the step saved with the same code and inputs, if its files hold."""
        fingerprint = combined(spec.code, inputs)
        if fingerprint is None:
            return None
        try:
            found = self.store.entry(workflow, variant_key(spec.key, fingerprint))
        except StorageError:
            return None
        if (
            found is None
            or found.manifest.fingerprint != fingerprint
            or _shape(found.manifest.kind) != _shape(spec.kind)
            or self._files_changed(spec, found.manifest)
        ):
            return None
        return found._replace(manifest=replace(found.manifest, key=spec.key))

    def _files_changed(self, spec: StepSpec, manifest: StepManifest) -> str:
        """Why the files the step read (or declared) differ from when it was saved; "" if not."""
        probe = self.files
        if probe is None or not (manifest.files or manifest.deps or spec.deps):
            return ""
        reasons = [
            reason
            for path, saved in sorted(manifest.files.items())
            if (reason := probe.change(path, saved)) is not None
        ]
        declared = probe.expand(spec.deps)
        for path in declared:
            saved_stamp = manifest.deps.get(path)
            if saved_stamp is None and path in manifest.files:
                continue  # read when it ran: compared above
            if saved_stamp is None:
                reasons.append(f"{os.path.basename(path)} is a new dependency")
            elif (reason := probe.change(path, saved_stamp)) is not None:
                reasons.append(reason)
        for path in sorted(set(manifest.deps) - set(declared)):
            if path not in manifest.files:  # else it was reported above
                reasons.append(f"{os.path.basename(path)} is gone")
        return ", ".join(dict.fromkeys(reasons))

    def _inputs(
        self, spec: StepSpec, manifest: StepManifest | None
    ) -> tuple[dict[str, str], dict[str, str], list[str], dict[str, str]]:
        """Fingerprint what ``spec`` reads: by value, else by lineage (see :class:`Decision`).

        Returns inputs, summaries, the unchecked names and the inputs' proven sources.
        """
        values = spec.values or {}
        inputs: dict[str, str] = {}
        summaries: dict[str, str] = {}
        unchecked: list[str] = []
        sources: dict[str, str] = {}
        memo = self.memo if spec.kind == "cell" else None
        stamps = self.lineage.own(
            spec.key,
            self.lineage.inputs(spec.reads),
            None if manifest is None else manifest.inputs,
        )
        for name in sorted(spec.reads):
            if name not in values:
                if name in stamps:  # produced by a step, yet not in this namespace
                    inputs[name] = stamps[name]
                continue
            value = values[name]
            known = None if memo is None else memo.get(name, value)
            if known is not None and known.origin is not None:
                sources[name] = known.origin
            digest, said = self._digest(name, value, values, memo, known, manifest)
            if digest is not None:
                inputs[name] = VALUE + digest
                summaries[name] = said
            else:  # by lineage, and by what can be told of it (its class's code)
                made = stamps.get(name, f"unchecked:{type(value).__qualname__}")
                inputs[name] = f"{made}|{kind_digest(value, values, self._module_version)}"
                unchecked.append(name)
        if manifest is not None:  # process state it read (a seeded random generator)
            for name in manifest.inputs:
                if name.startswith(INPUT_PREFIX):
                    digest = state_digest(name[len(INPUT_PREFIX) :])
                    if digest is not None:
                        inputs[name] = VALUE + digest
        return inputs, summaries, unchecked, sources

    def _digest(
        self,
        name: str,
        value: Any,
        values: Mapping[str, Any],
        memo: ValueMemo | None,
        known: Known | None,
        manifest: StepManifest | None,
    ) -> tuple[str | None, str]:
        """The digest and summary of an input, hashing it only when nothing proves them."""
        if known is not None and known.digest is not None:
            return known.digest, known.summary or summary(value)
        if known is not None and known.origin is not None and manifest is not None:
            saved = manifest.inputs.get(name, "")
            if manifest.sources.get(name) == known.origin and saved.startswith(VALUE):
                # It is the very value that step saved, and that is what this step read.
                said = manifest.summaries.get(name) or summary(value)
                self.memo.digested(name, value, saved[len(VALUE) :], said)
                return saved[len(VALUE) :], said
        digest = value_digest(value, values, self._module_version)
        if digest is None:
            return None, ""
        # which inputs are one object: the whole text, for the note that says what changed
        said = repr(value[:200]) if name == SHARED and isinstance(value, str) else summary(value)
        if memo is not None:
            memo.digested(name, value, digest, said)
        return digest, said

    def unchanged(self, decision: Decision, name: str, value: Any) -> bool:
        """True if ``value`` (an input of ``decision``'s step) is, by value, what the
        step read when it was looked up."""
        saved = decision.inputs.get(name, "")
        if not saved.startswith(VALUE):
            return False
        digest = value_digest(
            value,
            decision.spec.values,
            self._module_version,
        )
        return digest is not None and VALUE + digest == saved

    def begin(self, decision: Decision) -> Run:
        """The step runs (``step_start``): user code runs, so the memo is emptied."""
        self.memo.clear()
        return Run(decision, self.events().start(decision.spec.key))

    def fail(self, run: Run, error: BaseException) -> None:
        """The step raised (``step_error``); nothing is saved."""
        self.failed.add(run.key)
        self.events().fail(run.key, run.started, error)

    def finish(
        self,
        run: Run,
        payload: StepPayload,
        *,
        optional: Iterable[str] = (),
        hint: str = "exclude={names}",
        files: Mapping[str, Mapping[str, Any]] | None = None,
        written: Iterable[str] = (),
        inputs: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> StepManifest | None:
        """The step ran without raising: save it, or warn why it cannot be saved.

        Unsaveable ``optional`` variables (objects the step only called methods
        on) are left out; any other unsaveable variable is named in a
        :class:`~awaitly_nb.errors.CacheWarning` (``hint`` says how to exclude
        it, ``{names}`` filled in) and nothing is saved. So is a store failure.
        ``files`` are the stamps of the files it read; ``written`` the files it
        wrote (its outputs: a declared dep it wrote is never a change);
        ``inputs`` more inputs found while it ran (``{"@numpy.random": digest}``);
        ``extra`` fields the front end keeps in the manifest (``{"cell": id}``).
        Returns the saved manifest, or None.
        """
        key, events = run.key, self.events()
        duration_ms = events.success(key, run.started)
        run = run._replace(written=frozenset(written), extra=dict(extra or {}))
        if inputs:
            decision = run.decision
            merged = {**decision.inputs, **{n: VALUE + d for n, d in inputs.items()}}
            run = run._replace(decision=decision._replace(inputs=merged))
        manifest, (message, reason) = self._save_or_explain(
            run, payload, duration_ms, set(optional), hint, files or {}
        )
        self.failed.discard(key)
        if manifest is not None:
            self.lineage.produced(key, manifest.saved_at, manifest.variables)
            events.complete(key, payload.to_saved(), manifest)
            return manifest
        warn(message, CacheWarning)
        self.lineage.not_saved(key, payload.variables)
        self.tracker.not_saved(events.workflow_id, key, reason)
        self.notify_changed()
        return None

    def _save_or_explain(
        self,
        run: Run,
        payload: StepPayload,
        duration_ms: float,
        optional: set[str],
        hint: str,
        files: Mapping[str, Mapping[str, Any]],
    ) -> tuple[StepManifest | None, tuple[str, str]]:
        """Save, or say why not: ``(manifest, ("", ""))`` or ``(None, (message, reason))``."""
        key = run.key
        try:
            return self._save(run, payload, duration_ms, files), ("", "")
        except StorageError as exc:  # disk full, store unreachable: results stay in memory
            return None, (f"step {key!r} ran, but it could not be saved: {exc}", str(exc))
        except SerializationError as exc:
            error = exc
        bad = unsaveable(payload.saved_values())
        required = [(name, type_) for name, type_ in bad if name not in optional]
        if bad and not required:  # only objects it called methods on: leave them out
            left_out = payload.without({name for name, _ in bad})
            return self._save_or_explain(run, left_out, duration_ms, set(), hint, files)
        if not required:
            return None, (f"step {key!r} ran, but it is not saved: {error}", str(error))
        if run.decision.spec.kind == "call":
            type_ = required[0][1]
            why = (
                " (the function returned a coroutine without awaiting it: await it inside an "
                "async function, or call the async function itself)"
                if type_ == "coroutine"
                else ""
            )
            return None, (
                f"step {key!r} ran, but its return value ({type_}) cannot be saved{why}; "
                "return a value that can be pickled",
                f"cannot be saved: its value ({type_})",
            )
        names = ", ".join(f"{name} ({type_})" for name, type_ in required)
        message = (
            f"step {key!r} ran, but it is not saved: these variables cannot be saved: "
            f"{names}. To save the rest, add "
            + hint.format(names=",".join(name for name, _ in required))
        )
        return None, (message, f"cannot be saved: {names}")

    def _save(
        self,
        run: Run,
        payload: StepPayload,
        duration_ms: float,
        files: Mapping[str, Mapping[str, Any]],
    ) -> StepManifest:
        spec, workflow = run.decision.spec, self.workflow_id()
        inputs = run.decision.inputs
        variables = payload.variables
        manifest = StepManifest(
            workflow=workflow,
            key=spec.key,
            kind=spec.kind,
            fingerprint=combined(spec.code, inputs),
            code=spec.code,
            inputs=dict(inputs),
            summaries=dict(run.decision.summaries),
            sources=dict(run.decision.sources),
            files={path: dict(s) for path, s in files.items()},
            deps=self._declared(spec, run.written),
            variables=tuple(sorted(variables)),
            types={n: type(v).__qualname__ for n, v in variables.items()},
            nbytes={n: _nbytes(v) for n, v in variables.items()},
            duration_ms=duration_ms,
            saved_at=time.time(),
            extra=run.extra,
        )
        return self.store.save(
            workflow, spec.key, manifest, payload.to_saved(), variants=self.variants
        )

    def _declared(self, spec: StepSpec, written: frozenset[str]) -> dict[str, Any]:
        """Stamps of the files ``deps=`` names, as they are now (saved with the step);
        a file the step wrote is marked ``written``: an output, compared with what the
        step left there (another cell changing it means a run would write it again)."""
        stamps = _deps_stamps(self.files, spec.deps)
        for path in written:
            if path in stamps:
                stamps[path] = {**stamps[path], "written": True}
        return stamps

    def explain(self, key: str, values: Mapping[str, Any]) -> list[str]:
        """What a saved step depends on, compared with now, without running or loading it.

        One line per input (by value or lineage), per file and declared dep.
        The step's code is compared when its cell runs (the key alone does
        not say which cell it is).

        Raises:
            KeyError: nothing is saved under ``key`` in the current workflow.
        """
        manifest = self.store.manifest(self.workflow_id(), check_name(key))
        if manifest is None:
            raise KeyError(key)
        spec = StepSpec(key, "block", reads=frozenset(manifest.inputs), values=values)
        now, summaries, _, _ = self._inputs(spec, manifest)
        when = format_time(manifest.saved_at, seconds=True)
        lines = [f"step {key!r} ({manifest.kind}), saved {when}"]
        for name in sorted(manifest.inputs):
            before, current = manifest.inputs[name], now.get(name)
            if before == current:
                shown = manifest.summaries.get(name, "by lineage")
                lines.append(f"  input {name}: unchanged ({shown})")
            else:
                change = _input_change(
                    name,
                    before,
                    current,
                    manifest.summaries.get(name),
                    summaries.get(name),
                    True,
                )
                lines.append(f"  input {name}: {change}")
        probe = self.files
        for path, saved in sorted({**manifest.files, **manifest.deps}.items()):
            changed = probe.change(path, saved) if probe is not None else None
            lines.append(f"  file {path}: {changed or 'unchanged'}")
        if len(lines) == 1:
            lines.append("  it reads no variables and no files")
        lines.append("  code: compared when its cell runs")
        return lines

    # --- the workflow's steps -------------------------------------------------------
    def forget(self, key: str) -> bool:
        """Forget the saved step ``key`` of the current workflow."""
        workflow = self.workflow_id()
        forgotten = self.store.delete(workflow, check_name(key))
        if forgotten:
            self.tracker.forgot(workflow, key)
            self.notify_changed()
        return forgotten

    def clear(self) -> int:
        """Forget every saved step of the current workflow."""
        workflow = self.workflow_id()
        keys = [key for _, key in self.store.step_keys(workflow)]
        count = self.store.clear(workflow)
        for key in keys:
            self.tracker.forgot(workflow, key)
        self.notify_changed()
        return count

    def steps(self) -> list[StepManifest]:
        """Manifests of the current workflow's saved steps, oldest first."""
        return self.store.manifests(self.workflow_id())

    def status(self, manifests: list[StepManifest] | None = None) -> list[StepStatus]:
        """Every step of the current workflow: saved ones and those seen this session.

        ``manifests`` (the workflow's saved manifests) may be passed when already read.
        """
        workflow = self.workflow_id()
        store = self.store
        if manifests is None:
            manifests = store.manifests(workflow)
        try:
            variants = store.variant_counts(workflow)
        except StorageError:
            variants = {}
        return self.tracker.rows(workflow, manifests, variants)
