"""Key/value adapters: the one protocol behind ``create_state_persistence`` and shared stores.

An adapter (:class:`KeyValueAdapter`) has ``get(key)``, ``set(key, value)``,
``delete(key)``, ``exists(key)`` and ``keys(pattern)`` (a glob pattern such
as ``"workflow:state:*"``). Four ship with the package: in memory (or over
any dict), diskcache, Redis and fsspec. Any object or mapping of functions
with the same names works with ``create_state_persistence``, sync or async.
An adapter whose ``concurrent`` attribute is true may be called from several
threads at once: a shared store then moves a big blob's parts in parallel.
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import hashlib
import os
import uuid
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import diskcache

__all__ = [
    "ADAPTER_METHODS",
    "DiskCacheAdapter",
    "FsspecAdapter",
    "KeyValueAdapter",
    "MemoryAdapter",
    "RedisAdapter",
]

ADAPTER_METHODS = ("get", "set", "delete", "exists", "keys")


@runtime_checkable
class KeyValueAdapter(Protocol):
    """What an adapter has; each method may also be a coroutine (for persistence)."""

    def get(self, key: str) -> Any: ...
    def set(self, key: str, value: Any) -> Any: ...
    def delete(self, key: str) -> Any: ...
    def exists(self, key: str) -> Any: ...
    def keys(self, pattern: str) -> Any: ...


class MemoryAdapter:
    """An in-process adapter over a dict (a new one, or one you pass in).

    >>> adapter = MemoryAdapter()
    >>> adapter.set("workflow:state:wf-1", "{}")
    >>> adapter.keys("workflow:state:*"), adapter.exists("nope")
    (['workflow:state:wf-1'], False)
    """

    def __init__(self, data: MutableMapping[str, Any] | None = None) -> None:
        self.data: MutableMapping[str, Any] = {} if data is None else data

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value

    def delete(self, key: str) -> bool:
        return self.data.pop(key, None) is not None

    def exists(self, key: str) -> bool:
        return key in self.data

    def keys(self, pattern: str) -> list[str]:
        return sorted(
            k for k in self.data if isinstance(k, str) and fnmatch.fnmatchcase(k, pattern)
        )


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


class RedisAdapter:
    """An adapter on a Redis server (redis-py): share states and steps with a team.

    Args:
        url: ``redis://host:port/db`` (or ``rediss://``, ``unix://``), or a
            ready ``redis.Redis`` client.
        prefix: put before every key, to share one database between projects.
        options: for ``redis.Redis.from_url`` (password, ``ssl_ca_certs``, timeouts;
            connecting waits at most 5 s and a reply 10 s unless they say otherwise).

    Values come back as ``bytes``; keys are listed with ``SCAN`` (never ``KEYS``).
    """

    concurrent = True  # redis-py's client keeps a pool of connections

    def __init__(self, url: Any, *, prefix: str = "", **options: Any) -> None:
        self.client: Any
        if isinstance(url, str):
            try:
                import redis
            except ImportError as exc:  # pragma: no cover - an optional dependency
                raise ImportError("RedisAdapter needs redis-py: pip install redis") from exc
            # Bounded waits: an unreachable server is reported within seconds, not hung on.
            options = {"socket_connect_timeout": 5, "socket_timeout": 10, **options}
            self.client = redis.Redis.from_url(url, **options)
            self.url = url
        else:
            self.client, self.url = url, repr(url)
        self.prefix = prefix

    def get(self, key: str) -> bytes | None:
        value = self.client.get(self.prefix + key)
        return None if value is None else bytes(value)

    def set(self, key: str, value: str | bytes) -> None:
        self.client.set(self.prefix + key, value)

    def delete(self, key: str) -> bool:
        return bool(self.client.delete(self.prefix + key))

    def exists(self, key: str) -> bool:
        return bool(self.client.exists(self.prefix + key))

    def keys(self, pattern: str) -> list[str]:
        size = len(self.prefix)
        found = self.client.scan_iter(match=_redis_escape(self.prefix) + pattern, count=1000)
        return sorted((k.decode() if isinstance(k, bytes) else str(k))[size:] for k in found)

    def __repr__(self) -> str:
        return f"RedisAdapter({self.url!r})"


def _redis_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


_MAX_NAME = 200  # file names longer than about 255 bytes are refused by most file systems


S3_TIMEOUTS = {"connect_timeout": 5, "read_timeout": 10, "retries": {"max_attempts": 2}}
"""botocore settings for S3 unless ``storage_options`` say otherwise: an unreachable
endpoint is reported within seconds (botocore waits 60 s to connect, with retries).
The read timeout is the longest silence while a reply arrives, not its whole time."""
S3_RETRIES = 1
"""s3fs's own attempts per call unless ``storage_options`` give ``retries``: on top of
botocore's, its default (5, with back-off) made a server that stopped answering cost
about 15 minutes per call."""


def _bounded_s3(options: dict[str, Any]) -> dict[str, Any]:
    config = {**S3_TIMEOUTS, **options.get("config_kwargs", {})}
    return {**options, "config_kwargs": config}


class FsspecAdapter:
    """An adapter on any fsspec file system: ``file://``, ``memory://``, ``s3://``, ``gs://``...

    Each key is one file under the URL's folder; its name is the key encoded
    (URL-safe base64), so any key is a safe file name and nothing escapes the
    folder. Writes go to a temporary name first where the file system allows.

    >>> adapter = FsspecAdapter("memory://awaitly-doctest")
    >>> adapter.set("workflow:state:wf-1", "{}")
    >>> adapter.keys("workflow:state:*"), adapter.get("workflow:state:wf-1")
    (['workflow:state:wf-1'], b'{}')
    """

    concurrent = True  # fsspec's sync calls from any thread run on its own event loop

    def __init__(self, url: str, **options: Any) -> None:
        try:
            import fsspec
        except ImportError as exc:  # pragma: no cover - an optional dependency
            raise ImportError("FsspecAdapter needs fsspec: pip install fsspec") from exc
        self.url = url
        # A teammate's new entries must show at the next look: no listing cache.
        options = {"use_listings_cache": False, **options}
        retries = None
        if url.startswith(("s3://", "s3a://")):
            options = _bounded_s3(options)
            retries = options.pop("retries", S3_RETRIES)
        self.fs, root = fsspec.core.url_to_fs(url, **options)
        if retries is not None:
            self.fs.retries = int(retries)
        self.root = root.rstrip("/")
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        if "file" in protocols or "memory" in protocols:
            self.fs.makedirs(self.root, exist_ok=True)  # object stores have no folders

    def _path(self, key: str) -> str:
        raw = key.encode("utf-8", "surrogatepass")
        name = base64.urlsafe_b64encode(raw).decode("ascii")
        if len(name) <= _MAX_NAME:
            return f"{self.root}/k-{name}"
        # Too long for a file name: name it by hash; a ".key" file beside it keeps the key.
        return f"{self.root}/h-{hashlib.sha256(raw).hexdigest()}"

    def get(self, key: str) -> bytes | None:
        try:
            return bytes(self.fs.cat_file(self._path(key)))
        except FileNotFoundError:
            return None

    def set(self, key: str, value: str | bytes) -> None:
        data = value.encode() if isinstance(value, str) else bytes(value)
        path = self._path(key)
        if "/h-" in path:
            self.fs.pipe_file(path + ".key", key.encode("utf-8", "surrogatepass"))
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        if "file" in protocols:  # a local rename is atomic: readers never see half a file
            tmp = f"{path}.tmp-{uuid.uuid4().hex}"
            self.fs.pipe_file(tmp, data)
            self.fs.mv(tmp, path)
        else:  # object stores write whole objects
            self.fs.pipe_file(path, data)

    def delete(self, key: str) -> bool:
        path = self._path(key)
        try:
            self.fs.rm_file(path)
        except FileNotFoundError:
            return False
        if "/h-" in path:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(path + ".key")
        return True

    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(self._path(key)))

    def keys(self, pattern: str) -> list[str]:
        found = []
        try:
            paths = self.fs.ls(self.root, detail=False)
        except FileNotFoundError:
            return []  # an empty prefix is an empty store
        for path in paths:
            name = str(path).rstrip("/").rsplit("/", 1)[-1]
            if ".tmp-" in name or name.endswith(".key"):
                continue
            try:
                if name.startswith("k-"):
                    key = base64.urlsafe_b64decode(name[2:]).decode("utf-8", "surrogatepass")
                elif name.startswith("h-"):
                    raw = self.fs.cat_file(f"{self.root}/{name}.key")
                    key = bytes(raw).decode("utf-8", "surrogatepass")
                else:
                    continue
            except (ValueError, UnicodeDecodeError, FileNotFoundError):
                continue
            if fnmatch.fnmatchcase(key, pattern):
                found.append(key)
        return sorted(found)

    def __repr__(self) -> str:
        return f"FsspecAdapter({self.url!r})"
