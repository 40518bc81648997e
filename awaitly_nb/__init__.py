"""awaitly_nb: keyed, resumable steps for Jupyter notebooks and Python scripts.

The awaitly workflow API in Python::

    from awaitly_nb import create_workflow, create_file_cache

    workflow = create_workflow(cache=create_file_cache(".awaitly/cache"))
    workflow(lambda step: step(lambda: expensive(), key="expensive:v1"))
"""

from __future__ import annotations

import importlib

from awaitly_nb._version import __version__

TYPE_CHECKING = False  # typing is not imported at run time: see awaitly_nb._namedtuple
if TYPE_CHECKING:
    from typing import Any

    from awaitly_nb.config import configure, gc, step_cache
    from awaitly_nb.core.collector import StepCollector, create_step_collector
    from awaitly_nb.core.events import (
        Event,
        StepCacheHit,
        StepCacheMiss,
        StepComplete,
        StepError,
        StepStart,
        StepSuccess,
        WorkflowError,
        WorkflowStart,
        WorkflowSuccess,
    )
    from awaitly_nb.core.persistence import StatePersistence, create_state_persistence
    from awaitly_nb.core.process import register_process_state
    from awaitly_nb.core.state import (
        StepEntry,
        StepMeta,
        WorkflowState,
        is_step_complete,
        parse_state,
        stringify_state,
    )
    from awaitly_nb.core.workflow import StepCache, Workflow, create_workflow
    from awaitly_nb.errors import (
        AwaitlyError,
        CacheWarning,
        InvalidKeyError,
        SerializationError,
        StateFormatError,
        StorageError,
        TrustError,
    )
    from awaitly_nb.notebook.block import step
    from awaitly_nb.sharing.transfer import export_state, import_state
    from awaitly_nb.storage.adapters import DiskCacheAdapter, MemoryAdapter
    from awaitly_nb.storage.filecache import FileCache, create_file_cache

# Where each public name lives: a module is imported when one of its names is
# first used, so `import awaitly_nb` costs a script next to nothing and a lookup
# loads only what it needs (not sharing, the CLI, asyncio or the widget).
_HOMES = {
    "awaitly_nb.config": ("configure", "gc", "step_cache"),
    "awaitly_nb.core.collector": ("StepCollector", "create_step_collector"),
    "awaitly_nb.core.events": (
        "Event",
        "StepCacheHit",
        "StepCacheMiss",
        "StepComplete",
        "StepError",
        "StepStart",
        "StepSuccess",
        "WorkflowError",
        "WorkflowStart",
        "WorkflowSuccess",
    ),
    "awaitly_nb.core.persistence": ("StatePersistence", "create_state_persistence"),
    "awaitly_nb.core.process": ("register_process_state",),
    "awaitly_nb.core.state": (
        "StepEntry",
        "StepMeta",
        "WorkflowState",
        "is_step_complete",
        "parse_state",
        "stringify_state",
    ),
    "awaitly_nb.core.workflow": ("StepCache", "Workflow", "create_workflow"),
    "awaitly_nb.errors": (
        "AwaitlyError",
        "CacheWarning",
        "InvalidKeyError",
        "SerializationError",
        "StateFormatError",
        "StorageError",
        "TrustError",
    ),
    "awaitly_nb.notebook.block": ("step",),
    "awaitly_nb.sharing.transfer": ("export_state", "import_state"),
    "awaitly_nb.storage.adapters": ("DiskCacheAdapter", "MemoryAdapter"),
    "awaitly_nb.storage.filecache": ("FileCache", "create_file_cache"),
}
_HOME = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'awaitly_nb' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next use is a plain global
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME})


__all__ = [
    "AwaitlyError",
    "CacheWarning",
    "DiskCacheAdapter",
    "Event",
    "FileCache",
    "InvalidKeyError",
    "MemoryAdapter",
    "SerializationError",
    "StateFormatError",
    "StatePersistence",
    "StepCache",
    "StepCacheHit",
    "StepCacheMiss",
    "StepCollector",
    "StepComplete",
    "StepEntry",
    "StepError",
    "StepMeta",
    "StepStart",
    "StepSuccess",
    "StorageError",
    "TrustError",
    "Workflow",
    "WorkflowError",
    "WorkflowStart",
    "WorkflowState",
    "WorkflowSuccess",
    "__version__",
    "configure",
    "create_file_cache",
    "create_state_persistence",
    "create_step_collector",
    "create_workflow",
    "export_state",
    "gc",
    "import_state",
    "is_step_complete",
    "parse_state",
    "register_process_state",
    "status_widget",
    "step",
    "step_cache",
    "stringify_state",
]


def status_widget() -> Any:
    """The status widget of the current workflow: each step's state, updated live.

    See :class:`awaitly_nb.notebook.widget.StatusWidget`; needs ipywidgets
    (for a text table use ``%steps list`` or
    :func:`awaitly_nb.notebook.status_table.status_text`).
    """
    from awaitly_nb.notebook.widget import StatusWidget

    return StatusWidget.for_session()


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext awaitly_nb``: register ``%%step`` and ``%steps`` (IPython imported lazily)."""
    from awaitly_nb.notebook.extension import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: object) -> None:
    """``%unload_ext awaitly_nb``: remove the magics."""
    from awaitly_nb.notebook.extension import unload_ipython_extension as unload

    unload(ipython)
