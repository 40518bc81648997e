"""Files a step reads: recorded while it runs, compared when it is looked up.

A process-wide audit hook (``sys.addaudithook``: it cannot be removed, so it
is installed once and records only while a step runs) sees every file Python
opens for reading through ``open``, ``io`` and ``os.open``, and every database
file ``sqlite3.connect`` opens. The interpreter's
own files, installed packages, the store and temporary files are left out.
Files that C libraries read by themselves are invisible to it; a step declares
those with ``deps=`` (globs allowed, expanded at every lookup).

A file's stamp is its size, modification and change times, inode and xxh3-128
content hash; a file whose metadata is unchanged is not read again at lookup.
Files a step opens for writing are its outputs, never its inputs.

A folder a step lists (``os.listdir``, ``os.scandir``, ``glob``, ``Path.glob``,
``os.walk``) is an input too, by the names in it: a file added to or removed
from ``data/`` makes a step that looped over ``data/*.csv`` run again. Listings
the import system makes are left out.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import os
import re
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from pathlib import Path

import xxhash

from awaitly_nb.core.digest import OWN
from awaitly_nb.core.fingerprint import code_fingerprint

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "FileProbe",
    "ReadRecorder",
    "code_constants",
    "expand_deps",
    "listing",
    "named_paths",
    "stamp",
]

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
        if "listing" in saved:
            return _listing_change(path, saved)
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


_STATES_KEPT = 2000
"""A plain cell's stamp names the files it read up to this many (else only how many)."""

_NAMES_KEPT = 1000
"""A listing keeps its names (to say which changed) up to this many; else only their hash."""


def listing(folder: str) -> dict[str, Any] | None:
    """``{"listing": hash, "names": [...]}`` of a folder's entries, or None if it cannot be listed.

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> open(os.path.join(folder, "a.csv"), "w").close()
    >>> listing(folder)["names"]
    ['a.csv']
    """
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return None
    found: dict[str, Any] = {
        "listing": xxhash.xxh3_128_hexdigest("\0".join(names).encode("utf-8", "surrogateescape"))
    }
    if len(names) <= _NAMES_KEPT:
        found["names"] = names
    return found


def _listing_change(path: str, saved: Mapping[str, Any]) -> str | None:
    now = listing(path)
    shown = _shown(path.rstrip(os.sep)) + os.sep
    if now is None:
        return f"{shown} was deleted"
    if now["listing"] == saved.get("listing"):
        return None
    before, after = set(saved.get("names", ())), set(now.get("names", ()))
    if "names" not in saved or "names" not in now:
        return f"{shown} has other files"
    parts = [f"{n} added" for n in sorted(after - before)[:3]]
    parts += [f"{n} removed" for n in sorted(before - after)[:3]]
    more = len(after ^ before) - len(parts)
    return f"{shown} has other files: " + ", ".join(parts) + (f" and {more} more" if more else "")


_EVENTS = frozenset(("open", "os.listdir", "os.scandir", "sqlite3.connect"))
"""The audit events the recorder follows: files opened, folders listed, SQLite databases."""


def _sqlite_file(database: Any) -> str | bytes | os.PathLike[str] | None:
    """The file a ``sqlite3.connect`` names (``file:`` URIs too); None for in-memory ones."""
    if isinstance(database, os.PathLike):
        database = os.fspath(database)
    if isinstance(database, bytes):
        database = os.fsdecode(database)
    if not isinstance(database, str) or database in ("", ":memory:"):
        return None
    if database.startswith("file:"):
        database = database[5:].split("?", 1)[0].split("#", 1)[0]
        if database.startswith("//"):  # file://host/path: the path
            database = "/" + database[2:].split("/", 1)[-1]
    return database or None


_IMPORTERS = ("importlib", "_frozen_importlib", "pkgutil", "zipimport", "pkg_resources")


