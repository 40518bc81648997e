"""A persistent step cache on diskcache: ``create_file_cache``."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

import diskcache

from awaitly_nb.errors import CacheWarning, StateFormatError, StorageError, reason, warn
from awaitly_nb.storage.blobs import BlobStore, GcReport
from awaitly_nb.storage.local import open_index
from awaitly_nb.storage.manifest import ValueRecord
from awaitly_nb.storage.names import check_name
from awaitly_nb.storage.values import read_value, write_value

__all__ = ["FileCache", "create_file_cache"]

_ENOVAL = diskcache.core.ENOVAL


def _ttl_seconds(ttl: float | timedelta | None, ttl_ms: float | None) -> float | None:
    if ttl is not None and ttl_ms is not None:
        raise TypeError("give either ttl= (seconds or timedelta) or ttl_ms=, not both")
    if ttl_ms is not None:
        if isinstance(ttl_ms, bool) or not isinstance(ttl_ms, (int, float)):
            raise TypeError(f"ttl_ms must be a number of milliseconds, got {ttl_ms!r}")
        seconds: float = ttl_ms / 1000.0
    elif ttl is None:
        return None
    elif isinstance(ttl, timedelta):
        seconds = ttl.total_seconds()
    elif isinstance(ttl, (int, float)) and not isinstance(ttl, bool):
        seconds = float(ttl)
    else:
        raise TypeError(f"ttl must be seconds (a number) or a datetime.timedelta, got {ttl!r}")
    if not seconds > 0:
        raise ValueError(f"ttl must be positive, got {seconds} seconds")
    return seconds


class FileCache:
    """A step cache that persists in a directory, backed by ``diskcache.Cache``.

    It implements awaitly's ``StepCache`` (``get``, ``set``, ``has``,
    ``delete``, ``clear``) and can be passed as ``create_workflow(cache=...)``.
    Values are stored like notebook steps (:mod:`awaitly_nb.storage.values`):
    big arrays in blob files, mapped back lazily. An entry that cannot be
    loaded (damaged, or written by another Python) is reported with a
    :class:`~awaitly_nb.errors.CacheWarning` and treated as absent. Entries
    older than ``ttl`` are absent too. Several processes may share one directory.

    >>> import tempfile
    >>> with create_file_cache(tempfile.mkdtemp(), ttl=60) as cache:
    ...     cache.set("user:1", {"name": "Ada"})
    ...     cache.get("user:1"), cache.has("user:2")
    ({'name': 'Ada'}, False)
    """

    def __init__(self, directory: str | os.PathLike[str], *, ttl: float | None = None) -> None:
        self.directory = Path(directory)
        self.ttl = ttl
        self._cache = open_index(self.directory, what="the file cache")
        self._blobs = BlobStore(self.directory / "blobs")

    def get(self, key: str, default: Any = None) -> Any:
        """The value saved under ``key``, or ``default`` if absent, expired or unusable."""
        check_name(key)
        try:
            raw = self._cache.get(key, default=_ENOVAL)
        except Exception as exc:  # a damaged database or record (diskcache unpickles it)
            warn(
                f"the file cache entry {key!r} in {self.directory} cannot be read and is "
                f"treated as not saved: {reason(exc)}",
                CacheWarning,
            )
            return default
        if raw is _ENOVAL:
            return default
        try:
            return read_value(ValueRecord.from_dict(raw, f"cache entry {key!r}"), self._blobs)
        except StateFormatError as exc:
            warn(
                f"cache entry {key!r} in {self.directory} cannot be used and is "
                f"treated as not saved: {exc}",
                CacheWarning,
            )
            return default

    def set(self, key: str, value: Any) -> None:
        """Save ``value`` under ``key`` (it expires after the cache's ``ttl``).

        Raises:
            SerializationError: the value cannot be pickled; nothing is written.
        """
        check_name(key)
        record = write_value(value, self._blobs).to_dict()
        try:
            self._cache.set(key, record, expire=self.ttl)
        except (sqlite3.DatabaseError, OSError) as exc:
            raise StorageError(f"cannot save {key!r} in {self.directory}: {exc}") from exc

    def has(self, key: str) -> bool:
        """True if an unexpired entry is saved under ``key``."""
        return key in self._cache

    def delete(self, key: str) -> bool:
        """Remove ``key``; True if it was there."""
        return bool(self._cache.delete(key))

    def clear(self) -> None:
        """Remove every entry (and the blobs only they used)."""
        self._cache.clear()
        self.gc(min_age=0)

    def gc(self, *, min_age: float = 600.0) -> GcReport:
        """Delete expired entries and the blob files no entry refers to."""
        self._cache.expire()
        keep = {ref.name for key in self._cache.iterkeys() for ref in self._blobs_of(key)}
        return self._blobs.collect(keep, min_age=min_age)

    def _blobs_of(self, key: Any) -> list[Any]:
        try:
            return ValueRecord.from_dict(self._cache.get(key)).blobs()
        except StateFormatError:
            return []

    def keys(self) -> Iterator[str]:
        """The keys saved (expired ones may still be listed until evicted)."""
        return (k for k in self._cache.iterkeys() if isinstance(k, str))

    def __contains__(self, key: object) -> bool:
        return key in self._cache

    def __len__(self) -> int:
        return len(self._cache)

    def close(self) -> None:
        """Close the underlying database files (reopened on next use)."""
        self._cache.close()

    def __enter__(self) -> FileCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FileCache({str(self.directory)!r}, ttl={self.ttl!r})"


def create_file_cache(
    directory: str | os.PathLike[str],
    *,
    ttl: float | timedelta | None = None,
    ttl_ms: float | None = None,
) -> FileCache:
    """Create a persistent step cache in ``directory`` (awaitly's ``createFileCache``).

    Args:
        directory: where the cache lives; created if missing.
        ttl: how long entries live, in seconds or as a ``timedelta``; None keeps them.
        ttl_ms: the same in milliseconds (the seed's ``ttlMs`` spelling).

    >>> import tempfile
    >>> cache = create_file_cache(tempfile.mkdtemp(), ttl_ms=7 * 24 * 60 * 60 * 1000)
    >>> cache.ttl
    604800.0
    """
    return FileCache(directory, ttl=_ttl_seconds(ttl, ttl_ms))
