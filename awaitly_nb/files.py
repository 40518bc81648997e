"""Files a step reads: recorded while it runs, compared when it is looked up.

A process-wide audit hook (``sys.addaudithook``: it cannot be removed, so it
is installed once and records only while a step runs) sees every file Python
opens for reading through ``open``, ``io`` and ``os.open``. The interpreter's
own files, installed packages, the store and temporary files are left out.
Files that C libraries read by themselves are invisible to it; a step declares
those with ``deps=`` (globs allowed, expanded at every lookup).

A file's stamp is its size, modification and change times, inode and xxh3-128
content hash; a file whose metadata is unchanged is not read again at lookup.
Files a step opens for writing are its outputs, never its inputs.
"""

from __future__ import annotations

import ast
import functools
import os
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import xxhash

from awaitly_nb.core.digest import OWN
from awaitly_nb.core.fingerprint import code_fingerprint

__all__ = ["FileProbe", "ReadRecorder", "expand_deps", "stamp"]

_CHUNK = 4 * 1024 * 1024
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def stamp(path: str) -> dict[str, Any] | None:
    """``{"size", "mtime_ns", "ctime_ns", "ino", "xxh3"}`` of a file, or None if unreadable."""
    try:
        with open(path, "rb") as f:
            info = os.fstat(f.fileno())
            digest = xxhash.xxh3_128()
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    except OSError:
        return None
    return {
        "size": info.st_size,
        "mtime_ns": info.st_mtime_ns,
        "ctime_ns": info.st_ctime_ns,
        "ino": info.st_ino,
        "xxh3": digest.hexdigest(),
    }


def _same_metadata(info: os.stat_result, saved: Mapping[str, Any]) -> bool:
    """Size, modification time, change time and inode all as saved: the content is too.

    The change time cannot be set back (``cp -p``, ``rsync -t`` and ``touch -d``
    set the modification time only), so a same-size rewrite is still noticed.
    Stamps saved without it compare size and modification time.
    """
    if info.st_size != saved.get("size") or info.st_mtime_ns != saved.get("mtime_ns"):
        return False
    if "ctime_ns" not in saved:
        return True
    return info.st_ctime_ns == saved.get("ctime_ns") and info.st_ino == saved.get("ino")


class FileProbe:
    """What the engine asks about files: their stamps now, and how they changed."""

    def __init__(self) -> None:
        self._modules: dict[str, tuple[tuple[int, ...], str]] = {}

    def stamp(self, path: str) -> dict[str, Any] | None:
        return stamp(path)

    def change(self, path: str, saved: Mapping[str, Any]) -> str | None:
        """Why ``path`` differs from its saved stamp (None if it does not).

        A file the step wrote (stamp ``written``) is its output: it differs when its
        content is no longer what the step left there.
        """
        written = bool(saved.get("written"))
        if written and "xxh3" not in saved:
            return None  # saved before written files were stamped
        try:
            info = os.stat(path)
        except OSError:
            return f"{_shown(path)} was deleted"
        if _same_metadata(info, saved):
            return None  # size, times and inode unchanged: not read again
        now = stamp(path)
        if now is None:
            return f"{_shown(path)} cannot be read"
        if now["xxh3"] == saved.get("xxh3"):
            return None  # touched, same content
        return f"{_shown(path)} changed" + (" since the step wrote it" if written else "")

    def expand(self, patterns: Iterable[str]) -> list[str]:
        return expand_deps(patterns)

    def module_version(self, name: str) -> str:
        """A module's ``__version__``; for the user's own modules (not installed), the
        content hash of their source files, so editing ``helpers.py`` counts."""
        module = sys.modules.get(name)
        top = sys.modules.get(name.split(".")[0])
        version = str(getattr(top, "__version__", "")) if top is not None else ""
        path = getattr(module, "__file__", None)
        if not isinstance(path, str) or os.path.realpath(path).startswith(_installed_roots()):
            return version
        cached = self._modules.get(path)
        try:
            info = os.stat(path)
        except OSError:
            return version
        seen = (info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)
        if cached is None or cached[0] != seen:
            cached = (seen, _source_fingerprint(path))
            self._modules[path] = cached
        return f"{version}{OWN}{cached[1]}"


def _source_fingerprint(path: str) -> str:
    """A module's code without comments and spacing (as cells are compared), else its bytes."""
    if path.endswith(".py"):
        try:
            with open(path, encoding="utf-8") as f:
                return code_fingerprint(f.read())
        except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
            pass
    found = stamp(path)
    return found["xxh3"] if found else ""


def _shown(path: str) -> str:
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return path
    return relative if not relative.startswith("..") else path


def expand_deps(patterns: Iterable[str]) -> list[str]:
    """Absolute paths of the existing files ``deps=`` names (globs expanded, sorted)."""
    import glob

    found: set[str] = set()
    for pattern in patterns:
        found.update(
            os.path.abspath(m) for m in glob.glob(pattern, recursive=True) if os.path.isfile(m)
        )
    return sorted(found)


_PATH_LIKE = re.compile(r"[\w.~/\\-]+\.[A-Za-z0-9]{1,10}")


