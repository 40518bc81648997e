"""Finding the running IPython shell (without importing IPython) and tying the session to it."""

from __future__ import annotations

import sys
from typing import Any

from awaitly_nb.config import Session, default_workflow, get_session

__all__ = ["attach_shell", "current_shell", "session_for_shell"]


def current_shell() -> Any:
    """The running IPython shell, or None (never imports IPython)."""
    if "IPython" not in sys.modules:
        return None
    from IPython import get_ipython

    return get_ipython()


def attach_shell(session: Session, shell: Any) -> None:
    """In IPython, steps belong to the notebook's workflow (not to the kernel's script)."""
    session.workflow_detector = lambda: default_workflow(shell.user_ns)


def session_for_shell() -> tuple[Session, Any]:
    """The session, attached to the running shell if there is one, and the shell."""
    session, shell = get_session(), current_shell()
    if shell is not None and session.workflow_detector is None:
        attach_shell(session, shell)
    return session, shell