def _listed_by_importer() -> bool:
    """Whether the listing being made comes from the import system (finding modules,
    packages' metadata or entry points), not from the step's code."""
    try:
        frame = sys._getframe(2)  # the caller of os.listdir / os.scandir
    except ValueError:  # called from C with no Python frame above
        return False
    while frame is not None:
        if str(frame.f_globals.get("__name__", "")).startswith(_IMPORTERS):
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


_PATH_LIKE = re.compile(r"[\w.~/\\-]+\.[A-Za-z0-9]{1,10}")
_GLOB_LIKE = re.compile(r"[\w.~/\\*-]*\*[\w.~/\\*-]*\.[A-Za-z0-9]{1,10}")


def literal_paths(statements: Iterable[ast.AST]) -> list[str]:
    """String constants in code that look like file names (``"data/sales.parquet"``).

    A step that names a file in its code most likely reads (or writes) it, also
    through a C library that Python cannot see open it: these count as ``deps=``.

    A shell command counts by its words (``!wc -l data.txt`` is
    ``get_ipython().system('wc -l data.txt')``): the shell reads the file outside Python.

    >>> literal_paths(ast.parse("pd.read_parquet('data/s.parquet'); print('hello world')").body)
    ['data/s.parquet']
    >>> literal_paths(ast.parse("get_ipython().getoutput('cat data.txt | sort >out.txt')").body)
    ['data.txt', 'out.txt']
    >>> literal_paths(ast.parse("get_ipython().system('wc -l *.csv')").body)
    ['*.csv']
    """
    found: set[str] = set()
    for stmt in statements:
        for node in ast.walk(stmt):
            if not isinstance(node, ast.Constant) or not isinstance(node.value, str):
                continue
            text = node.value
            if len(text) < 300 and "://" not in text and _PATH_LIKE.fullmatch(text):
                found.add(text)
            elif len(text) < 5000 and any(c.isspace() for c in text):
                found.update(_command_words(text))
    return sorted(found)


def _command_words(text: str) -> set[str]:
    """The words of a shell command (or a few) that look like file names."""
    import shlex  # only for code with a string that has spaces

    words: set[str] = set()
    for line in text.splitlines():
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError:  # an unclosed quote: not a command, or a broken one
            tokens = line.split()
        for token in tokens:
            token = token.lstrip("<>")
            if "://" not in token and (_PATH_LIKE.fullmatch(token) or _GLOB_LIKE.fullmatch(token)):
                words.add(token)
    return words


def named_paths(values: Iterable[Any]) -> list[str]:
    """File names and globs held by values a step reads: a variable set in an earlier
    cell (``DATA = "data/s.parquet"``, a ``Path``, a short list of them), an argument,
    or a constant in a function's code. A file a C library opens by such a name is
    then noticed as one named in the step's code is (see :func:`literal_paths`).

    >>> from pathlib import Path
    >>> named_paths(["data/s.parquet", Path("a/b.csv"), ["x.json", 3], "hello", "*.csv"])
    ['*.csv', 'a/b.csv', 'data/s.parquet', 'x.json']
    """
    found: set[str] = set()
    for value in values:
        many = isinstance(value, (list, tuple, set, frozenset)) and len(value) <= 100
        for item in value if many else (value,):
            if isinstance(item, os.PathLike):
                item = os.fspath(item)
            if (
                isinstance(item, str)
                and len(item) < 300
                and "://" not in item
                and (_PATH_LIKE.fullmatch(item) or _GLOB_LIKE.fullmatch(item))
            ):
                found.add(item)
    return sorted(found)


def code_constants(code: Any) -> Iterator[Any]:
    """The constants of a function's code and of the functions defined in it."""
    for const in getattr(code, "co_consts", ()):
        if hasattr(const, "co_consts"):
            yield from code_constants(const)
        else:
            yield const


def _roots(paths: Iterable[str]) -> tuple[str, ...]:
    return tuple(os.path.realpath(p) + os.sep for p in paths if p)


