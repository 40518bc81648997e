"""``%load_ext awaitly_nb``: register the magics and teach the session the notebook's name."""

from __future__ import annotations

import warnings
from typing import Any

from awaitly_nb.config import get_session
from awaitly_nb.errors import CacheWarning
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
    if not getattr(warnings.formatwarning, "awaitly_nb", False):
        warnings.formatwarning = _plain_cache_warnings(warnings.formatwarning)


def _plain_cache_warnings(original: Any) -> Any:
    """``warnings.formatwarning`` that shows a CacheWarning as its message alone: the
    source line it would add is the cell's ``get_ipython().run_cell_magic(...)``
    call, with the whole cell in it."""

    def formatwarning(
        message: Any, category: Any, filename: str, lineno: int, line: str | None = None
    ) -> str:
        if isinstance(category, type) and issubclass(category, CacheWarning):
            return f"{category.__name__}: {message}\n"
        return str(original(message, category, filename, lineno, line))

    formatwarning.awaitly_nb = True  # type: ignore[attr-defined]
    formatwarning.original = original  # type: ignore[attr-defined]
    return formatwarning


def unload_ipython_extension(shell: Any) -> None:
    """Remove the magics registered by :func:`load_ipython_extension`."""
    magics = shell.magics_manager.magics
    magics["cell"].pop("step", None)
    magics["line"].pop("steps", None)
    shell.magics_manager.registry.pop("StepMagics", None)
    remove_await_transformer(shell)
    get_session().workflow_detector = None
    unwatch_cells(get_session(), shell)
    if getattr(warnings.formatwarning, "awaitly_nb", False):
        warnings.formatwarning = warnings.formatwarning.original  # type: ignore[attr-defined]
