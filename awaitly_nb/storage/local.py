"""The local store: a diskcache index and blob files in a folder (``.awaitly/`` by default).

``index/`` is a ``diskcache.Cache`` that never evicts; each step's record is
under the key ``("step", workflow, key)``. ``blobs/`` holds the big buffers
(:mod:`awaitly_nb.storage.blobs`). A damaged index database is moved aside
and replaced; a damaged record reads as absent; Ctrl-C never leaves a
transaction open.

Opening a ``diskcache.Cache`` runs about 70 SQL statements (its settings and
schema, checked each time); a process that only restores pays none of them:
records are read with one plain SQLite connection and diskcache's own ``Disk``
(the same query and decoding as ``Cache.get``), and the ``Cache`` opens at the
first write, or whenever anything goes wrong on the fast path.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import pickle
import sqlite3
import threading
import time
from pathlib import Path

from awaitly_nb.errors import AwaitlyError, CacheWarning, StorageError, reason, warn
from awaitly_nb.storage.base import StepStore
from awaitly_nb.storage.blobs import BlobStore

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["LocalStore", "open_index"]

_STEP = "step"
_SLOW = object()


@functools.lru_cache(maxsize=4096)
def _tuple_key(key: tuple[Any, ...], protocol: int) -> bytes:
    """A tuple key as diskcache's ``Disk.put`` stores it: its pickle, optimised.

    diskcache does this on every call, which costs more than the SQLite lookup
    itself; the bytes are the same each time, so they are remembered. A step's
    key (three short strings, protocol 5) is written directly, so a lookup does
    not import ``pickletools``.

    >>> import pickletools
    >>> key = ("wf", "step", "user:1")
    >>> _tuple_key(key, 5) == pickletools.optimize(pickle.dumps(key, 5))
    True
    """
    if (
        protocol == 5
        and len(key) == 3
        and all(type(part) is str for part in key)
        and len(set(key)) == 3  # pickle memoises a string it meets twice
    ):
        parts = [part.encode("utf-8", "surrogatepass") for part in key]
        if all(len(part) < 256 for part in parts):
            # SHORT_BINUNICODE each, TUPLE3, STOP, in one FRAME after PROTO 5.
            body = b"".join(b"\x8c" + bytes([len(part)]) + part for part in parts) + b"\x87."
            return b"\x80\x05\x95" + len(body).to_bytes(8, "little") + body
    import pickletools

    return pickletools.optimize(pickle.dumps(key, protocol))


@functools.cache
def _index_disk() -> type:
    """diskcache's ``Disk`` with remembered tuple keys (made on first use: a process
    that only reads never imports diskcache)."""
    import diskcache

    class _IndexDisk(diskcache.Disk):  # type: ignore[misc]
        def put(self, key: Any) -> Any:
            if type(key) is not tuple:
                return super().put(key)
            return sqlite3.Binary(_tuple_key(key, self.pickle_protocol)), False

    return _IndexDisk


def open_index(directory: Path, *, what: str) -> Any:
    """A diskcache index that never evicts; a damaged one is moved aside and replaced.

    Raises:
        StorageError: the folder cannot be used at all (read-only, locked, gone).
    """
    try:
        # Never evict: a saved entry stays until it is forgotten.
        import diskcache

        return diskcache.Cache(str(directory), eviction_policy="none", disk=_index_disk())
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
    warn(
        f"{what} in {directory} is damaged ({error}); it was moved to {aside.name} and a "
        "new one started: saved entries run again (`awaitly-nb gc` frees their blobs)",
        CacheWarning,
    )
    import diskcache

    return diskcache.Cache(str(directory), eviction_policy="none", disk=_index_disk())


class _IndexReader:
    """Reads records from an existing index as ``diskcache.Cache.get`` does, without
    opening the ``Cache`` (or importing diskcache): one connection, the same query,
    and diskcache's encoding of tuple keys and of pickled values. Anything else it
    meets raises, and the caller takes the ``Cache``'s own path."""

    _SELECT = (
        "SELECT mode, filename, value FROM Cache WHERE key = ? AND raw = ?"
        " AND (expire_time IS NULL OR expire_time > ?)"
    )
    _MODE_PICKLE = 4  # diskcache.core.MODE_PICKLE: how it stores our record dicts

    def __init__(self, directory: Path) -> None:
        database = directory / "cache.db"
        if not database.exists():
            raise FileNotFoundError(database)
        self._directory = directory
        self._con = sqlite3.connect(
            str(database), timeout=60, isolation_level=None, check_same_thread=False
        )
        self._lock = threading.Lock()
        self._protocol = pickle.HIGHEST_PROTOCOL  # what diskcache writes unless told otherwise
        self._protocol_read = False

    def _select(self, key: tuple[Any, ...]) -> list[Any]:
        with self._lock:
            return self._con.execute(
                self._SELECT, (sqlite3.Binary(_tuple_key(key, self._protocol)), False, time.time())
            ).fetchall()

    def get(self, key: tuple[Any, ...]) -> Any:
        rows = self._select(key)
        if not rows and not self._protocol_read:
            # Keys are found by their pickle: only an index made with another
            # protocol needs it read (a first statement costs a lookup's worth).
            self._protocol_read = True
            with self._lock:
                row = self._con.execute(
                    "SELECT value FROM Settings WHERE key = 'disk_pickle_protocol'"
                ).fetchone()
            if row is not None and int(row[0]) != self._protocol:
                self._protocol = int(row[0])
                rows = self._select(key)
        if not rows:
            return None
        ((mode, filename, value),) = rows
        if mode != self._MODE_PICKLE:
            raise ValueError(f"index record in mode {mode}")
        if value is None:  # a big record: diskcache keeps it in a file beside the database
            with open(self._directory / filename, "rb") as reader:
                return pickle.load(reader)
        return pickle.load(io.BytesIO(value))

    def close(self) -> None:
        self._con.close()