def module_origin(name: str) -> str | None:
    """The file ``import name`` loads, for a module of your own (relative to the
    working folder when inside it); None for an installed, built-in or missing one.

    A step that imports a module itself depends on which copy ``sys.path`` finds
    (``libA/mod.py`` or ``libB/mod.py``), not only on that copy's source.

    >>> module_origin("os") is None  # the standard library
    True
    """
    module = sys.modules.get(name)
    if module is not None:
        path = getattr(module, "__file__", None)
    else:
        import importlib.util

        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            return None
        path = spec.origin if spec is not None else None
    if not isinstance(path, str) or not os.path.isabs(path):
        return None
    real = os.path.realpath(path)
    if real.startswith(_installed_roots()):
        return None
    relative = os.path.relpath(real)
    shown = real if relative.startswith("..") else relative
    if os.path.basename(real) == "__init__.py":  # a package: any of its files may be used
        code = _package_fingerprint(os.path.dirname(real))
        return f"{shown} ({code})" if code else shown
    return shown


_PACKAGES: dict[str, tuple[tuple[tuple[str, int, int, int, int], ...], str]] = {}


_PACKAGE_FILES = 100
"""A package with more modules than this is someone else's (a library on ``PYTHONPATH``
or installed with ``pip --target``): its code is not read at every kernel start."""


