"""Workflow state: the saved steps of a workflow, and its JSON text form.

:class:`WorkflowState` mirrors awaitly's ``ResumeState``: ``steps`` maps each
key to a :class:`StepEntry` (``value`` and ``meta``), ``metadata`` holds what
:func:`stringify_state` was given.
"""

from __future__ import annotations

import binascii
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from awaitly_nb.errors import CacheWarning, StateFormatError, warn
from awaitly_nb.storage.codec import dumps_value, loads_value, versions

__all__ = [
    "STATE_FORMAT",
    "STATE_VERSION",
    "StepEntry",
    "StepMeta",
    "WorkflowState",
    "is_step_complete",
    "parse_state",
    "stringify_state",
]

STATE_FORMAT = "awaitly_nb/state"
STATE_VERSION = 1


@dataclass(frozen=True)
class StepMeta:
    """What is known about a saved step besides its value.

    Attributes:
        saved_at: when the value was saved (seconds since the epoch).
        duration_ms: how long the original run took.
        name: the step's optional name.
    """

    saved_at: float
    duration_ms: float = 0.0
    name: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"saved_at": self.saved_at, "duration_ms": self.duration_ms, "name": self.name}

    @classmethod
    def from_json(cls, data: Any, key: str) -> StepMeta:
        if not isinstance(data, dict):
            raise StateFormatError(f"step {key!r}: 'meta' must be an object")
        saved_at, duration, name = (
            data.get("saved_at"),
            data.get("duration_ms", 0.0),
            data.get("name"),
        )
        if not _is_number(saved_at) or not _is_number(duration):
            raise StateFormatError(f"step {key!r}: meta 'saved_at'/'duration_ms' must be numbers")
        if name is not None and not isinstance(name, str):
            raise StateFormatError(f"step {key!r}: meta 'name' must be a string or null")
        try:
            times = float(saved_at), float(duration)  # type: ignore[arg-type]
        except OverflowError:
            raise StateFormatError(f"step {key!r}: meta times are out of range") from None
        return cls(saved_at=times[0], duration_ms=times[1], name=name)


@dataclass(frozen=True)
class StepEntry:
    """A completed step: its ``value`` and its ``meta``."""

    value: Any
    meta: StepMeta


@dataclass
class WorkflowState:
    """The completed steps of a workflow.

    >>> state = WorkflowState({"user:1": StepEntry({"id": 1}, StepMeta(saved_at=0.0))})
    >>> "user:1" in state, len(state), state["user:1"].value
    (True, 1, {'id': 1})
    """

    steps: dict[str, StepEntry] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __contains__(self, key: object) -> bool:
        return key in self.steps

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self) -> Iterator[str]:
        return iter(self.steps)

    def __getitem__(self, key: str) -> StepEntry:
        return self.steps[key]

    def get(self, key: str) -> StepEntry | None:
        """The entry saved under ``key``, or None."""
        return self.steps.get(key)

    def values(self) -> dict[str, Any]:
        """A plain ``{key: value}`` dict of the saved values."""
        return {key: entry.value for key, entry in self.steps.items()}


def is_step_complete(state: WorkflowState | None, key: str) -> bool:
    """True if ``state`` holds a completed step under ``key``.

    ``state`` may be None (what a persistence ``load`` returns for an unknown id).

    >>> is_step_complete(None, "user:1")
    False
    >>> is_step_complete(WorkflowState({"user:1": StepEntry(1, StepMeta(0.0))}), "user:1")
    True
    """
    return state is not None and key in state.steps


def _is_number(x: Any) -> bool:
    return type(x) in (int, float)


def _is_plain_json(value: Any) -> bool:
    """True if ``value`` survives a JSON round trip with the same types and value."""
    kind = type(value)
    if value is None or kind is bool:
        return True
    if kind is str:
        return _is_utf8(value)
    if kind is int:
        return bool(value.bit_length() < _MAX_JSON_INT_BITS)
    if kind is float:
        return math.isfinite(value)
    if kind is list:
        return all(_is_plain_json(item) for item in value)
    if kind is dict:
        return all(type(k) is str and _is_utf8(k) and _is_plain_json(v) for k, v in value.items())
    return False


# Python refuses to print ints over 4300 digits (sys.set_int_max_str_digits); pickle those.
_MAX_JSON_INT_BITS = 13_000


