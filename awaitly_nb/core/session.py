"""The notebook session: which store and workflow steps use, and the lookup/save rules.

Every form of a notebook step (``%%step``, ``with step(...)``, ``step(fn,
key=...)``) goes through one :class:`Session`: it decides hit, miss or stale,
saves entries and tells listeners (the status widget) what happened through
the same events as :func:`~awaitly_nb.create_workflow`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import xxhash

from awaitly_nb.core.events import (
    Event,
    StepCacheHit,
    StepCacheMiss,
    StepComplete,
    StepError,
    StepStart,
    StepSuccess,
)
from awaitly_nb.core.keys import validate_key
from awaitly_nb.core.state import StepMeta
from awaitly_nb.core.status import StatusTracker, StepStatus
from awaitly_nb.errors import CacheWarning, StateFormatError, StorageError
from awaitly_nb.storage.blobs import GcReport
from awaitly_nb.storage.shared import open_shared_store
from awaitly_nb.storage.store import StepStore

__all__ = ["Lookup", "Session", "configure", "gc", "get_session"]

ENV_DIR = "AWAITLY_NB_DIR"
ENV_STORE = "AWAITLY_NB_STORE"
DEFAULT_DIR = ".awaitly"

Status = Literal["hit", "miss", "stale", "forced", "unreadable"]


@dataclass
class Lookup:
    """The outcome of looking a step up.

    ``status`` is ``hit`` (``payload`` holds the saved values), ``miss``
    (never saved), ``stale`` (saved with other code), ``forced`` (re-run on
    request) or ``unreadable`` (saved but cannot be loaded here; ``reason`` says why).
    """

    status: Status
    manifest: dict[str, Any] | None = None
    payload: Any = None
    reason: str = ""

    @property
    def hit(self) -> bool:
        return self.status == "hit"


def jupyter_notebook_name() -> str | None:
    """The notebook's file name as Jupyter tells its kernels (``$JPY_SESSION_NAME``)."""
    name = os.environ.get("JPY_SESSION_NAME")
    return Path(name).name if name else None


def _default_workflow() -> str:
    name = jupyter_notebook_name()
    if name:
        return name
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if main_file and not Path(main_file).name.startswith("ipykernel_launcher"):
        return Path(main_file).name
    return "default"


