"""How objects become bytes: the versioned cloudpickle envelope.

An envelope is ``MAGIC``, a 4-byte little-endian header length, a JSON header
and the cloudpickle payload (protocol 5). The header records the format
version, the Python, cloudpickle and awaitly_nb versions that wrote it, the
payload's size and its xxh3-128 checksum, so a damaged or foreign entry is
recognised before anything is unpickled and reported with a reason.
"""

from __future__ import annotations

import json
import pickle
import platform
import struct
from typing import Any

import cloudpickle
import xxhash

from awaitly_nb._version import __version__
from awaitly_nb.errors import SerializationError, StateFormatError

__all__ = [
    "ENVELOPE_VERSION",
    "dumps_envelope",
    "dumps_value",
    "loads_envelope",
    "loads_value",
    "versions",
]

MAGIC = b"AWNB\x01"
ENVELOPE_VERSION = 1
_HEADER_LEN = struct.Struct("<I")


def versions() -> dict[str, str]:
    """The versions recorded with every saved value.

    >>> sorted(versions())
    ['awaitly_nb', 'cloudpickle', 'python']
    """
    return {
        "python": platform.python_version(),
        "cloudpickle": str(cloudpickle.__version__),
        "awaitly_nb": __version__,
    }


_VERSIONS = versions()


def dumps_value(value: Any) -> bytes:
    """Pickle ``value`` with cloudpickle (protocol 5).

    Raises:
        SerializationError: the value (or something inside it) cannot be pickled.
    """
    try:
        return bytes(cloudpickle.dumps(value, protocol=5))
    except Exception as exc:  # cloudpickle raises TypeError, PicklingError, AttributeError, ...
        raise SerializationError(
            f"cannot serialise a value of type {type(value).__qualname__}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def loads_value(data: Any, written_by: dict[str, Any] | None = None, buffers: Any = None) -> Any:
    """Unpickle bytes made by :func:`dumps_value` (``buffers``: its out-of-band buffers).

    Raises:
        StateFormatError: the bytes cannot be unpickled here; the message names
            the versions that wrote them when ``written_by`` is given.
    """
    try:
        return pickle.loads(data, buffers=buffers)
    except Exception as exc:  # any import or reduce error means "not loadable here"
        where = ""
        if written_by:
            theirs = ", ".join(f"{k} {written_by.get(k, '?')}" for k in _VERSIONS)
            ours = ", ".join(f"{k} {v}" for k, v in _VERSIONS.items())
            if theirs != ours:
                where = f" (written by {theirs}; this is {ours})"
        raise StateFormatError(
            f"cannot unpickle saved value{where}: {type(exc).__name__}: {exc}"
        ) from exc


def checksum(data: bytes | memoryview) -> str:
    """Fast content checksum (xxh3-128, hex) used on the save path."""
    return xxhash.xxh3_128_hexdigest(data)


def dumps_envelope(value: Any) -> bytes:
    """Serialise ``value`` into a self-describing envelope.

    >>> loads_envelope(dumps_envelope({"a": (1, 2)}))
    {'a': (1, 2)}
    """
    payload = dumps_value(value)
    header = dict(_VERSIONS)
    header["format"] = ENVELOPE_VERSION  # type: ignore[assignment]
    header["size"] = len(payload)  # type: ignore[assignment]
    header["xxh3_128"] = checksum(payload)
    head = json.dumps(header, separators=(",", ":")).encode()
    return b"".join((MAGIC, _HEADER_LEN.pack(len(head)), head, payload))


def read_header(data: bytes | memoryview) -> tuple[dict[str, Any], memoryview]:
    """Split an envelope into its header and payload, checking both.

    Raises:
        StateFormatError: not an envelope, an unknown version, truncated or damaged.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise StateFormatError(f"not an awaitly_nb entry (a {type(data).__name__}, not bytes)")
    view = memoryview(data)
    if bytes(view[: len(MAGIC)]) != MAGIC:
        raise StateFormatError("not an awaitly_nb entry (bad magic bytes)")
    start = len(MAGIC) + _HEADER_LEN.size
    if len(view) < start:
        raise StateFormatError("entry is truncated (no header)")
    (head_len,) = _HEADER_LEN.unpack(view[len(MAGIC) : start])
    try:
        header = json.loads(bytes(view[start : start + head_len]))
    except ValueError as exc:
        raise StateFormatError(f"entry header is damaged: {exc}") from exc
    if not isinstance(header, dict):
        raise StateFormatError("entry header is damaged: not a JSON object")
    version = header.get("format")
    if version != ENVELOPE_VERSION:
        raise StateFormatError(
            f"entry has format version {version!r}; this awaitly_nb "
            f"{__version__} reads version {ENVELOPE_VERSION}"
        )
    payload = view[start + head_len :]
    if len(payload) != header.get("size"):
        raise StateFormatError(
            f"entry is truncated or damaged: payload is {len(payload)} bytes, "
            f"header says {header.get('size')}"
        )
    if checksum(payload) != header.get("xxh3_128"):
        raise StateFormatError("entry is damaged: payload checksum does not match")
    return header, payload


def loads_envelope(data: bytes | memoryview) -> Any:
    """Load a value saved by :func:`dumps_envelope`.

    Raises:
        StateFormatError: the entry is damaged or cannot be unpickled here.
    """
    header, payload = read_header(data)
    return loads_value(payload, written_by=header)
