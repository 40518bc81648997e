"""``create_state_persistence``: save and load workflow states through a key/value adapter."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from types import SimpleNamespace
from typing import Any, TypeVar

from awaitly_nb.core.state import WorkflowState, parse_state, stringify_state
from awaitly_nb.errors import StateFormatError
from awaitly_nb.storage.adapters import ADAPTER_METHODS, MemoryAdapter

__all__ = ["StatePersistence", "create_state_persistence"]

T = TypeVar("T")
R = TypeVar("R")

_METHODS = ADAPTER_METHODS


def _then(result: Any, fn: Callable[[Any], R]) -> R | Awaitable[R]:
    """Apply ``fn`` to ``result`` now, or after awaiting it if the adapter is async."""
    if inspect.isawaitable(result):

        async def later() -> R:
            return fn(await result)

        return later()
    return fn(result)


def _glob_escape(text: str) -> str:
    # Bracket escaping means the same in fnmatch and in Redis' KEYS patterns.
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def _as_text(raw: Any) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, (bytes, bytearray, memoryview)):
        try:
            return bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StateFormatError(f"the stored state is not UTF-8 text: {exc}") from exc
    if isinstance(raw, str):
        return raw
    raise StateFormatError(
        f"the persistence adapter's get() returned {type(raw).__name__}, not the saved text"
    )


def _adapt(adapter: Any) -> Any:
    if isinstance(adapter, Mapping) and any(m in adapter for m in _METHODS):
        missing = [m for m in _METHODS if not callable(adapter.get(m))]
        if not missing:
            return SimpleNamespace(**{m: adapter[m] for m in _METHODS})
    elif isinstance(adapter, MutableMapping):
        return MemoryAdapter(adapter)
    else:
        missing = [m for m in _METHODS if not callable(getattr(adapter, m, None))]
        if not missing:
            return adapter
    raise TypeError(
        "a persistence adapter needs get(key), set(key, value), delete(key), exists(key) "
        f"and keys(pattern); {type(adapter).__name__} lacks {', '.join(missing)}"
    )


class StatePersistence:
    """Saves :class:`WorkflowState` objects as JSON text under ``prefix + id``.

    Each method returns its result directly when the adapter is synchronous,
    and an awaitable when the adapter's methods are coroutines.
    """

    def __init__(self, adapter: Any, prefix: str = "workflow:state:") -> None:
        if not isinstance(prefix, str):
            raise TypeError("prefix must be a string")
        self.adapter = _adapt(adapter)
        self.prefix = prefix

    def _key(self, workflow_id: str) -> str:
        if not isinstance(workflow_id, str) or not workflow_id:
            raise ValueError(f"a workflow id must be a non-empty string, got {workflow_id!r}")
        return self.prefix + workflow_id

    def save(
        self, workflow_id: str, state: WorkflowState, metadata: Mapping[str, Any] | None = None
    ) -> Any:
        """Save ``state`` (and JSON-able ``metadata``) under ``workflow_id``."""
        text = stringify_state(state, metadata)
        return _then(self.adapter.set(self._key(workflow_id), text), lambda _: None)

    def load(self, workflow_id: str) -> Any:
        """The saved state, or None if there is none.

        Raises:
            StateFormatError: the stored text is damaged or of an unknown version.
        """

        def parse(raw: Any) -> WorkflowState | None:
            text = _as_text(raw)
            return None if text is None else parse_state(text)

        return _then(self.adapter.get(self._key(workflow_id)), parse)

    def load_raw(self, workflow_id: str) -> Any:
        """The stored JSON text as is, or None."""
        return _then(self.adapter.get(self._key(workflow_id)), _as_text)

    def delete(self, workflow_id: str) -> Any:
        """Delete the saved state; True if there was one."""
        return _then(self.adapter.delete(self._key(workflow_id)), lambda n: bool(n))

    def exists(self, workflow_id: str) -> Any:
        """True if a state is saved under ``workflow_id``."""
        return _then(self.adapter.exists(self._key(workflow_id)), lambda n: bool(n))

    def list(self) -> Any:
        """The ids of all saved states, sorted."""
        size = len(self.prefix)

        def strip(keys: Any) -> list[str]:
            return sorted(_as_text(k)[size:] for k in keys)  # type: ignore[index]

        return _then(self.adapter.keys(_glob_escape(self.prefix) + "*"), strip)

    def __repr__(self) -> str:
        return f"StatePersistence({type(self.adapter).__name__}, prefix={self.prefix!r})"


def create_state_persistence(adapter: Any, prefix: str = "workflow:state:") -> StatePersistence:
    """Create a state persistence over a key/value ``adapter``.

    This is awaitly's ``createStatePersistence``.

    ``adapter`` is an object, or a mapping of functions, with ``get``, ``set``,
    ``delete``, ``exists`` and ``keys(pattern)``; if they are coroutines, the
    persistence's methods must be awaited. A plain dict also works as an
    in-memory store. Ready adapters: :class:`~awaitly_nb.MemoryAdapter` and
    :class:`~awaitly_nb.DiskCacheAdapter`.

    >>> from awaitly_nb import MemoryAdapter, WorkflowState
    >>> persistence = create_state_persistence(MemoryAdapter())
    >>> persistence.save("wf-123", WorkflowState(), {"user_id": "user-1"})
    >>> persistence.list(), persistence.load("wf-123").metadata, persistence.load("nope")
    (['wf-123'], {'user_id': 'user-1'}, None)
    """
    return StatePersistence(adapter, prefix)
