"""The typed records a store keeps for each step: its manifest and its value record.

Both are frozen dataclasses with a format version that is checked when they
are read back. On disk (the diskcache index, a shared store's JSON, a bundle)
they are plain dicts: :meth:`~StepManifest.to_dict` and
:meth:`~StepManifest.from_dict`, so a stored entry never depends on where a
class lives in the package.

Formats (``tests/fixtures/`` keeps a store of each released one):

- manifest format 1 (awaitly_nb 0.1): key, workflow, kind, fingerprints,
  inputs, variables with types and sizes, timings, size, versions;
- value record format 2 (awaitly_nb 0.1): the pickle stream (inline or a
  blob), its xxh3-128, the out-of-band buffers as ``(blob name, size)``.
"""

from __future__ import annotations

import binascii
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from awaitly_nb.errors import StateFormatError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "MANIFEST_FORMAT",
    "RECORD_FORMAT",
    "BlobRef",
    "StepManifest",
    "ValueRecord",
]

MANIFEST_FORMAT = 1
RECORD_FORMAT = 2


@dataclass(frozen=True)
class BlobRef:
    """A blob a value needs: its name (the xxh3-128 of its bytes) and its size."""

    name: str
    size: int

    @staticmethod
    def valid(data: Any) -> bool:
        """True for a stored reference: a pair of a string and a non-negative int."""
        return (
            isinstance(data, (tuple, list))
            and len(data) == 2
            and isinstance(data[0], str)
            and type(data[1]) is int
            and data[1] >= 0
        )


@dataclass(frozen=True)
class ValueRecord:
    """How a saved value is stored: its pickle stream and out-of-band buffers.

    The stream is ``stream`` (inline bytes) or the blob ``stream_ref``;
    ``buffers`` are the blobs handed to ``pickle.loads(..., buffers=)`` in order.
    """

    stream_xxh3: str
    buffers: tuple[BlobRef, ...] = ()
    stream: bytes | None = None
    stream_ref: BlobRef | None = None
    versions: Mapping[str, str] = field(default_factory=dict)
    nbytes: int = 0

    def blobs(self) -> list[BlobRef]:
        """Every blob the value needs: its buffers, then its stream if that is a blob."""
        return [*self.buffers, *([self.stream_ref] if self.stream_ref is not None else [])]

    def to_dict(self) -> dict[str, Any]:
        """The record as stored in an index (blob references as tuples)."""
        data: dict[str, Any] = {
            "format": RECORD_FORMAT,
            "versions": dict(self.versions),
            "stream_xxh3": self.stream_xxh3,
            "buffers": [(ref.name, ref.size) for ref in self.buffers],
            "nbytes": self.nbytes,
        }
        if self.stream is not None:
            data["stream"] = self.stream
        if self.stream_ref is not None:
            data["stream_ref"] = (self.stream_ref.name, self.stream_ref.size)
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str = "record") -> ValueRecord:
        """Read a stored record.

        Raises:
            StateFormatError: it is damaged, or of a format this version cannot read.
        """
        if not isinstance(data, dict):
            raise StateFormatError(f"{where} is damaged: a {type(data).__name__}, not a dict")
        if data.get("format") != RECORD_FORMAT:
            raise StateFormatError(
                f"{where} has format {data.get('format')!r}; this awaitly_nb reads {RECORD_FORMAT}"
            )
        refs = data.get("buffers")
        if not isinstance(refs, (list, tuple)) or not all(BlobRef.valid(r) for r in refs):
            raise StateFormatError(f"{where} is damaged: bad buffer list")
        buffers = tuple(BlobRef(name, size) for name, size in refs)
        stream, stream_ref = data.get("stream"), data.get("stream_ref")
        if stream_ref is not None:
            if not BlobRef.valid(stream_ref):
                raise StateFormatError(f"{where} is damaged: bad stream reference")
            stream_ref = BlobRef(*stream_ref)
        elif stream is None:
            raise StateFormatError(f"{where} is damaged: no pickle stream")
        elif not isinstance(stream, (bytes, bytearray)):
            raise StateFormatError(f"{where} is damaged: the pickle stream is not bytes")
        checksum, versions, nbytes = (
            data.get("stream_xxh3"),
            data.get("versions"),
            data.get("nbytes", 0),
        )
        if not isinstance(checksum, str):
            raise StateFormatError(
                f"{where} is damaged: the pickle stream's checksum does not match"
            )
        return cls(
            stream_xxh3=checksum,
            buffers=buffers,
            stream=None if stream is None or stream_ref is not None else bytes(stream),
            stream_ref=stream_ref,
            versions=dict(versions) if isinstance(versions, dict) else {},
            nbytes=nbytes if type(nbytes) is int else 0,
        )

    def to_json(self) -> dict[str, Any]:
        """The record as JSON-able data (its inline stream base64, with a SHA-256), for sharing."""
        import base64
        import hashlib

        data = self.to_dict()
        data["buffers"] = [list(ref) for ref in data["buffers"]]
        if "stream_ref" in data:
            data["stream_ref"] = list(data["stream_ref"])
        stream = data.pop("stream", None)
        if stream is not None:
            data["stream_b64"] = base64.b64encode(stream).decode("ascii")
            data["stream_sha256"] = hashlib.sha256(stream).hexdigest()
        return data

    @classmethod
    def from_json(cls, data: Any, where: str) -> ValueRecord:
        """The inverse of :meth:`to_json`.

        Raises:
            StateFormatError: damaged, or the inline stream is not base64 or fails its checksum.
        """
        import base64
        import hashlib

        if not isinstance(data, dict):
            raise StateFormatError(f"{where} is damaged: the record is not an object")
        record = {k: v for k, v in data.items() if k not in ("stream_b64", "stream_sha256")}
        if "stream_b64" in data:
            try:
                stream = base64.b64decode(str(data["stream_b64"]).encode("ascii"), validate=True)
            except (binascii.Error, UnicodeEncodeError) as exc:
                raise StateFormatError(f"{where}: the inline stream is not base64") from exc
            if hashlib.sha256(stream).hexdigest() != data.get("stream_sha256"):
                raise StateFormatError(f"{where}: the inline stream does not match its checksum")
            record["stream"] = stream
        return cls.from_dict(record, where)


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    number = float(value)
    return number if math.isfinite(number) else 0.0


