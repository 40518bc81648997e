"""Values as records: a small pickle stream in the index, big buffers in blob files.

A value is pickled with cloudpickle, protocol 5. Buffers of at least
``INLINE_BUFFER_LIMIT`` bytes (numpy and pandas data, Arrow buffers) are
handed out of band and written straight from their memory into blob files;
the rest of the stream stays inline in the record when it is small, else it
becomes a blob too. Loading maps the blobs copy-on-write, so restoring a
1 GB array costs about as much as restoring a 1 KB one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import pickle
import sys
from typing import Any

import xxhash

from awaitly_nb.errors import StateFormatError
from awaitly_nb.storage.blobs import BlobStore
from awaitly_nb.storage.serialize import dumps_value, loads_value, versions

__all__ = [
    "INLINE_BUFFER_LIMIT",
    "INLINE_STREAM_LIMIT",
    "RECORD_FORMAT",
    "VERIFY_LIMIT",
    "blob_names",
    "blob_refs",
    "decode",
    "encode",
    "record_from_json",
    "record_to_json",
]

RECORD_FORMAT = 2
INLINE_BUFFER_LIMIT = 64 * 1024
"""Buffers smaller than this stay inside the pickle stream."""
INLINE_STREAM_LIMIT = 16 * 1024
"""Pickle streams up to this size stay in the index record; larger ones become blobs."""
MAP_MIN = 1024 * 1024
"""Blobs at least this big are memory-mapped; smaller ones are read (cheap, and no
file descriptor stays open per buffer)."""
MAX_MAPS = 64
"""At most this many blobs of one value are mapped; the rest are read."""
VERIFY_LIMIT = 64 * 1024 * 1024
"""Blobs are hash-checked on every load while their total size is at most this;
bigger values are checked for size only (``verify`` checks everything)."""

_VERSIONS = versions()


def encode(value: Any, blobs: BlobStore) -> dict[str, Any]:
    """Serialise ``value``, writing its big buffers to ``blobs``; return the record.

    Raises:
        SerializationError: the value cannot be pickled; no record is made.
    """
    buffers: list[memoryview] = []

    def out_of_band(buffer: pickle.PickleBuffer) -> bool:
        raw = buffer.raw()
        if raw.nbytes < INLINE_BUFFER_LIMIT:
            return True  # in band
        buffers.append(raw)
        return False

    stream = dumps_value(value, buffer_callback=out_of_band)
    refs = [(blobs.put(raw), raw.nbytes) for raw in buffers]
    record: dict[str, Any] = {
        "format": RECORD_FORMAT,
        "versions": _VERSIONS,
        "stream_xxh3": xxhash.xxh3_128_hexdigest(stream),
        "buffers": refs,
        "nbytes": len(stream) + sum(size for _, size in refs),
    }
    if len(stream) <= INLINE_STREAM_LIMIT:
        record["stream"] = stream
    else:
        record["stream_ref"] = (blobs.put(memoryview(stream)), len(stream))
    return record


def _descriptors_to_spare(wanted: int) -> bool:
    """True if mapping ``wanted`` more blobs leaves half the descriptor limit free."""
    if sys.version_info >= (3, 13):
        return True  # maps do not keep a descriptor (mmap trackfd=False)
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        in_use = len(os.listdir("/proc/self/fd"))
    except (ImportError, OSError, ValueError):
        return wanted <= 16
    return soft == resource.RLIM_INFINITY or in_use + wanted <= soft // 2


def _is_ref(ref: Any) -> bool:
    return (
        isinstance(ref, (tuple, list))
        and len(ref) == 2
        and isinstance(ref[0], str)
        and type(ref[1]) is int
        and ref[1] >= 0
    )


def blob_refs(record: Any) -> list[tuple[str, int]]:
    """Every ``(blob name, size)`` a record refers to, buffers then stream.

    Raises:
        StateFormatError: the record's references are malformed.
    """
    if not isinstance(record, dict):
        raise StateFormatError(f"record is damaged: a {type(record).__name__}, not a dict")
    refs = record.get("buffers")
    if not isinstance(refs, list) or not all(_is_ref(r) for r in refs):
        raise StateFormatError("record is damaged: bad buffer list")
    found = [(str(name), int(size)) for name, size in refs]
    stream_ref = record.get("stream_ref")
    if stream_ref is not None:
        if not _is_ref(stream_ref):
            raise StateFormatError("record is damaged: bad stream reference")
        found.append((str(stream_ref[0]), int(stream_ref[1])))
    return found


def blob_names(record: Any) -> list[str]:
    """The blobs a record refers to (none for a malformed record)."""
    try:
        return [name for name, _ in blob_refs(record)]
    except StateFormatError:
        return []


def _refs(record: dict[str, Any]) -> list[tuple[str, int]]:
    refs = blob_refs(record)
    return refs[:-1] if record.get("stream_ref") is not None else refs


def decode(record: Any, blobs: BlobStore, *, verify_limit: int = VERIFY_LIMIT) -> Any:
    """Load the value of a record made by :func:`encode`.

    Raises:
        StateFormatError: the record or one of its blobs is damaged, missing,
            of an unknown format, or cannot be unpickled here.
    """
    if not isinstance(record, dict):
        raise StateFormatError(f"record is damaged: a {type(record).__name__}, not a dict")
    if record.get("format") != RECORD_FORMAT:
        raise StateFormatError(
            f"record has format {record.get('format')!r}; this awaitly_nb reads {RECORD_FORMAT}"
        )
    refs = _refs(record)
    stream: Any = record.get("stream")
    if stream is None:
        stream_ref: Any = record.get("stream_ref")
        if not _is_ref(stream_ref):
            raise StateFormatError("record is damaged: no pickle stream")
        stream = blobs.open(stream_ref[0], stream_ref[1])
    if not isinstance(stream, (bytes, bytearray, memoryview)) and not hasattr(stream, "madvise"):
        raise StateFormatError("record is damaged: the pickle stream is not bytes")
    if xxhash.xxh3_128_hexdigest(stream) != record.get("stream_xxh3"):
        raise StateFormatError("record is damaged: the pickle stream's checksum does not match")
    by_size = sorted(range(len(refs)), key=lambda i: -refs[i][1])
    mapped = {i for i in by_size[:MAX_MAPS] if refs[i][1] >= MAP_MIN}
    if mapped and not _descriptors_to_spare(len(mapped)):
        mapped = set()  # read instead: before Python 3.13 every map holds a descriptor
    buffers = [blobs.open(name, size, map=i in mapped) for i, (name, size) in enumerate(refs)]
    if sum(size for _, size in refs) <= verify_limit:
        for (name, _), buffer in zip(refs, buffers, strict=True):
            if xxhash.xxh3_128_hexdigest(buffer) != name:
                raise StateFormatError(f"blob {name} is damaged: its content does not match")
    versions_ = record.get("versions")
    return loads_value(stream, versions_ if isinstance(versions_, dict) else None, buffers)


def record_to_json(record: dict[str, Any]) -> dict[str, Any]:
    """A record as JSON-able data (its inline stream base64, with a SHA-256), for sharing."""
    out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in record.items() if k != "stream"}
    stream = record.get("stream")
    if stream is not None:
        out["stream_b64"] = base64.b64encode(stream).decode("ascii")
        out["stream_sha256"] = hashlib.sha256(stream).hexdigest()
    return out


def record_from_json(data: dict[str, Any], where: str) -> dict[str, Any]:
    """The inverse of :func:`record_to_json`.

    Raises:
        StateFormatError: the inline stream is not base64 or fails its checksum.
    """
    record = {k: v for k, v in data.items() if k not in ("stream_b64", "stream_sha256")}
    if "stream_b64" in data:
        try:
            stream = base64.b64decode(str(data["stream_b64"]).encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError) as exc:
            raise StateFormatError(f"{where}: the inline stream is not base64") from exc
        if hashlib.sha256(stream).hexdigest() != data.get("stream_sha256"):
            raise StateFormatError(f"{where}: the inline stream does not match its checksum")
        record["stream"] = stream
    return record