def literal_paths(statements: Iterable[ast.AST]) -> list[str]:
    """String constants in code that look like file names (``"data/sales.parquet"``).

    A step that names a file in its code most likely reads (or writes) it, also
    through a C library that Python cannot see open it: these count as ``deps=``.

    >>> literal_paths(ast.parse("pd.read_parquet('data/s.parquet'); print('hello world')").body)
    ['data/s.parquet']
    """
    found = {
        node.value
        for stmt in statements
        for node in ast.walk(stmt)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and len(node.value) < 300
        and "://" not in node.value
        and _PATH_LIKE.fullmatch(node.value)
    }
    return sorted(found)


def _roots(paths: Iterable[str]) -> tuple[str, ...]:
    return tuple(os.path.realpath(p) + os.sep for p in paths if p)


@functools.cache
def _installed_roots() -> tuple[str, ...]:
    """The interpreter and installed packages: never a step's data."""
    import sysconfig

    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix}
    for name in ("stdlib", "platstdlib", "purelib", "platlib"):
        roots.add(sysconfig.get_paths().get(name, ""))
    return _roots(roots)


def _system_roots() -> tuple[str, ...]:
    """Temporary, system and tool files: not data, unless in the notebook's folder."""
    import tempfile

    home = os.path.expanduser("~")
    tools = [os.path.join(home, p) for p in (".cache", ".ipython", ".jupyter", ".config")]
    tools.append(os.path.join(home, ".local", "share", "jupyter"))
    return _roots([tempfile.gettempdir(), "/proc", "/sys", "/dev", *tools])


class ReadRecorder:
    """Records the files opened for reading while it is entered.

    Per thread and per asyncio task: steps running at once each see their own
    reads. A step inside another step's function counts for both. A thread
    that belongs to no step (a worker of a thread pool a step started) counts
    for every step running at that moment: a read is never lost, at worst a
    step has one input too many.
    """

    _installed = False
    _current: ContextVar[ReadRecorder | None] = ContextVar("awaitly_nb_reads", default=None)
    """The recorder of the running step, per thread and per asyncio task."""
    _active: tuple[ReadRecorder, ...] = ()
    """Every recorder entered and not yet left, in any thread or task."""
    _lock = threading.Lock()

    def __init__(self, ignore: Iterable[str | os.PathLike[str]] = ()) -> None:
        self.ignore = tuple(os.path.realpath(p) + os.sep for p in ignore)
        self.paths: set[str] = set()
        self.written: set[str] = set()
        """Files opened for writing: a step's outputs, never its inputs."""
        self.outer: ReadRecorder | None = None
        """The recorder of the step this one runs inside, if any."""

    @classmethod
    def inherit(cls, paths: Iterable[str]) -> None:
        """A step restored inside running steps: the files it read count for them."""
        recorder = cls._current.get()
        while recorder is not None:
            recorder.paths.update(paths)
            recorder = recorder.outer

    @classmethod
    def _install(cls) -> None:
        with cls._lock:
            if not cls._installed:
                sys.addaudithook(cls._hook)
                cls._installed = True

    @classmethod
    def _hook(cls, event: str, args: tuple[Any, ...]) -> None:
        if event != "open":
            return
        recorder = cls._current.get()
        recorders: Iterable[ReadRecorder] = cls._active if recorder is None else ()
        if not recorders and recorder is None:
            return
        path, mode, flags = (*args, None, None, None)[:3]
        if not isinstance(path, (str, bytes, os.PathLike)):
            return  # a file descriptor
        if isinstance(mode, str):
            writes = any(c in mode for c in "wax+")
        else:
            writes = isinstance(flags, int) and bool(flags & _WRITE_FLAGS)
        found = os.path.abspath(os.fsdecode(path))
        while recorder is not None:  # this step and the steps it runs inside
            (recorder.written if writes else recorder.paths).add(found)
            recorder = recorder.outer
        for other in recorders:
            (other.written if writes else other.paths).add(found)

    def __enter__(self) -> ReadRecorder:
        self._install()
        self.outer = self._current.get()
        self._token = self._current.set(self)
        with self._lock:
            ReadRecorder._active = (*ReadRecorder._active, self)
        return self

    def __exit__(self, *exc: object) -> None:
        self._current.reset(self._token)
        with self._lock:
            ReadRecorder._active = tuple(r for r in ReadRecorder._active if r is not self)

    def files(self) -> dict[str, dict[str, Any]]:
        """Stamps of the user's files that were read.

        Left out: the store, the interpreter and installed packages, and
        temporary or system files — unless they are in the working directory
        (the notebook's folder), where every file read counts.
        """
        here = os.path.realpath(os.getcwd()) + os.sep
        never, system = self.ignore + _installed_roots(), _system_roots()
        out: dict[str, dict[str, Any]] = {}
        for raw in sorted(self.paths - self.written):
            path = os.path.abspath(raw)
            real = os.path.realpath(path)
            if real.startswith(never) or real.endswith((".pyc", ".so")):
                continue
            if real.startswith(system) and not real.startswith(here):
                continue
            if not Path(real).is_file():
                continue
            found = stamp(path)
            if found is not None:
                out[path] = found
        return out