def _package_fingerprint(folder: str) -> str:
    """The code of a package's modules (``mypkg/util.py`` edited: it changes); its
    files' stamps are checked at each call, their code read again only when changed.
    Empty for a big package (see ``_PACKAGE_FILES``) or one in a ``site-packages``."""
    if any(part in ("site-packages", "dist-packages") for part in folder.split(os.sep)):
        return ""
    files = []
    for top, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__pycache__")))
        for name in sorted(names):
            if name.endswith(".py"):
                path = os.path.join(top, name)
                with contextlib.suppress(OSError):
                    info = os.stat(path)
                    stamp_ = (info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino)
                    files.append((path, *stamp_))
        if len(files) > _PACKAGE_FILES:
            return ""
    seen = tuple(files)
    cached = _PACKAGES.get(folder)
    if cached is None or cached[0] != seen:
        parts = [f"{os.path.relpath(f[0], folder)}:{_source_fingerprint(f[0])}" for f in files]
        cached = (seen, xxhash.xxh3_64_hexdigest("\n".join(parts).encode()))
        _PACKAGES[folder] = cached
    return cached[1]


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

    def __init__(
        self, ignore: Iterable[str | os.PathLike[str]] = (), *, limit: int | None = None
    ) -> None:
        self.ignore = tuple(os.path.realpath(p) + os.sep for p in ignore)
        self.paths: set[str] = set()
        self.written: set[str] = set()
        """Files opened for writing: a step's outputs, never its inputs."""
        self.listed: set[str] = set()
        """Folders listed."""
        self.limit = limit
        """At most this many paths are kept (a watched plain cell); the rest are counted."""
        self.more = 0
        self.outer: ReadRecorder | None = None
        """The recorder of the step this one runs inside, if any."""

    @classmethod
    def inherit(cls, paths: Iterable[str]) -> None:
        """A step restored inside running steps: the files it read count for them."""
        paths = list(paths)
        recorder = cls._current.get()
        while recorder is not None:
            for path in paths:  # a folder's key ends with a separator
                (recorder.listed if path.endswith(os.sep) else recorder.paths).add(
                    path.rstrip(os.sep) or os.sep
                )
            recorder = recorder.outer

    @classmethod
    def _install(cls) -> None:
        with cls._lock:
            if not cls._installed:
                sys.addaudithook(cls._hook)
                cls._installed = True

    @classmethod
    def _hook(cls, event: str, args: tuple[Any, ...]) -> None:
        if event not in _EVENTS:
            return
        # An audit hook that raises fails the user's open(); try costs nothing here,
        # contextlib.suppress would cost every open in the process.
        try:  # noqa: SIM105
            cls._record(event, args)
        except Exception:
            pass

    @classmethod
    def _record(cls, event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            path, mode, flags = (*args, None, None, None)[:3]
        elif event == "sqlite3.connect":  # SQLite opens the file in C: a read, as far as we know
            path, mode, flags = _sqlite_file(args[0] if args else None), "r", None
            if path is None:
                return
        else:  # a listing; os.listdir() lists the working directory
            path, mode, flags = (args[0] if args and args[0] is not None else "."), None, None
        recorder = cls._current.get()
        recorders: Iterable[ReadRecorder] = cls._active if recorder is None else ()
        if not recorders and recorder is None:
            return
        if not isinstance(path, (str, bytes, os.PathLike)):
            return  # a file descriptor
        if event in ("os.listdir", "os.scandir"):
            if _listed_by_importer():
                return
            kind = "listed"
        elif isinstance(mode, str):
            kind = "written" if any(c in mode for c in "wax+") else "paths"
        else:
            writes = isinstance(flags, int) and bool(flags & _WRITE_FLAGS)
            kind = "written" if writes else "paths"
        found = os.path.abspath(os.fsdecode(path))
        while recorder is not None:  # this step and the steps it runs inside
            getattr(recorder, kind).add(found)
            recorder = recorder.outer
        for other in recorders:
            if other.limit is not None and len(other.paths) >= other.limit:
                other.more += 1  # a plain cell reading a whole tree: counted, not kept
                continue
            getattr(other, kind).add(found)

    def watch(self) -> ReadRecorder:
        """Record reads made outside any step (a plain cell), in any thread, until
        :meth:`unwatch`."""
        self._install()
        with self._lock:
            ReadRecorder._active = (*ReadRecorder._active, self)
        return self

    def unwatch(self) -> None:
        with self._lock:
            ReadRecorder._active = tuple(r for r in ReadRecorder._active if r is not self)

    def file_states(
        self, ignore: Iterable[str | os.PathLike[str]] = ()
    ) -> list[tuple[str, int, int, int, int]]:
        """``(path, size, mtime_ns, ctime_ns, inode)`` of the user's files read and still
        there (outside ``ignore`` too): what changes when a file is written, without
        reading it."""
        self.ignore += _roots(os.fspath(p) for p in ignore)
        found: list[tuple[str, int, int, int, int]] = []
        paths = self.paths - self.written
        if self.more or len(paths) > _STATES_KEPT:  # a whole tree: its size stands for it
            return [("(files read)", len(paths) + self.more, 0, 0, 0)]
        for path in self._users(paths):
            try:
                info = os.stat(path)
            except OSError:
                continue
            found.append((path, info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino))
        return found

    def __enter__(self) -> ReadRecorder:
        self.outer = self._current.get()
        self._token = self._current.set(self)
        return self.watch()

    def __exit__(self, *exc: object) -> None:
        self._current.reset(self._token)
        self.unwatch()

    def files(self) -> dict[str, dict[str, Any]]:
        """Stamps of the user's files that were read, and listings of the folders
        listed (keyed by the folder's path and a separator).

        Left out: the store, the interpreter and installed packages, and
        temporary or system files — unless they are in the working directory
        (the notebook's folder), where every file read counts.
        """
        out: dict[str, dict[str, Any]] = {}
        for path in self._users(self.paths - self.written):
            if Path(path).is_file() and (found := stamp(path)) is not None:
                out[path] = found
        for path in self._users(self.listed):
            if os.path.isdir(path) and (found := listing(path)) is not None:
                out[path.rstrip(os.sep) + os.sep] = found
        return out

    def _users(self, paths: Iterable[str]) -> Iterator[str]:
        here = os.path.realpath(os.getcwd()) + os.sep
        never, system = self.ignore + _installed_roots(), _system_roots()
        for raw in sorted(paths):
            path = os.path.abspath(raw)
            real = os.path.realpath(path)
            if (real + os.sep).startswith(never) or real.endswith((".pyc", ".so")):
                continue
            if (real + os.sep).startswith(system) and not (real + os.sep).startswith(here):
                continue
            yield path
