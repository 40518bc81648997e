"""awaitly_nb: keyed, resumable steps for Jupyter notebooks and Python scripts.

The awaitly workflow API in Python::

    from awaitly_nb import create_workflow, create_file_cache

    workflow = create_workflow(cache=create_file_cache(".awaitly/cache"))
    workflow(lambda step: step(lambda: expensive(), key="expensive:v1"))
"""

from __future__ import annotations

from typing import Any

from awaitly_nb._version import __version__
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
