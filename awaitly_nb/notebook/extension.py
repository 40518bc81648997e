"""``%load_ext awaitly_nb``: register the magics and teach the session the notebook's name."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from awaitly_nb.core.session import get_session
from awaitly_nb.notebook.magics import StepMagics

__all__ = ["load_ipython_extension", "unload_ipython_extension"]


def _notebook_name(shell: Any) -> str | None:
    vscode = shell.user_ns.get("__vsc_ipynb_file__")
    if isinstance(vscode, str) and vscode:
        return Path(vscode).name
    jupyter = os.environ.get("JPY_SESSION_NAME")
    if jupyter:
        return Path(jupyter).name
    return None


def load_ipython_extension(shell: Any) -> None:
    """Register ``%%step`` and ``%steps``; loading twice is harmless."""
    shell.register_magics(StepMagics)
    get_session().workflow_detector = lambda: _notebook_name(shell)


def unload_ipython_extension(shell: Any) -> None:
    """Remove the magics registered by :func:`load_ipython_extension`."""
    magics = shell.magics_manager.magics
    magics["cell"].pop("step", None)
    magics["line"].pop("steps", None)
    shell.magics_manager.registry.pop("StepMagics", None)
    get_session().workflow_detector = None
