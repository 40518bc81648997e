"""Helpers shared by the test modules, loaded as a pytest plugin (``-p awaitly_testing``).

Sibling ``conftest.py`` files collide under ``--doctest-modules`` (the test
folders are not packages), so shared fixtures and helpers live here.
"""

from __future__ import annotations

import builtins
import mmap
import sys
import types
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from IPython.testing import globalipapp

EXTENSION = "awaitly_nb"


def ipython_shell() -> Any:
    """The process's one in-process test shell (IPython's ``globalipapp``), with ``awaitly_nb``.

    ``start_ipython()`` starts it the first time and returns None afterwards;
    it also *replaces* ``globalipapp.get_ipython``, so both are looked up on
    the module at call time (a ``from ... import get_ipython`` made before
    another test module started the shell is stale and returns None).

    The extension is (re)loaded unless both magics are registered: a test may
    have unloaded it, or removed a magic without unloading it.

    As in a kernel, ``builtins`` has no ``_``: a doctest run leaves
    ``builtins._ = None`` behind, and while it is there IPython's displayhook
    stops setting ``_`` in the user namespace.
    """
    shell: Any = globalipapp.start_ipython() or globalipapp.get_ipython()
    assert shell is not None, "IPython's test shell did not start"
    builtins.__dict__.pop("_", None)
    if shell.find_cell_magic("step") is None or shell.find_line_magic("steps") is None:
        if EXTENSION in shell.extension_manager.loaded:
            shell.extension_manager.unload_extension(EXTENSION)
        shell.extension_manager.load_extension(EXTENSION)
    return shell


def close_session_stores() -> None:
    """Close the stores the notebook session opened (as a kernel shutdown or restart would).

    The one place the tests touch ``Session._stores`` (private): the next use reopens them.
    """
    from awaitly_nb.config import get_session  # not at plugin load: before any test

    session = get_session()
    for store in session._stores.values():
        store.close()
    session._stores.clear()


@pytest.fixture
def gone_module(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """An object whose class lives in a module that can be made to disappear.

    While the module is in ``sys.modules`` cloudpickle pickles the object by
    reference; after ``remove()`` the pickled bytes name a module that does not
    exist, so they cannot be unpickled.
    """
    name = "awaitly_nb_tests_gone_module"
    module = types.ModuleType(name)

    class Gone:
        def __init__(self) -> None:
            self.x = 1

    Gone.__module__ = name
    Gone.__qualname__ = "Gone"
    module.Gone = Gone  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, name, module)
    return SimpleNamespace(
        name=name, obj=Gone(), remove=lambda: monkeypatch.delitem(sys.modules, name)
    )


class Counted:
    """A step function that counts its calls ("computed once" is proven by counting)."""

    def __init__(self, value: Any = None) -> None:
        self.value = value
        self.calls = 0

    def __call__(self) -> Any:
        self.calls += 1
        return self.value


def blob_files(directory: Path) -> list[Path]:
    """The blob files under a BlobStore directory (``ab/cdef...``), not its temporaries."""
    if not directory.exists():
        return []
    return sorted(
        file
        for sub in directory.iterdir()
        if sub.is_dir() and len(sub.name) == 2
        for file in sub.iterdir()
    )


def memory_map_under(obj: Any) -> mmap.mmap | None:
    """The mmap.mmap at the end of an array's ``base`` chain (through memoryviews), if any."""
    for _ in range(50):
        if isinstance(obj, mmap.mmap):
            return obj
        if obj is None:
            return None
        obj = obj.obj if isinstance(obj, memoryview) else getattr(obj, "base", None)
    return None


def flip_byte(path: Path, offset: int | None = None) -> None:
    """Change one byte of a file in place (by default the one in the middle)."""
    with path.open("r+b") as f:
        if offset is None:
            offset = path.stat().st_size // 2
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x40]))


def big_array(seed: int = 0, count: int = 20_000) -> Any:
    """A float64 array well above the out-of-band threshold (160 KB by default)."""
    import numpy as np

    return np.random.default_rng(seed).standard_normal(count)