class LocalStore(StepStore):
    """Saved steps in a directory: ``index/`` (diskcache) and ``blobs/``.

    >>> import tempfile
    >>> store = LocalStore(tempfile.mkdtemp())
    >>> manifest = store.save("nb", "user:1", {"variables": ["user"]}, {"user": {"id": 1}})
    >>> manifest.variables, store.load("nb", "user:1")
    (('user',), {'user': {'id': 1}})
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._cache: Any = None
        self._reader: _IndexReader | None = None
        self._opening = threading.Lock()
        self.blobs = BlobStore(self.directory / "blobs")
        self._check_folder()

    def _check_folder(self) -> None:
        """Fail now, as opening the index would, if the folder cannot hold a store."""
        index = self.directory / "index"
        if (index / "cache.db").exists():
            return
        self.index  # noqa: B018 - a new store: create it (and see that it can be)

    @property
    def index(self) -> Any:
        """The ``diskcache.Cache`` of records, opened when first needed."""
        if self._cache is None:
            with self._opening:  # two threads' first writes open one Cache
                if self._cache is None:
                    self._cache = self._open_index()
                    self._close_reader()
        return self._cache

    @index.setter
    def index(self, cache: Any) -> None:
        self._cache = cache

    def _close_reader(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            with contextlib.suppress(Exception):
                reader.close()

    def _fast_read(self, key: tuple[str, str, str]) -> Any:
        """A record through the light reader; ``_SLOW`` to take the Cache's path."""
        if self._cache is not None:
            return _SLOW
        try:
            reader = self._reader
            if reader is None:
                with self._opening:
                    reader = self._reader = self._reader or _IndexReader(self.directory / "index")
            return reader.get(key)
        except Exception:  # no table yet, locked, damaged...: the Cache's path handles it
            self._close_reader()
            return _SLOW

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
        """Call the index: a damaged index is replaced, a damaged record is absent,
        anything else the index refuses is a StorageError."""
        try:
            return self._call(op, *args)
        except sqlite3.OperationalError as exc:  # locked, disk full, read-only
            raise StorageError(f"the store index in {self.directory} refused {op}: {exc}") from exc
        except sqlite3.DatabaseError as exc:  # malformed
            self.index = self._quarantine(exc)
            return self._call(op, *args)
        except AwaitlyError:
            raise
        except BaseException as exc:
            if not isinstance(exc, Exception):  # Ctrl-C: never leave a transaction open
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
                warn(
                    f"the saved record of step {args[0][2]!r} in {self.directory} is damaged; "
                    f"it is treated as not saved and runs again: {reason(exc)}",
                    CacheWarning,
                )
                return None
            raise StorageError(f"the store refused {op}: {reason(exc)}") from exc

    # --- the primitives ---------------------------------------------------------
    def read(self, workflow: str, key: str) -> Any:
        record = self._fast_read((_STEP, workflow, key))
        return self._index("get", (_STEP, workflow, key)) if record is _SLOW else record

    def write(self, workflow: str, key: str, record: dict[str, Any]) -> None:
        self._index("set", (_STEP, workflow, key), record)

    def remove(self, workflow: str, key: str) -> bool:
        return bool(self._index("delete", (_STEP, workflow, key)))

    def record_keys(self, workflow: str | None = None) -> list[tuple[str, str]]:
        return [
            (k[1], k[2])
            for k in self._index("iterkeys")
            if isinstance(k, tuple)
            and len(k) == 3
            and k[0] == _STEP
            and (workflow is None or k[1] == workflow)
        ]

    def close(self) -> None:
        self._close_reader()
        if self._cache is not None:
            self._cache.close()
