"""The step store: manifests and saved values of notebook steps.

A step is identified by ``(workflow, key)``. Its record in the diskcache index
holds a small JSON-able *manifest* (key, workflow, fingerprint, variable
names, sizes, timings, versions) and the value's :mod:`codec
<awaitly_nb.storage.codec>` record; big buffers live in blob files beside the
index. A save writes the blobs first and the record last, in one index write,
so a reader sees the previous entry or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sqlite3
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diskcache

from awaitly_nb.errors import AwaitlyError, CacheWarning, StateFormatError, StorageError
from awaitly_nb.storage import codec
from awaitly_nb.storage.blobs import BlobStore, GcReport
from awaitly_nb.storage.names import check_name
from awaitly_nb.storage.serialize import versions

__all__ = ["MANIFEST_VERSION", "GcReport", "StepStore", "StoredStep"]

MANIFEST_VERSION = 1
_STEP = "step"


def _check_names(workflow: Any, key: Any) -> None:
    check_name(workflow, "workflow")
    check_name(key)


def open_index(directory: Path, *, what: str) -> Any:
    """A diskcache index that never evicts; a damaged one is moved aside and replaced.

    Raises:
        StorageError: the folder cannot be used at all (read-only, locked, gone).
    """
    try:
        # Never evict: a saved entry stays until it is forgotten.
        return diskcache.Cache(str(directory), eviction_policy="none")
    except sqlite3.OperationalError as exc:
        raise StorageError(f"cannot open {what} in {directory}: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        return quarantine(directory, exc, what=what)
    except Exception as exc:
        raise StorageError(f"cannot open {what} in {directory}: {exc}") from exc


def quarantine(directory: Path, error: Exception, *, what: str) -> Any:
    """Move a damaged index database aside (kept for inspection) and start a new one."""
    database = directory / "cache.db"
    aside = database.with_name(f"cache.db.damaged-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    try:
        os.replace(database, aside)
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                database.with_name("cache.db" + suffix).unlink()
    except OSError as exc:
        raise StorageError(f"{what} in {directory} is damaged ({error}): {exc}") from exc
    warnings.warn(
        f"{what} in {directory} is damaged ({error}); it was moved to {aside.name} and a "
        "new one started: saved entries run again (`awaitly-nb gc` frees their blobs)",
        CacheWarning,
        stacklevel=4,
    )
    return diskcache.Cache(str(directory), eviction_policy="none")


@dataclass(frozen=True)
class StoredStep:
    """A saved step as found in the index; :meth:`load` reads its value."""

    manifest: dict[str, Any]
    record: dict[str, Any]
    blobs: BlobStore

    def load(self) -> Any:
        """The saved value.

        Raises:
            StateFormatError: the entry is damaged or cannot be unpickled here.
        """
        return codec.decode(self.record, self.blobs)


class StepStore:
    """Saved steps in a directory (``.awaitly/`` by default): ``index/`` and ``blobs/``.

    >>> import tempfile
    >>> store = StepStore(tempfile.mkdtemp())
    >>> manifest = store.save("nb", "user:1", {"variables": ["user"]}, {"user": {"id": 1}})
    >>> store.manifest("nb", "user:1")["variables"], store.load("nb", "user:1")
    (['user'], {'user': {'id': 1}})
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        index: Any = None,
        blobs: BlobStore | None = None,
    ) -> None:
        """A store in ``directory``; a shared store passes its own ``index`` and ``blobs``.

        ``index`` is anything with diskcache's ``get``, ``set``, ``delete``,
        ``iterkeys`` and ``close`` (see :mod:`awaitly_nb.storage.shared`).
        """
        self.directory = Path(directory)
        self._local = index is None
        self.index = index if index is not None else self._open_index()
        self.blobs = blobs if blobs is not None else BlobStore(self.directory / "blobs")

    # --- the index, guarded ---------------------------------------------------
    def _open_index(self) -> Any:
        return open_index(self.directory / "index", what="the store index")

    def _quarantine(self, error: Exception) -> Any:
        with contextlib.suppress(Exception):
            self.index.close()
        return quarantine(self.directory / "index", error, what="the store index")

    def _call(self, op: str, *args: Any) -> Any:
        result = getattr(self.index, op)(*args)
        return list(result) if op == "iterkeys" else result  # a generator fails late

    def _index(self, op: str, *args: Any) -> Any:
        """Call the index: a damaged local index is replaced, a damaged record is absent,
        anything else the index or its server refuses is a StorageError."""
        try:
            return self._call(op, *args)
        except sqlite3.OperationalError as exc:  # locked, disk full, read-only
            raise StorageError(f"the store index in {self.directory} refused {op}: {exc}") from exc
        except sqlite3.DatabaseError as exc:  # malformed
            if not self._local:
                raise StorageError(f"the store index is damaged: {exc}") from exc
            self.index = self._quarantine(exc)
            return self._call(op, *args)
        except AwaitlyError:
            raise
        except BaseException as exc:
            if not isinstance(exc, Exception):  # Ctrl-C: never leave a transaction open
                if self._local:
                    with contextlib.suppress(Exception):
                        self.index.close()
                raise
            if op == "get" and isinstance(
                exc,
                (
                    pickle.UnpicklingError,
                    EOFError,
                    ValueError,
                    AttributeError,
                    ImportError,
                    TypeError,
                ),
            ):
                what = f"step {args[0][2]!r}" if isinstance(args[0], tuple) else repr(args[0])
                warnings.warn(
                    f"the saved record of {what} in {self.directory} is damaged; it is "
                    f"treated as not saved and runs again: {exc!r}",
                    CacheWarning,
                    stacklevel=4,
                )
                return None
            # a server that is down, a file system that refuses, a record that will not load
            raise StorageError(f"the store refused {op}: {exc!r}") from exc

    # --- reading -----------------------------------------------------------
    def entry(self, workflow: str, key: str) -> StoredStep | None:
        """The saved step, or None (a damaged index record counts as absent)."""
        found = self._index("get", (_STEP, workflow, key))
        if (
            not isinstance(found, dict)
            or not isinstance(found.get("manifest"), dict)
            or not isinstance(found.get("value"), dict)
        ):
            return None
        return StoredStep(found["manifest"], found["value"], self.blobs)

    def manifest(self, workflow: str, key: str) -> dict[str, Any] | None:
        """The manifest of a saved step, or None."""
        entry = self.entry(workflow, key)
        return None if entry is None else entry.manifest

    def load(self, workflow: str, key: str) -> Any:
        """The saved value.

        Raises:
            KeyError: nothing is saved under ``(workflow, key)``.
            StateFormatError: the entry is damaged or cannot be unpickled here.
        """
        entry = self.entry(workflow, key)
        if entry is None:
            raise KeyError((workflow, key))
        return entry.load()

    def manifests(self, workflow: str | None = None) -> list[dict[str, Any]]:
        """Manifests of the saved steps (of one workflow, or all), oldest first."""
        found = [entry.manifest for _, entry in self.entries(workflow)]
        return sorted(found, key=lambda m: (m.get("saved_at", 0.0), str(m.get("key", ""))))

    def workflows(self) -> list[str]:
        """The workflows that have saved steps."""
        return sorted({k[1] for k in self._keys(None)})

    # --- writing -----------------------------------------------------------
    def save(self, workflow: str, key: str, manifest: dict[str, Any], value: Any) -> dict[str, Any]:
        """Save ``value`` with its ``manifest``; return the manifest as stored.

        Raises:
            SerializationError: the value cannot be pickled; nothing is written.
            StorageError: the disk refused the write; the previous entry is intact.
        """
        _check_names(workflow, key)
        record = codec.encode(value, self.blobs)
        stored = dict(manifest)
        stored.update(
            format=MANIFEST_VERSION,
            workflow=workflow,
            key=key,
            size=record["nbytes"],
            saved_at=stored.get("saved_at", time.time()),
            versions=versions(),
        )
        self._index("set", (_STEP, workflow, key), {"manifest": stored, "value": record})
        return stored

    def put_record(
        self, workflow: str, key: str, manifest: dict[str, Any], record: dict[str, Any]
    ) -> None:
        """Write an index record whose blobs are already in place (an import)."""
        _check_names(workflow, key)
        self._index("set", (_STEP, workflow, key), {"manifest": manifest, "value": record})

    def delete(self, workflow: str, key: str) -> bool:
        """Forget a step; True if it was saved. Its blobs go at the next :meth:`gc`."""
        return bool(self._index("delete", (_STEP, workflow, key)))

    def clear(self, workflow: str | None = None) -> int:
        """Forget every step (of one workflow, or all); return how many."""
        return sum(self.delete(wf, key) for _, wf, key in list(self._keys(workflow)))

    # --- housekeeping ------------------------------------------------------
    def referenced_blobs(self) -> set[str]:
        """Every blob some saved step needs."""
        return {name for _, entry in self.entries(None) for name in codec.blob_names(entry.record)}

    def gc(self, *, min_age: float = 600.0) -> GcReport:
        """Delete blobs no step refers to, and leftovers of interrupted writes.

        Only files older than ``min_age`` seconds are removed, so a save in
        progress in another kernel keeps the blobs it is about to refer to.
        """
        return self.blobs.collect(self.referenced_blobs(), min_age=min_age)

    def verify(self) -> list[str]:
        """Check every saved step, reading all its blobs; return the problems found."""
        problems = []
        for (_, workflow, key), entry in self.entries(None):
            try:
                codec.decode(entry.record, self.blobs, verify_limit=2**63)
            except StateFormatError as exc:
                problems.append(f"{workflow} / {key}: {exc}")
        for _, workflow, key in self._keys(None):
            if self.entry(workflow, key) is None:
                problems.append(f"{workflow} / {key}: the index record is damaged")
        orphans = set(self.blobs.names()) - self.referenced_blobs()
        if orphans:
            problems.append(f"{len(orphans)} blob(s) no step refers to (run gc)")
        return problems

    def disk_usage(self) -> int:
        """Bytes on disk used by the store (index and blobs)."""
        total = 0
        for root, _, files in os.walk(self.directory):
            for name in files:
                with contextlib.suppress(FileNotFoundError):
                    total += os.stat(os.path.join(root, name)).st_size
        return total

    def _keys(self, workflow: str | None) -> Iterator[tuple[str, str, str]]:
        for k in self._index("iterkeys"):
            if (
                isinstance(k, tuple)
                and len(k) == 3
                and k[0] == _STEP
                and (workflow is None or k[1] == workflow)
            ):
                yield k

    def entries(
        self, workflow: str | None = None
    ) -> Iterator[tuple[tuple[str, str, str], StoredStep]]:
        """Every saved step (of one workflow, or all) as ``(("step", workflow, key), entry)``."""
        for k in list(self._keys(workflow)):
            entry = self.entry(k[1], k[2])
            if entry is not None:
                yield k, entry

    def close(self) -> None:
        self.index.close()

    def __repr__(self) -> str:
        return f"StepStore({str(self.directory)!r})"
