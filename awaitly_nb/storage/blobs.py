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
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import xxhash

from awaitly_nb.errors import StateFormatError, StorageError

__all__ = ["BlobStore"]

# Hash and write in slices that stay in the CPU cache between the two passes.
_CHUNK = 4 * 1024 * 1024


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        written = os.write(fd, data)
        data = data[written:]


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
        """Where the blob ``name`` lives."""
        return self.directory / name[:2] / name[2:]

    def put(self, data: memoryview) -> str:
        """Store ``data`` and return its name (its hash); nothing is copied in memory."""
        view = data.cast("B") if data.format != "B" or data.ndim != 1 else data
        digest = xxhash.xxh3_128()
        try:
            self._tmp.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self._tmp, prefix="blob-")
        except OSError as exc:
            raise StorageError(f"cannot write to {self.directory}: {exc}") from exc
        try:
            try:
                for start in range(0, len(view), _CHUNK):
                    chunk = view[start : start + _CHUNK]
                    digest.update(chunk)
                    _write_all(fd, chunk)
            finally:
                os.close(fd)
            name = digest.hexdigest()
            final = self.path(name)
            if final.exists() and final.stat().st_size == len(view):
                os.unlink(tmp)  # already stored (same content)
                os.utime(final)  # fresh again: gc must not take it before its record lands
            else:
                final.parent.mkdir(exist_ok=True)
                os.replace(tmp, final)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            if isinstance(exc, OSError):
                raise StorageError(f"cannot write a blob to {self.directory}: {exc}") from exc
            raise
        return str(name)

    def open(self, name: str, size: int) -> mmap.mmap | bytearray:
        """Map the blob copy-on-write (a writable, lazily loaded view of its bytes).

        Raises:
            StateFormatError: the blob is missing or does not have ``size`` bytes.
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
            return mmap.mmap(fd, size, access=mmap.ACCESS_COPY)
        finally:
            os.close(fd)

    def check(self, name: str, size: int) -> None:
        """Read the whole blob and check its hash.

        Raises:
            StateFormatError: the blob is missing, truncated or its content changed.
        """
        data = self.open(name, size)
        if xxhash.xxh3_128_hexdigest(data) != name:
            raise StateFormatError(f"blob {name} is damaged: its content does not match its hash")

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

    def size(self, name: str) -> int:
        """Bytes on disk of one blob (0 if missing)."""
        try:
            return self.path(name).stat().st_size
        except FileNotFoundError:
            return 0
