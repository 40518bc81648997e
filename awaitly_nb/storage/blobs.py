"""Content-addressed blob files: big buffers live here, outside the index.

A blob is named by the xxh3-128 hash of its bytes, so a buffer saved twice is
stored once. Writing goes to a temporary file that is renamed into place, so
a reader never sees a partial blob. Reading maps the file copy-on-write: the
result is writable at once, pages never touched are never read, and writing
to it never changes the file.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import xxhash

from awaitly_nb.errors import StateFormatError, StorageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NamedTuple
else:
    from awaitly_nb._namedtuple import NamedTuple

__all__ = ["BlobStore", "GcReport"]

_NAME = re.compile(r"[0-9a-f]{32}")
# Hash and write in slices that stay in the CPU cache between the two passes.
_CHUNK = 4 * 1024 * 1024
# Blobs this big are hashed on a second thread while they are written.
_HASH_BESIDE = 16 * 1024 * 1024
_HASH_SLICE = 64 * 1024 * 1024
# Python 3.13+ can map without keeping a file descriptor open per map.
_NO_FD: dict[str, bool] = {"trackfd": False} if sys.version_info >= (3, 13) else {}


class GcReport(NamedTuple):
    """What a garbage collection removed: blobs, their bytes, temporary files."""

    blobs: int
    bytes: int
    temporaries: int


def _mkstemp(directory: Path, prefix: str) -> tuple[int, str]:
    import tempfile  # with shutil, random, bz2, lzma: only once something is saved

    return tempfile.mkstemp(dir=directory, prefix=prefix)


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        written = os.write(fd, data)
        data = data[written:]


def _write_hashing_beside(fd: int, view: memoryview, digest: Any) -> None:
    """Write ``view`` while another thread hashes it: both release the GIL, so a big
    blob saves in about the time of the write alone (xxh3 is several times faster)."""
    failed: list[BaseException] = []

    def hash_all() -> None:
        try:
            for start in range(0, len(view), _HASH_SLICE):
                digest.update(view[start : start + _HASH_SLICE])
        except BaseException as exc:  # reported by the writer
            failed.append(exc)

    hasher = threading.Thread(target=hash_all, name="awaitly-blob-hash", daemon=True)
    hasher.start()
    try:
        _write_all(fd, view)
    finally:
        hasher.join()  # never leave a thread reading memory the caller may free
    if failed:
        raise failed[0]


class BlobStore:
    """Blob files under ``directory`` (``ab/cdef...`` by hash).

    >>> import tempfile
    >>> blobs = BlobStore(tempfile.mkdtemp())
    >>> name = blobs.put(memoryview(b"hello"))
    >>> bytes(blobs.open(name, 5))
    b'hello'
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._tmp = self.directory / "tmp"

    def path(self, name: str) -> Path:
        """Where the blob ``name`` lives.

        Raises:
            StateFormatError: ``name`` is not a blob name (32 hex digits), e.g.
                from a damaged or malicious record; no path outside the folder is made.
        """
        if not _NAME.fullmatch(name):
            raise StateFormatError(f"{name!r} is not a blob name")
        return self.directory / name[:2] / name[2:]

    def put(self, data: memoryview) -> str:
        """Store ``data`` and return its name (its hash); nothing is copied in memory."""
        view = data.cast("B") if data.format != "B" or data.ndim != 1 else data
        digest = xxhash.xxh3_128()
        try:
            self._tmp.mkdir(parents=True, exist_ok=True)
            fd, tmp = _mkstemp(self._tmp, "blob-")
        except OSError as exc:
            raise StorageError(f"cannot write to {self.directory}: {exc}") from exc
        try:
            try:
                if len(view) >= _HASH_BESIDE:
                    _write_hashing_beside(fd, view, digest)
                else:
                    for start in range(0, len(view), _CHUNK):
                        chunk = view[start : start + _CHUNK]
                        digest.update(chunk)
                        _write_all(fd, chunk)
            finally:
                os.close(fd)
            name = digest.hexdigest()
            final = self.path(name)
            final.parent.mkdir(exist_ok=True)
            # Even when the same content is stored already: the new file is known
            # good (an old one may be damaged) and fresh, so gc leaves it alone
            # until the record that needs it lands. Readers keep their old map.
            os.replace(tmp, final)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(exc, OSError):
                raise StorageError(f"cannot write a blob to {self.directory}: {exc}") from exc
            raise
        return str(name)

    def ensure(self, name: str, size: int) -> Path:
        """The local file of a blob (a shared store first fetches it)."""
        return self.path(name)

    def stage(self) -> tuple[int, Path]:
        """A new temporary file for a blob being received: ``(fd, path)``; see :meth:`adopt`."""
        try:
            self._tmp.mkdir(parents=True, exist_ok=True)
            fd, tmp = _mkstemp(self._tmp, "import-")
        except OSError as exc:
            raise StorageError(f"cannot write to {self.directory}: {exc}") from exc
        return fd, Path(tmp)

    def adopt(self, staged: Path, name: str) -> None:
        """Move a staged file, already checked to hold the blob ``name``, into place."""
        final = self.path(name)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, final)

    def open(self, name: str, size: int, *, map: bool = True) -> mmap.mmap | bytearray:
        """The blob's bytes, writable: mapped copy-on-write (lazily), or read (``map=False``).

        Raises:
            StateFormatError: the blob is missing, does not have ``size`` bytes,
                or cannot be read (for example, no file descriptor is free).
        """
        path = self.path(name)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise StateFormatError(f"blob {name} is missing from {self.directory}") from None
        except OSError as exc:
            raise StateFormatError(f"cannot read blob {name}: {exc}") from exc
        try:
            actual = os.fstat(fd).st_size
            if actual != size:
                raise StateFormatError(f"blob {name} has {actual} bytes, expected {size}")
            if size == 0:
                return bytearray()
            if not map:
                data = bytearray(size)
                with os.fdopen(os.dup(fd), "rb", buffering=0) as f:
                    if f.readinto(data) != size:
                        raise StateFormatError(f"blob {name} changed while it was read")
                return data
            return mmap.mmap(fd, size, access=mmap.ACCESS_COPY, **_NO_FD)
        except OSError as exc:
            raise StateFormatError(f"cannot read blob {name}: {exc}") from exc
        finally:
            os.close(fd)

    def names(self) -> Iterator[str]:
        """The names of every stored blob."""
        if not self.directory.exists():
            return
        for sub in self.directory.iterdir():
            if len(sub.name) == 2 and sub.is_dir():
                for file in sub.iterdir():
                    yield sub.name + file.name

    def delete(self, name: str) -> bool:
        """Delete a blob; True if it existed."""
        try:
            self.path(name).unlink()
        except FileNotFoundError:
            return False
        return True

    def collect(self, keep: set[str], *, min_age: float) -> GcReport:
        """Delete the blobs not in ``keep`` and interrupted writes, older than ``min_age`` s.

        A blob written (or reused, which refreshes its time) by a save whose
        record has not landed yet is younger than ``min_age`` and stays.
        """
        now, count, freed = time.time(), 0, 0
        # BlobStore's own names/delete: the local files, also under a subclass.
        for name in list(BlobStore.names(self)):
            if name in keep:
                continue
            try:
                stat = self.path(name).stat()
            except FileNotFoundError:
                continue
            if now - stat.st_mtime >= min_age and BlobStore.delete(self, name):
                count, freed = count + 1, freed + stat.st_size
        return GcReport(count, freed, self.remove_stale_temporaries(min_age))

    def remove_stale_temporaries(self, min_age: float) -> int:
        """Delete temporary files left by interrupted writes, older than ``min_age`` seconds."""
        if not self._tmp.exists():
            return 0
        count, now = 0, time.time()
        for file in self._tmp.iterdir():
            try:
                if now - file.stat().st_mtime >= min_age:
                    file.unlink()
                    count += 1
            except FileNotFoundError:
                pass
        return count
