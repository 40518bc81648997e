"""A value in a store: the codec's bytes written to blob files, and read back by memory map.

:func:`write_value` encodes a value (:mod:`awaitly_nb.storage.codec`), writes
its big buffers straight from their memory into content-addressed blobs and
returns the :class:`~awaitly_nb.storage.manifest.ValueRecord` to keep in the
index; the pickle stream stays inline when it is small. :func:`read_value`
maps the blobs copy-on-write, so restoring a 1 GB array costs about as much
as restoring a 1 KB one.
"""

from __future__ import annotations

import os
import sys

import xxhash

from awaitly_nb.errors import StateFormatError
from awaitly_nb.storage.codec import decode, encode, versions
from awaitly_nb.storage.manifest import BlobRef, ValueRecord

TYPE_CHECKING = False  # typing is not imported at run time: see awaitly_nb._namedtuple
if TYPE_CHECKING:
    from typing import Any, Protocol

    class BlobWriter(Protocol):
        """Where :func:`write_value` puts buffers: ``put`` returns the blob's name."""

        def put(self, data: memoryview) -> str: ...

    class BlobReader(Protocol):
        """Where :func:`read_value` gets them: the blob's bytes, mapped or read."""

        def open(self, name: str, size: int, *, map: bool = True) -> Any: ...


__all__ = [
    "INLINE_STREAM_LIMIT",
    "MAP_MIN",
    "MAX_MAPS",
    "VERIFY_LIMIT",
    "read_value",
    "write_value",
]

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


def write_value(value: Any, blobs: BlobWriter) -> ValueRecord:
    """Serialise ``value``, writing its big buffers to ``blobs``; return its record.

    Raises:
        SerializationError: the value cannot be pickled; nothing is written.
        StorageError: a blob cannot be written.
    """
    encoded = encode(value)
    refs = tuple(BlobRef(blobs.put(raw), raw.nbytes) for raw in encoded.buffers)
    stream = encoded.stream
    inline = len(stream) <= INLINE_STREAM_LIMIT
    return ValueRecord(
        stream_xxh3=xxhash.xxh3_128_hexdigest(stream),
        buffers=refs,
        stream=stream if inline else None,
        stream_ref=None if inline else BlobRef(blobs.put(memoryview(stream)), len(stream)),
        versions=versions(),
        nbytes=len(stream) + sum(ref.size for ref in refs),
    )


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


def _checked_stream(record: ValueRecord, blobs: BlobReader) -> Any:
    """The record's pickle stream (inline or a blob), checked against its hash.

    Raises:
        StateFormatError: it is missing or damaged.
    """
    stream: Any = record.stream
    if stream is None:
        if record.stream_ref is None:
            raise StateFormatError("record is damaged: no pickle stream")
        stream = blobs.open(record.stream_ref.name, record.stream_ref.size)
    if xxhash.xxh3_128_hexdigest(stream) != record.stream_xxh3:
        raise StateFormatError("record is damaged: the pickle stream's checksum does not match")
    return stream


def check_value(record: ValueRecord, blobs: BlobReader) -> None:
    """Check a record's stream and every blob against their hashes, unpickling nothing
    (unpickling runs code: checking what someone else saved must not).

    Raises:
        StateFormatError: the stream or a blob is damaged or missing.
    """
    stream = _checked_stream(record, blobs)
    wanted = _buffers_wanted(stream)
    if wanted != len(record.buffers):
        raise StateFormatError(
            f"record is damaged: its pickle stream takes {wanted} buffer(s), "
            f"the record names {len(record.buffers)}"
        )
    for ref in record.buffers:
        if xxhash.xxh3_128_hexdigest(blobs.open(ref.name, ref.size)) != ref.name:
            raise StateFormatError(f"blob {ref.name} is damaged: its content does not match")


def _buffers_wanted(stream: Any) -> int:
    """How many out-of-band buffers a pickle stream takes, read by pickletools' opcode
    parser (which runs none of the stream's code).

    Raises:
        StateFormatError: the stream is not a well-formed pickle.
    """
    import pickletools

    try:
        return sum(op.name == "NEXT_BUFFER" for op, _, _ in pickletools.genops(bytes(stream)))
    except Exception as exc:  # ValueError and friends from a malformed stream
        raise StateFormatError(
            f"record is damaged: its pickle stream is malformed ({exc})"
        ) from None


def read_value(record: ValueRecord, blobs: BlobReader, *, verify_limit: int = VERIFY_LIMIT) -> Any:
    """Load the value of a record made by :func:`write_value`.

    Raises:
        StateFormatError: one of its blobs is damaged or missing, or the value
            cannot be unpickled here.
    """
    stream = _checked_stream(record, blobs)
    refs = record.buffers
    by_size = sorted(range(len(refs)), key=lambda i: -refs[i].size)
    mapped = {i for i in by_size[:MAX_MAPS] if refs[i].size >= MAP_MIN}
    if mapped and not _descriptors_to_spare(len(mapped)):
        mapped = set()  # read instead: before Python 3.13 every map holds a descriptor
    buffers = [blobs.open(ref.name, ref.size, map=i in mapped) for i, ref in enumerate(refs)]
    if sum(ref.size for ref in refs) <= verify_limit:
        for ref, buffer in zip(refs, buffers, strict=True):
            if xxhash.xxh3_128_hexdigest(buffer) != ref.name:
                raise StateFormatError(f"blob {ref.name} is damaged: its content does not match")
    return decode(stream, buffers, dict(record.versions) or None)
