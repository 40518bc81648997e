"""What every form of a notebook step shares: restoring, saving, and the one-line notes."""

from __future__ import annotations

import contextlib
import sys
import time
import types
import warnings
from collections.abc import Iterable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

from awaitly_nb.core.session import Lookup, Session, get_session, jupyter_notebook_name
from awaitly_nb.errors import AwaitlyError, CacheWarning, SerializationError, StorageError
from awaitly_nb.notebook.capture import Output, replay_outputs
from awaitly_nb.notebook.namespace import Targets, changed_names
from awaitly_nb.storage.serialize import dumps_value

__all__ = [
    "ReplayedResult",
    "attach_shell",
    "current_shell",
    "format_duration",
    "notebook_name",
    "produced",
    "restore",
    "save_step",
    "session_for_shell",
    "show_note",
    "unsaveable",
]


def current_shell() -> Any:
    """The running IPython shell, or None (never imports IPython)."""
    if "IPython" not in sys.modules:
        return None
    from IPython import get_ipython

    return get_ipython()


def notebook_name(shell: Any) -> str:
    """The notebook's file name if the front end tells the kernel, else ``default``."""
    vscode = shell.user_ns.get("__vsc_ipynb_file__")
    if isinstance(vscode, str) and vscode:
        return Path(vscode).name
    return jupyter_notebook_name() or "default"


def attach_shell(session: Session, shell: Any) -> None:
    """In IPython, steps belong to the notebook's workflow (not to the kernel's script)."""
    session.workflow_detector = lambda: notebook_name(shell)


def session_for_shell() -> tuple[Session, Any]:
    """The session, attached to the running shell if there is one, and the shell."""
    session, shell = get_session(), current_shell()
    if shell is not None and session.workflow_detector is None:
        attach_shell(session, shell)
    return session, shell


def format_duration(ms: float) -> str:
    """``format_duration(4200)`` is ``'4.2 s'``.

    >>> format_duration(0.4), format_duration(4200), format_duration(95_000)
    ('0.4 ms', '4.2 s', '1 min 35 s')
    """
    if ms < 1000:
        return f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def show_note(text: str, shell: Any = None) -> None:
    """Show a short awaitly_nb note (as a small display in a notebook, on stderr elsewhere)."""
    pub = getattr(shell, "display_pub", None)
    if pub is None:
        print(f"[awaitly_nb] {text}", file=sys.stderr)
        return
    html = f'<div style="font-size:smaller;opacity:0.7">awaitly_nb: {_escape(text)}</div>'
    pub.publish(
        data={"text/plain": f"[awaitly_nb] {text}", "text/html": html},
        metadata={"awaitly_nb": {"note": True}},
    )


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def restored_note(key: str, found: Lookup, names: Iterable[str]) -> str:
    manifest = found.manifest or {}
    shown = ", ".join(names) or "no variables"
    return (
        f"restored {key!r} ({shown}) saved {_when(manifest.get('saved_at', 0.0))}; "
        f"the original run took {format_duration(manifest.get('duration_ms', 0.0))}"
    )


def rerun_note(key: str, found: Lookup) -> str | None:
    if found.status == "stale":
        return f"running {key!r} again: {found.reason}"
    if found.status == "unreadable":
        return f"running {key!r} again: the saved entry cannot be restored"
    return None


class ReplayedResult:
    """Stands in for a last expression whose value could not be saved: shows its saved output."""

    def __init__(self, bundle: dict[str, Any]) -> None:
        self._bundle = bundle

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return self._bundle

    def __repr__(self) -> str:
        return str(self._bundle.get("text/plain", "<restored output>"))


def _rebind(function: types.FunctionType, namespace: dict[str, Any]) -> types.FunctionType:
    """The same function, reading its globals from ``namespace``."""
    rebound = types.FunctionType(
        function.__code__,
        namespace,
        function.__name__,
        function.__defaults__,
        function.__closure__,
    )
    rebound.__kwdefaults__ = function.__kwdefaults__
    rebound.__dict__.update(function.__dict__)
    for attr in ("__qualname__", "__doc__", "__module__", "__annotations__"):
        setattr(rebound, attr, getattr(function, attr))
    return rebound


def _home(value: Any, namespace: dict[str, Any]) -> Any:
    """Make functions and classes defined in the notebook see the notebook's globals again.

    cloudpickle gives a restored function a private copy of the globals it used
    when it was saved, so it would miss later changes and later definitions.
    """
    if isinstance(value, types.FunctionType):
        if value.__module__ == "__main__" and value.__globals__ is not namespace:
            return _rebind(value, namespace)
    elif isinstance(value, type) and value.__module__ == "__main__":
        for attr, member in list(vars(value).items()):
            target = member.__func__ if isinstance(member, (staticmethod, classmethod)) else member
            if isinstance(target, types.FunctionType) and target.__globals__ is not namespace:
                rebound = _rebind(target, namespace)
                wrapped = type(member)(rebound) if target is not member else rebound
                with contextlib.suppress(AttributeError, TypeError):
                    setattr(value, attr, wrapped)
    return value


