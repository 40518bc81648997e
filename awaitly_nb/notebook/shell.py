"""Finding the running IPython shell (without importing IPython) and tying the session to it."""

from __future__ import annotations

import sys
from typing import Any

from awaitly_nb.config import Session, default_workflow, get_session

__all__ = ["attach_shell", "current_shell", "session_for_shell", "unwatch_cells", "watch_cells"]


def current_shell() -> Any:
    """The running IPython shell, or None (never imports IPython)."""
    if "IPython" not in sys.modules:
        return None
    from IPython import get_ipython

    return get_ipython()


def attach_shell(session: Session, shell: Any) -> None:
    """In IPython, steps belong to the notebook's workflow (not to the kernel's script)."""
    session.workflow_detector = lambda: default_workflow(shell.user_ns)


def _is_step_cell(source: str) -> bool:
    return source.lstrip().startswith("%%step")


class _CellWatch:
    """Before each cell: remembers the front end's cell id (to tell two cells sharing a
    key from one cell edited), and empties the engine's memo unless it is a ``%%step``
    cell: user code may change any value then (see :mod:`awaitly_nb.core.memo`)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def __call__(self, info: Any = None) -> None:
        cell_id = getattr(info, "cell_id", None)
        self.session.current_cell = cell_id if isinstance(cell_id, str) and cell_id else None
        source = getattr(info, "raw_cell", None)
        if not isinstance(source, str) or not _is_step_cell(source):
            self.session.engine.memo.clear()


def watch_cells(session: Session, shell: Any) -> None:
    """Install the ``pre_run_cell`` hook that lets ``%%step`` skip re-hashing untouched values."""
    unwatch_cells(session, shell)
    watch = _CellWatch(session)
    shell.events.register("pre_run_cell", watch)
    session.engine.memo.clear()
    session.engine.memo.enabled = True


def unwatch_cells(session: Session, shell: Any) -> None:
    session.engine.memo.enabled = False
    session.engine.memo.clear()
    callbacks = shell.events.callbacks.get("pre_run_cell", [])
    for callback in [c for c in callbacks if isinstance(c, _CellWatch)]:
        shell.events.unregister("pre_run_cell", callback)


def session_for_shell() -> tuple[Session, Any]:
    """The session, attached to the running shell if there is one, and the shell."""
    session, shell = get_session(), current_shell()
    if shell is not None and session.workflow_detector is None:
        attach_shell(session, shell)
    return session, shell
