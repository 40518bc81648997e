"""Persistence adapters: key/value stores for ``create_state_persistence``.

An adapter has ``get(key)``, ``set(key, value)``, ``delete(key)``,
``exists(key)`` and ``keys(pattern)`` (a glob pattern such as
``"workflow:state:*"``). These two ship with the package; any object or
mapping of functions with the same names works, sync or async.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

import diskcache

__all__ = ["DiskCacheAdapter", "MemoryAdapter"]


class MemoryAdapter:
    """An in-process adapter backed by a dict (for tests and short-lived scripts).

    >>> adapter = MemoryAdapter()
    >>> adapter.set("workflow:state:wf-1", "{}")
    >>> adapter.keys("workflow:state:*"), adapter.exists("nope")
    (['workflow:state:wf-1'], False)
    """

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def get(self, key: str) -> str | None:
        return self.data.get(key)

    def set(self, key: str, value: str) -> None:
        self.data[key] = value

    def delete(self, key: str) -> bool:
        return self.data.pop(key, None) is not None

    def exists(self, key: str) -> bool:
        return key in self.data

    def keys(self, pattern: str) -> list[str]:
        return sorted(k for k in self.data if fnmatch.fnmatchcase(k, pattern))


class DiskCacheAdapter:
    """An adapter that keeps state texts in a ``diskcache.Cache`` directory.

    Args:
        directory: a folder path, or an open ``diskcache.Cache`` to share.

    >>> import tempfile
    >>> adapter = DiskCacheAdapter(tempfile.mkdtemp())
    >>> adapter.set("k", "v"); adapter.get("k"), adapter.delete("k"), adapter.get("k")
    ('v', True, None)
    """

    def __init__(self, directory: str | os.PathLike[str] | diskcache.Cache) -> None:
        if isinstance(directory, diskcache.Cache):
            self.cache = directory
        else:
            self.cache = diskcache.Cache(str(Path(directory)), eviction_policy="none")

    def get(self, key: str) -> str | bytes | None:
        value = self.cache.get(key)
        return value  # type: ignore[no-any-return]

    def set(self, key: str, value: str) -> None:
        self.cache.set(key, value)

    def delete(self, key: str) -> bool:
        return bool(self.cache.delete(key))

    def exists(self, key: str) -> bool:
        return key in self.cache

    def keys(self, pattern: str) -> list[str]:
        return sorted(
            k
            for k in self.cache.iterkeys()
            if isinstance(k, str) and fnmatch.fnmatchcase(k, pattern)
        )

    def close(self) -> None:
        self.cache.close()