def _stamps(value: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict) or not value:
        return {}
    return {str(k): dict(v) for k, v in value.items() if isinstance(v, dict)}


def _text_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or not value:
        return {}
    return {str(k): str(v) for k, v in value.items()}


@dataclass(frozen=True)
class StepManifest:
    """What a store knows about a saved step without loading its value.

    Attributes:
        workflow: the workflow the step belongs to (the notebook's name).
        key: the step's key.
        kind: ``cell`` (``%%step``), ``block`` (``with step``) or ``call`` (``step(fn)``).
        fingerprint: the code fingerprint folded with the inputs' versions:
            what a lookup compares.
        code: the code fingerprint alone (to tell a code change from an input change).
        inputs: what the step read, by name: ``"v:<digest>"`` for a value
            fingerprinted by value, else a lineage stamp (``"key@saved_at"``
            of the step that produced it, or ``"unchecked:<type>"``).
        summaries: a short description of each input fingerprinted by value
            (``5``, ``DataFrame 1000x4``), for the note that says what changed.
        sources: inputs that were, provably, exactly the value a saved step
            saved: ``{name: "workflow/key@saved_at"}`` (see :mod:`awaitly_nb.core.memo`).
        files: the files the step opened for reading while it ran, by absolute
            path: ``{"size", "mtime_ns", "xxh3"}``.
        deps: the same for the files its ``deps=`` named.
        variables: the variables it saved, sorted.
        types: each variable's type name.
        nbytes: each variable's size in memory (a cheap estimate).
        duration_ms: how long the original run took.
        saved_at: when it was saved (seconds since the epoch).
        size: bytes of its saved value (stream and buffers).
        versions: the Python, cloudpickle and awaitly_nb versions that wrote it.
        extra: fields this version does not know (kept as read).
    """

    workflow: str
    key: str
    kind: str = "cell"
    fingerprint: str | None = None
    code: str | None = None
    inputs: Mapping[str, str] = field(default_factory=dict)
    summaries: Mapping[str, str] = field(default_factory=dict)
    sources: Mapping[str, str] = field(default_factory=dict)
    files: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    deps: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    variables: tuple[str, ...] = ()
    types: Mapping[str, str] = field(default_factory=dict)
    nbytes: Mapping[str, int] = field(default_factory=dict)
    duration_ms: float = 0.0
    saved_at: float = 0.0
    size: int = 0
    versions: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The manifest as stored: JSON-able, with its format version."""
        data: dict[str, Any] = dict(self.extra)
        for name in _STORED:
            value = getattr(self, name)
            if isinstance(value, Mapping):
                value = dict(value)
            elif isinstance(value, tuple):
                value = list(value)
            data[name] = value
        data["format"] = MANIFEST_FORMAT
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str = "manifest") -> StepManifest:
        """Read a stored manifest.

        Raises:
            StateFormatError: it is damaged or of a format version this awaitly_nb
                does not read (the message names the version).
        """
        if not isinstance(data, dict):
            raise StateFormatError(f"{where} is damaged: a {type(data).__name__}, not a dict")
        version = data.get("format", MANIFEST_FORMAT)
        if version != MANIFEST_FORMAT:
            raise StateFormatError(
                f"{where} has manifest format {version!r}; this awaitly_nb reads "
                f"format {MANIFEST_FORMAT} (saved by another awaitly_nb version?)"
            )
        workflow, key = data.get("workflow"), data.get("key")
        if not isinstance(workflow, str) or not isinstance(key, str):
            raise StateFormatError(f"{where} is damaged: no workflow or key")
        get = data.get
        fingerprint, code, variables = get("fingerprint"), get("code"), get("variables")
        nbytes, size = get("nbytes"), get("size", 0)
        return cls(
            workflow=workflow,
            key=key,
            kind=str(get("kind", "cell")),
            fingerprint=fingerprint if isinstance(fingerprint, str) else None,
            code=code if isinstance(code, str) else None,
            inputs=_text_map(get("inputs")),
            summaries=_text_map(get("summaries")),
            sources=_text_map(get("sources")),
            files=_stamps(get("files")),
            deps=_stamps(get("deps")),
            variables=tuple(map(str, variables)) if isinstance(variables, list) else (),
            types=_text_map(get("types")),
            nbytes={str(k): v for k, v in nbytes.items() if type(v) is int}
            if isinstance(nbytes, dict) and nbytes
            else {},
            duration_ms=_number(get("duration_ms")),
            saved_at=_number(get("saved_at")),
            size=size if type(size) is int else 0,
            versions=_text_map(get("versions")),
            extra={k: data[k] for k in data.keys() - _KNOWN},
        )


_STORED = tuple(f.name for f in fields(StepManifest) if f.name != "extra")
_KNOWN = frozenset((*_STORED, "format"))