def _is_utf8(text: str) -> bool:
    """False for strings with lone surrogates, which JSON text cannot carry portably."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _canonical_json(value: Any) -> bytes:
    import json  # only once state is written or read as text

    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8", "surrogatepass")


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _encode_entry(key: str, entry: StepEntry) -> dict[str, Any]:
    import base64

    value = entry.value
    try:
        plain = _is_plain_json(value)
    except RecursionError:
        plain = False
    out: dict[str, Any]
    if plain:
        out = {"encoding": "json", "value": value, "sha256": _sha256(_canonical_json(value))}
    else:
        data = dumps_value(value)
        out = {
            "encoding": "cloudpickle",
            "data": base64.b64encode(data).decode("ascii"),
            "sha256": _sha256(data),
        }
    out["meta"] = entry.meta.to_json()
    return out


def stringify_state(state: WorkflowState, metadata: Mapping[str, Any] | None = None) -> str:
    """Serialise ``state`` to JSON text, with optional JSON-able ``metadata``.

    JSON-able values (None, bool, int, finite float, str, lists, dicts with
    string keys) stay readable in the text; anything else is pickled with
    cloudpickle and base64-encoded. Every value carries a SHA-256 checksum.

    >>> state = WorkflowState({"n": StepEntry(42, StepMeta(saved_at=0.0))})
    >>> text = stringify_state(state, {"workflow_id": "wf-123"})
    >>> back = parse_state(text)
    >>> back["n"].value, back.metadata
    (42, {'workflow_id': 'wf-123'})

    Raises:
        SerializationError: a value cannot be pickled.
        TypeError: ``metadata`` is not JSON-serialisable.
    """
    if not isinstance(state, WorkflowState):
        raise TypeError(f"stringify_state() takes a WorkflowState, got {type(state).__name__}")
    meta = dict(state.metadata if metadata is None else metadata)
    doc = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "written_by": versions(),
        "metadata": meta,
        "steps": {key: _encode_entry(key, entry) for key, entry in state.steps.items()},
    }
    import json  # only once state is written or read as text

    try:
        return json.dumps(doc, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"state metadata must be JSON-serialisable: {exc}") from exc


def _decode_entry(key: str, raw: Any, written_by: dict[str, Any]) -> StepEntry | None:
    import base64

    if not isinstance(raw, dict):
        raise StateFormatError(f"step {key!r}: entry must be an object")
    meta = StepMeta.from_json(raw.get("meta"), key)
    encoding, digest = raw.get("encoding"), raw.get("sha256")
    if not isinstance(digest, str):
        raise StateFormatError(f"step {key!r}: missing checksum")
    if encoding == "json":
        if "value" not in raw:
            raise StateFormatError(f"step {key!r}: missing value")
        value = raw["value"]
        if _sha256(_canonical_json(value)) != digest:
            raise StateFormatError(f"step {key!r}: checksum mismatch (the value was altered)")
        return StepEntry(value, meta)
    if encoding == "cloudpickle":
        text = raw.get("data")
        if not isinstance(text, str):
            raise StateFormatError(f"step {key!r}: missing data")
        try:
            data = base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError) as exc:
            raise StateFormatError(f"step {key!r}: data is not valid base64 ({exc})") from exc
        if _sha256(data) != digest:
            raise StateFormatError(f"step {key!r}: checksum mismatch (the data was altered)")
        try:
            return StepEntry(loads_value(data, written_by), meta)
        except StateFormatError as exc:
            warn(
                f"step {key!r} is left out of the parsed state and will run again: {exc}",
                CacheWarning,
            )
            return None
    raise StateFormatError(f"step {key!r}: unknown encoding {encoding!r}")


def parse_state(text: str | bytes) -> WorkflowState:
    """Parse text made by :func:`stringify_state` back into a :class:`WorkflowState`.

    The format and version are checked and every value's checksum verified.
    A value that is intact but cannot be unpickled here (a module that is
    gone, another Python) is left out with a :class:`CacheWarning`, so its
    step runs again.

    Raises:
        StateFormatError: the text is not JSON, is truncated, has an unknown
            format version, or a value's checksum does not match.
    """
    if isinstance(text, (bytes, bytearray, memoryview)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise StateFormatError(f"state text is not UTF-8: {exc}") from exc
    if not isinstance(text, str):
        raise StateFormatError(f"parse_state() takes a str, got {type(text).__name__}")
    import json  # only once state is written or read as text

    try:
        doc = json.loads(text)
    except RecursionError as exc:
        raise StateFormatError("state text is nested too deeply to be a saved state") from exc
    except ValueError as exc:
        hint = " (truncated?)" if "Expecting" in str(exc) or "Unterminated" in str(exc) else ""
        raise StateFormatError(f"state text is not valid JSON{hint}: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
        raise StateFormatError(
            "not an awaitly_nb state: expected a JSON object with "
            f'"format": "{STATE_FORMAT}" (made by stringify_state)'
        )
    version = doc.get("version")
    if version != STATE_VERSION:
        raise StateFormatError(
            f"state format version {version!r} is not supported; this awaitly_nb "
            f"reads version {STATE_VERSION}"
        )
    steps, metadata = doc.get("steps"), doc.get("metadata", {})
    written_by = doc.get("written_by")
    if not isinstance(steps, dict):
        raise StateFormatError("state has no 'steps' object")
    if not isinstance(metadata, dict):
        raise StateFormatError("state 'metadata' must be an object")
    if not isinstance(written_by, dict):
        written_by = {}
    state = WorkflowState(metadata=metadata)
    for key, raw in steps.items():
        entry = _decode_entry(key, raw, written_by)
        if entry is not None:
            state.steps[key] = entry
    return state