@dataclass
class Session:
    """Where steps are saved and under which workflow; see :func:`configure`."""

    directory: Path | None = None
    shared: str | None = None
    """A shared store's URL (Redis or fsspec); None keeps steps in ``directory`` only."""
    workflow: str | None = None
    workflow_detector: Callable[[], str | None] | None = None
    listeners: list[Callable[[Event], Any]] = field(default_factory=list)
    tracker: StatusTracker = field(default_factory=StatusTracker)
    produced_by: dict[str, str] = field(default_factory=dict)
    """Which step (``key@saved_at``) last produced each variable this session."""
    on_change: list[Callable[[], Any]] = field(default_factory=list)
    """Called after steps are forgotten or cleared (events cover the rest)."""
    _stores: dict[tuple[Path, str | None], StepStore] = field(default_factory=dict, repr=False)
    _default: tuple[str, Path] | None = field(default=None, repr=False)

    def close_stores(self) -> None:
        """Close the stores opened so far (they reopen on next use)."""
        for store in self._stores.values():
            with contextlib.suppress(Exception):
                store.close()
        self._stores.clear()
        self._default = None

    # --- where -------------------------------------------------------------
    def resolved_directory(self) -> Path:
        """The store directory: configured, else ``$AWAITLY_NB_DIR``, else ``./.awaitly``.

        The default is fixed at first use: a cell that changes the working
        directory later does not move the store.
        """
        if self.directory is not None:
            return self.directory
        env = os.environ.get(ENV_DIR) or ""
        if self._default is None or self._default[0] != env:
            self._default = (env, Path(env or DEFAULT_DIR).absolute())
        return self._default[1]

    @property
    def store(self) -> StepStore:
        """The store in use: local, or shared (its blobs cached in the local directory)."""
        directory = self.resolved_directory()
        shared = self.shared or os.environ.get(ENV_STORE) or None
        where = (directory, shared)
        store = self._stores.get(where)
        if store is None:
            if shared is None:
                store = StepStore(directory)
            else:
                store = open_shared_store(shared, directory / "shared-cache")
            self._stores[where] = store
        return store

    def workflow_id(self) -> str:
        """The workflow steps belong to: configured, else the notebook's name, else ``default``."""
        if self.workflow:
            return self.workflow
        if self.workflow_detector is not None:
            detected = self.workflow_detector()
            if detected:
                return detected
        return _default_workflow()

    # --- events ------------------------------------------------------------
    def emit(self, event: Event) -> None:
        self.tracker.handle_event(event)
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception as exc:
                warnings.warn(
                    f"awaitly_nb listener {listener!r} raised {type(exc).__name__}: {exc}",
                    RuntimeWarning,
                    stacklevel=2,
                )

    # --- the rules ---------------------------------------------------------
    def inputs(self, names: Iterable[str]) -> dict[str, str]:
        """Which of ``names`` were produced by steps this session, as ``{name: "key@saved_at"}``.

        A step's lineage: if it reads a variable that another step produced, and
        that step has since run again, this step is stale too.
        """
        produced = self.produced_by
        return {name: produced[name] for name in sorted(set(names)) if name in produced}

    @staticmethod
    def _own(
        key: str, inputs: dict[str, str] | None, manifest: dict[str, Any] | None
    ) -> dict[str, str] | None:
        """Inputs with the step's own earlier output replaced by what it read back then.

        Running ``df = df.dropna()`` again in the same kernel reads the ``df`` it
        produced itself; its input is still the ``df`` it first read.
        """
        if not inputs:
            return inputs
        before = (manifest or {}).get("inputs") or {}
        mine = f"{key}@"
        resolved = {}
        for name, stamp in inputs.items():
            if not stamp.startswith(mine):
                resolved[name] = stamp
            elif name in before:
                resolved[name] = before[name]
        return resolved

    def ran(self, key: str, duration_ms: float) -> None:
        """Announce that the step ``key`` ran without raising (saving comes next)."""
        self.emit(
            StepSuccess(
                workflow_id=self.workflow_id(),
                ts=time.time(),
                duration_ms=duration_ms,
                step_key=key,
            )
        )

    def not_saved(self, key: str, reason: str, variables: Iterable[str]) -> None:
        """A step ran but could not be saved: its variables are new, and not on disk."""
        stamp = f"{key}@unsaved-{time.time():.6f}"
        for name in variables:
            self.produced_by[name] = stamp
        self.tracker.not_saved(self.workflow_id(), key, reason)
        self.notify_changed()

    def _produced(self, key: str, manifest: dict[str, Any]) -> None:
        stamp = f"{key}@{float(manifest.get('saved_at', 0.0)):.6f}"
        for name in manifest.get("variables") or ():
            self.produced_by[name] = stamp

    def lookup(
        self,
        key: str,
        fingerprint: str | None,
        *,
        pin: bool = False,
        force: bool = False,
        inputs: dict[str, str] | None = None,
        kind: str | None = None,
    ) -> Lookup:
        """Decide whether the step ``key`` can be restored, and load it if so.

        ``fingerprint`` is the step's code fingerprint; ``inputs`` (from
        :meth:`inputs`) the steps whose variables it reads.
        """
        key = validate_key(key)
        started = time.perf_counter()
        workflow = self.workflow_id()
        try:
            entry = self.store.entry(workflow, key)
        except StorageError as exc:
            warnings.warn(
                f"the store cannot be read, so step {key!r} runs: {exc}", CacheWarning, stacklevel=3
            )
            entry = None
        manifest = None if entry is None else entry.manifest
        inputs = self._own(key, inputs, manifest)
        if entry is None or manifest is None:
            found = Lookup("miss")
        elif force:
            found = Lookup("forced", manifest, reason="--force")
        elif kind is not None and _shape(manifest.get("kind")) != _shape(kind):
            found = Lookup(
                "stale",
                manifest,
                reason=f"the key was saved by a {manifest.get('kind')} step, this is a {kind} step",
            )
        elif (
            not pin
            and fingerprint is not None
            and manifest.get("fingerprint") != _combined(fingerprint, inputs)
        ):
            found = Lookup("stale", manifest, reason=_why_stale(manifest, fingerprint, inputs))
        else:
            try:
                payload = entry.load()
            except (StateFormatError, StorageError) as exc:
                warnings.warn(
                    f"saved step {key!r} cannot be restored and runs again: {exc}",
                    CacheWarning,
                    stacklevel=3,
                )
                found = Lookup("unreadable", manifest, reason=str(exc))
            else:
                found = Lookup("hit", manifest, payload)
        now = time.time()
        if found.hit:
            assert manifest is not None
            self._produced(key, manifest)
            self.emit(
                StepCacheHit(
                    workflow_id=workflow,
                    ts=now,
                    step_key=key,
                    value=found.payload,
                    meta=_meta(manifest),
                    duration_ms=(time.perf_counter() - started) * 1000,
                )
            )
        else:
            reason = None if found.status == "miss" else found.status
            self.emit(StepCacheMiss(workflow_id=workflow, ts=now, step_key=key, reason=reason))
        return found

    def started(self, key: str) -> float:
        """Announce that the step ``key`` runs; return the start time for :meth:`save`."""
        self.emit(StepStart(workflow_id=self.workflow_id(), ts=time.time(), step_key=key))
        return time.perf_counter()

    def failed(self, key: str, started: float, error: BaseException) -> None:
        """Announce that the step ``key`` raised; nothing is saved."""
        self.emit(
            StepError(
                workflow_id=self.workflow_id(),
                ts=time.time(),
                duration_ms=(time.perf_counter() - started) * 1000,
                error=error,
                step_key=key,
            )
        )

    def save(
        self,
        key: str,
        payload: dict[str, Any],
        *,
        fingerprint: str | None,
        duration_ms: float,
        kind: str,
        variables: dict[str, Any] | None = None,
        inputs: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Save a finished step; raises SerializationError if the payload cannot be saved."""
        workflow = self.workflow_id()
        if inputs:
            inputs = self._own(key, inputs, self.store.manifest(workflow, key))
        manifest = self.store.save(
            workflow,
            key,
            {
                "kind": kind,
                "fingerprint": _combined(fingerprint, inputs),
                "code": fingerprint,
                "inputs": inputs or {},
                "variables": sorted(variables or {}),
                "types": {n: type(v).__qualname__ for n, v in (variables or {}).items()},
                "nbytes": {n: _nbytes(v) for n, v in (variables or {}).items()},
                "duration_ms": duration_ms,
                "saved_at": time.time(),
            },
            payload,
        )
        self._produced(key, manifest)
        self.emit(
            StepComplete(
                workflow_id=workflow,
                ts=time.time(),
                step_key=key,
                duration_ms=duration_ms,
                value=payload,
                meta=_meta(manifest),
            )
        )
        return manifest

    def forget(self, key: str) -> bool:
        """Forget the saved step ``key`` of the current workflow."""
        workflow = self.workflow_id()
        forgotten = self.store.delete(workflow, validate_key(key))
        self.tracker.forgot(workflow, key)
        self.notify_changed()
        return forgotten

    def clear(self) -> int:
        """Forget every saved step of the current workflow."""
        workflow = self.workflow_id()
        keys = [m["key"] for m in self.store.manifests(workflow)]
        count = self.store.clear(workflow)
        for key in keys:
            self.tracker.forgot(workflow, key)
        self.notify_changed()
        return count

    def notify_changed(self) -> None:
        """Tell ``on_change`` callbacks (the widget) that saved steps changed."""
        for callback in list(self.on_change):
            try:
                callback()
            except Exception as exc:
                warnings.warn(
                    f"awaitly_nb callback {callback!r} raised {type(exc).__name__}: {exc}",
                    RuntimeWarning,
                    stacklevel=2,
                )

    def steps(self) -> list[dict[str, Any]]:
        """Manifests of the current workflow's saved steps."""
        return self.store.manifests(self.workflow_id())

    def status(self, manifests: list[dict[str, Any]] | None = None) -> list[StepStatus]:
        """Every step of the current workflow: saved ones and those seen this session.

        ``manifests`` (the workflow's saved manifests) may be passed when already read.
        """
        workflow = self.workflow_id()
        if manifests is None:
            manifests = self.store.manifests(workflow)
        return self.tracker.rows(workflow, manifests)


def gc(*, min_age: float = 600.0) -> GcReport:
    """Delete the blob files no saved step refers to (in the current store).

    Forgetting a step, or saving it again with new values, leaves its old
    blobs behind; this reclaims them. Files younger than ``min_age`` seconds
    stay, so a save in progress in another kernel is safe.

    >>> import tempfile
    >>> _ = configure(dir=tempfile.mkdtemp())
    >>> gc(min_age=0).blobs
    0
    >>> _ = configure(dir=None)
    """
    return _SESSION.store.gc(min_age=min_age)


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


def _shape(kind: Any) -> str:
    """Cells and with-blocks save variables and outputs; the call form saves a value."""
    return "value" if kind == "call" else "variables"


def _combined(fingerprint: str | None, inputs: dict[str, str] | None) -> str | None:
    """The code fingerprint, folded with the versions of the inputs it reads."""
    if fingerprint is None or not inputs:
        return fingerprint
    text = fingerprint + "|" + "|".join(f"{n}={v}" for n, v in sorted(inputs.items()))
    return str(xxhash.xxh3_128_hexdigest(text.encode()))


def _why_stale(manifest: dict[str, Any], code: str, inputs: dict[str, str] | None) -> str:
    if manifest.get("code", manifest.get("fingerprint")) != code:
        return "its code changed since it was saved"
    before, now = manifest.get("inputs") or {}, inputs or {}
    changed = sorted(n for n in set(before) | set(now) if before.get(n) != now.get(n))
    sources = ", ".join(
        f"{n} (from {str(now.get(n, before.get(n))).rsplit('@', 1)[0]!r})" for n in changed
    )
    return f"an input it reads was recomputed: {sources}"


def _meta(manifest: dict[str, Any]) -> StepMeta:
    return StepMeta(
        saved_at=float(manifest.get("saved_at", 0.0)),
        duration_ms=float(manifest.get("duration_ms", 0.0)),
    )


_SESSION = Session()


def get_session() -> Session:
    """The process-wide session used by ``%%step``, ``with step(...)`` and ``step(fn, ...)``."""
    return _SESSION


_UNSET: Any = object()


def configure(*, dir: Any = _UNSET, workflow: Any = _UNSET, store: Any = _UNSET) -> Session:
    """Choose where notebook steps are saved and the workflow they belong to.

    Only the settings given change; pass None to go back to the default.

    Args:
        dir: the store directory (default ``$AWAITLY_NB_DIR`` or ``./.awaitly``).
        workflow: the workflow id (default: the notebook's file name, else ``default``).
        store: a shared store to use instead of the local one (default
            ``$AWAITLY_NB_STORE``): ``redis://host:6379/0`` or an fsspec URL
            (``s3://bucket/team``, ``file:///shared/steps``, ``memory://name``).
            Blobs are cached in ``dir``.

    >>> import tempfile
    >>> session = configure(dir=tempfile.mkdtemp(), workflow="analysis.ipynb")
    >>> session.workflow_id()
    'analysis.ipynb'
    >>> _ = configure(dir=None, workflow=None)  # back to the defaults
    """
    if workflow is not _UNSET:
        if workflow is not None and (not isinstance(workflow, str) or not workflow):
            raise ValueError(f"workflow must be a non-empty string, got {workflow!r}")
        _SESSION.workflow = workflow
    if dir is not _UNSET:
        if dir is not None and not isinstance(dir, (str, os.PathLike)):
            raise TypeError(f"dir must be a path, got {type(dir).__name__}")
        _SESSION.close_stores()
        _SESSION.directory = None if dir is None else Path(dir).absolute()
        _SESSION.tracker = StatusTracker()  # another store: what this session saw is elsewhere
        _SESSION.produced_by.clear()
    if store is not _UNSET:
        if store is not None and (not isinstance(store, str) or "://" not in store):
            raise ValueError(
                f"store= takes a URL such as redis://127.0.0.1:6379/0 or s3://bucket/path, "
                f"got {store!r}; for a local folder use dir="
            )
        _SESSION.close_stores()
        _SESSION.shared = store
        _SESSION.tracker = StatusTracker()
        _SESSION.produced_by.clear()
    return _SESSION