def restore(namespace: MutableMapping[str, Any], payload: Mapping[str, Any]) -> None:
    """Put a saved step's variables back into ``namespace`` (and remove those it deleted)."""
    variables: dict[str, Any] = payload.get("variables", {})
    if isinstance(namespace, dict):
        variables = {name: _home(value, namespace) for name, value in variables.items()}
    namespace.update(variables)
    for name in payload.get("deleted", ()):
        namespace.pop(name, None)


def replay(payload: Mapping[str, Any], shell: Any = None) -> Any:
    """Show the saved outputs again; return the saved last-expression value (or a stand-in)."""
    outputs: list[Output] = list(payload.get("outputs", ()))
    replay_outputs(outputs, shell)
    if payload.get("has_result"):
        if payload.get("result_saved"):
            return payload.get("result")
        bundle = payload.get("result_bundle")
        if bundle:
            return ReplayedResult(bundle)
    return None


def unsaveable(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The ``(name, type)`` of each value that cannot be serialised."""
    bad = []
    for name, value in values.items():
        try:
            dumps_value(value)
        except SerializationError:
            bad.append((name, type(value).__qualname__))
    return bad


def produced(
    before: Mapping[str, int],
    namespace: Mapping[str, Any],
    targets: Targets,
    *,
    hidden: Mapping[str, Any] | None = None,
    outputs: list[str] | None = None,
    exclude: Iterable[str] = (),
) -> tuple[list[str], list[str], set[str]]:
    """The variables to save, those the step deleted, and which of them are optional.

    Optional ones are objects whose methods the step called but that it did not
    rebind: they may have changed in place (``rows.append(x)``), or not
    (``conn.execute(q)``); one that cannot be saved is left out, not an error.

    Raises:
        AwaitlyError: ``outputs`` names a variable the step did not set.
    """
    if outputs is not None:
        missing = [n for n in outputs if n not in namespace]
        if missing:
            raise AwaitlyError(
                f"outputs= names variables that do not exist after the step: {', '.join(missing)}; "
                "nothing was saved"
            )
        return list(outputs), [], set()
    names, deleted = changed_names(before, namespace, targets.bound | targets.receivers, hidden)
    skip = set(exclude)
    names = [n for n in names if n not in skip]
    optional = {n for n in names if n in targets.receivers and before.get(n) == id(namespace[n])}
    return names, deleted, optional


def save_step(
    session: Session,
    key: str,
    payload: dict[str, Any],
    *,
    fingerprint: str | None,
    duration_ms: float,
    kind: str,
    how_to_exclude: str,
    optional: set[str] = frozenset(),  # type: ignore[assignment]
    inputs: dict[str, str] | None = None,
) -> bool:
    """Save a finished step; on unsaveable variables warn (naming each) and save nothing.

    Unsaveable ``optional`` variables are left out instead (see :func:`produced`).
    """
    session.ran(key, duration_ms)
    variables: dict[str, Any] = payload.get("variables", {})
    for attempt in range(2):
        try:
            session.save(
                key,
                payload,
                fingerprint=fingerprint,
                duration_ms=duration_ms,
                kind=kind,
                variables=variables,
                inputs=inputs,
            )
            return True
        except StorageError as exc:  # disk full, store unreachable: the results stay in memory
            message, reason = f"step {key!r} ran, but it could not be saved: {exc}", str(exc)
        except SerializationError as exc:
            values = variables if "value" not in payload else {"value": payload["value"]}
            bad = unsaveable(values)
            required = [(name, type_) for name, type_ in bad if name not in optional]
            if bad and not required and attempt == 0:
                variables = {n: v for n, v in variables.items() if n not in dict(bad)}
                payload = {**payload, "variables": variables, "skipped": [n for n, _ in bad]}
                continue
            if required:
                names = ", ".join(f"{name} ({type_})" for name, type_ in required)
                hint = how_to_exclude.format(names=",".join(name for name, _ in required))
                reason = f"cannot be saved: {names}"
                message = (
                    f"step {key!r} ran, but it is not saved: these variables cannot be "
                    f"saved: {names}. To save the rest, add {hint}"
                )
            else:
                reason = str(exc)
                message = f"step {key!r} ran, but it is not saved: {exc}"
        warnings.warn(message, CacheWarning, stacklevel=3)
        session.not_saved(key, reason, variables)
        return False
    return False
