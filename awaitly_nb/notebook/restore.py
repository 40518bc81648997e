"""Putting a saved step back: its variables into the namespace, its outputs on screen."""

from __future__ import annotations

import collections
import contextlib
import sys
import types
from collections.abc import Mapping, MutableMapping

from awaitly_nb.core.payload import NOTHING, StepPayload
from awaitly_nb.notebook.capture import replay_outputs

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "ReplayedResult",
    "replay",
    "restore",
    "set_definition_state",
    "set_module_attributes",
]


class ReplayedResult:
    """Stands in for a last expression whose value could not be saved: shows its saved output."""

    def __init__(self, bundle: dict[str, Any]) -> None:
        self._bundle = bundle

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return self._bundle

    def __repr__(self) -> str:
        return str(self._bundle.get("text/plain", "<restored output>"))


def set_module_attributes(modules: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Set the module attributes a replayed step set (``helpers.SCALE = 5``); returns a
    line per module that cannot be imported here."""
    import importlib

    problems = []
    for name, values in modules.items():
        try:
            module = sys.modules.get(name) or importlib.import_module(name)
        except Exception as exc:
            problems.append(f"{name}: {type(exc).__name__}: {exc}")
            continue
        for attr, value in values.items():
            setattr(module, attr, value)
    return problems


def set_definition_state(
    namespace: Mapping[str, Any], definitions: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """Set again what a replayed step changed inside the notebook's functions and
    classes (see :func:`~awaitly_nb.notebook.namespace.definition_state`); returns a
    line per part that cannot be set here."""
    problems = []
    for name, parts in definitions.items():
        value = namespace.get(name)
        if not isinstance(value, (types.FunctionType, type)):
            problems.append(f"{name} is not a function or class here")
            continue
        for part, item in parts.items():
            try:
                if part in ("__defaults__", "__kwdefaults__"):
                    setattr(value, part, item)
                elif part.startswith("__dict__."):
                    setattr(value, part.removeprefix("__dict__."), item)
                elif part.startswith("__closure__."):
                    closure = getattr(value, "__closure__", None) or ()
                    closure[int(part.removeprefix("__closure__."))].cell_contents = item
                else:
                    setattr(value, part, item)
            except (AttributeError, TypeError, ValueError, IndexError) as exc:
                problems.append(f"{name}.{part}: {type(exc).__name__}: {exc}")
    return problems


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


def _from_a_cell(function: types.FunctionType, known: Mapping[str, Any]) -> bool:
    """True for a function written in a notebook cell; False for code a library made
    for it (a dataclass's ``__repr__``, ``contextmanager``'s wrapper), which must keep
    the globals it was restored with.

    cloudpickle restores a function with the globals it used; a library's function
    uses names the notebook does not define (``_thread``, ``_GeneratorContextManager``).
    ``known`` are the names the notebook defines, or the restore is about to.
    """
    return all(name.startswith("__") or name in known for name in function.__globals__)


def _home(value: Any, namespace: dict[str, Any], known: Mapping[str, Any]) -> Any:
    """Make functions and classes defined in the notebook see the notebook's globals again.

    cloudpickle gives a restored function a private copy of the globals it used
    when it was saved, so it would miss later changes and later definitions.
    """
    if isinstance(value, types.FunctionType):
        if (
            value.__module__ == "__main__"
            and value.__globals__ is not namespace
            and _from_a_cell(value, known)
        ):
            return _rebind(value, namespace)
    elif isinstance(value, type) and value.__module__ == "__main__":
        for attr, member in list(vars(value).items()):
            target = member.__func__ if isinstance(member, (staticmethod, classmethod)) else member
            if (
                isinstance(target, types.FunctionType)
                and target.__globals__ is not namespace
                and _from_a_cell(target, known)
            ):
                rebound = _rebind(target, namespace)
                wrapped = type(member)(rebound) if target is not member else rebound
                with contextlib.suppress(AttributeError, TypeError):
                    setattr(value, attr, wrapped)
    return value


def restore(namespace: MutableMapping[str, Any], payload: StepPayload) -> None:
    """Put a saved step's variables back into ``namespace`` (and remove those it deleted)."""
    variables = dict(payload.variables)
    if isinstance(namespace, dict):
        known = collections.ChainMap(variables, namespace)
        variables = {name: _home(value, namespace, known) for name, value in variables.items()}
    namespace.update(variables)
    for name in payload.deleted:
        namespace.pop(name, None)
    _settle_figures(variables.values())


def _settle_figures(values: Any) -> None:
    """Restored matplotlib figures end as a run leaves them: the backend is loaded (so
    ``fig`` as a last expression draws, as after a run) and the figures are not open
    in pyplot (the inline backend showed and closed them; the replay shows them)."""
    plt = sys.modules.get("matplotlib.pyplot")
    figure = sys.modules.get("matplotlib.figure")
    if plt is None or figure is None:
        return
    figures = [v for v in values if isinstance(v, figure.Figure)]
    if figures:  # else the backend loads when a cell first draws, as in a run
        with contextlib.suppress(Exception):
            plt._get_backend_mod()
    for value in figures:
        with contextlib.suppress(Exception):
            plt.close(value)


def replay(payload: StepPayload, shell: Any = None) -> Any:
    """Show the saved outputs again; return the saved last-expression value (or a stand-in)."""
    outputs = list(payload.outputs)
    value = _result_value(payload)
    hook = getattr(shell, "displayhook", None)
    if payload.result is not NOTHING and payload.result_bundle is not None and shell is not None:
        _show_once_as(shell, payload.result, payload.result_bundle)
    if payload.has_result and hook is not None and any(o["type"] == "result" for o in outputs):

        def show() -> None:  # where the original run showed it
            hook(value)

        replay_outputs(outputs, shell, show)
        return None
    replay_outputs([o for o in outputs if o["type"] != "result"], shell)
    return value if payload.has_result else None


def _result_value(payload: StepPayload) -> Any:
    """The value to show as ``Out[n]``: the restored one, shown as it was recorded."""
    if not payload.has_result:
        return None
    if payload.result is NOTHING:
        assert payload.result_bundle is not None
        return ReplayedResult(payload.result_bundle)
    return payload.result


def _show_once_as(shell: Any, value: Any, bundle: dict[str, Any]) -> None:
    """Make the shell's display hook show ``value`` with its recorded ``bundle`` (what
    the user saw), not by rendering it again; ``Out[n]`` and ``_`` still get ``value``.

    The override lasts for one display: a replay whose output is silenced (``;``)
    leaves it to the next display, which it passes through and removes.
    """
    hook = getattr(shell, "displayhook", None)
    if hook is None or not hasattr(hook, "compute_format_data"):
        return
    own = vars(hook).get("compute_format_data")
    original = hook.compute_format_data

    def once(result: Any) -> Any:
        if own is None:
            with contextlib.suppress(AttributeError):
                del hook.compute_format_data
        else:
            hook.compute_format_data = own
        if result is value:
            return dict(bundle), {}
        return original(result)

    hook.compute_format_data = once
