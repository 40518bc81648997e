"""Helpers shared by the test modules, loaded as a pytest plugin (``-p awaitly_testing``).

Sibling ``conftest.py`` files collide under ``--doctest-modules`` (the test
folders are not packages), so shared fixtures and helpers live here.
"""

from __future__ import annotations

import mmap
import sys
import types
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest


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
