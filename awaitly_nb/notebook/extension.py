"""``%load_ext awaitly_nb``: register the magics and teach the session the notebook's name."""

from __future__ import annotations

from typing import Any

from awaitly_nb.config import get_session
from awaitly_nb.notebook.magics import (
    StepMagics,
    install_await_transformer,
    remove_await_transformer,
)
from awaitly_nb.notebook.shell import attach_shell, unwatch_cells, watch_cells

__all__ = ["load_ipython_extension", "unload_ipython_extension"]


def load_ipython_extension(shell: Any) -> None:
    """Register ``%%step`` and ``%steps``; loading twice is harmless."""
    shell.register_magics(StepMagics)
    install_await_transformer(shell)
    attach_shell(get_session(), shell)
    watch_cells(get_session(), shell)


def unload_ipython_extension(shell: Any) -> None:
    """Remove the magics registered by :func:`load_ipython_extension`."""
    magics = shell.magics_manager.magics
    magics["cell"].pop("step", None)
    magics["line"].pop("steps", None)
    shell.magics_manager.registry.pop("StepMagics", None)
    remove_await_transformer(shell)
    get_session().workflow_detector = None
    unwatch_cells(get_session(), shell)
