"""Process-wide state a step may change: recorded when it runs, re-applied when it replays.

A step that draws from ``np.random``, sets an environment variable, changes
the working directory or a pandas option leaves the process in a state the
cells after it see. A replay must leave the same state, so each registered
state is read before and after a step runs; what changed is saved with the
step and re-applied on a restore.

The global random generators are also *inputs*: a step that draws from them
read their state before it ran, so a different seed in an earlier cell makes
it run again (``the numpy.random state before it changed``).

Built in (:data:`STATES`): ``random``, ``numpy.random``, ``os.environ``,
``cwd``, ``sys.path``, ``sys.recursionlimit``, ``warnings.filters``,
``pandas.options``, ``matplotlib.rcParams``, ``numpy.printoptions`` and
``decimal.context`` (the last four only once
their module is imported). A library adds its own with
:func:`register_process_state`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Mapping

from awaitly_nb.core.digest import value_digest

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NamedTuple
else:
    from awaitly_nb._namedtuple import NamedTuple

__all__ = [
    "STATES",
    "ProcessState",
    "apply_changes",
    "changes",
    "register_process_state",
    "snapshot",
    "state_digest",
]

INPUT_PREFIX = "@"
"""Inputs named ``@<state>`` are process states a step read (``@numpy.random``)."""


class ProcessState(NamedTuple):
    """One piece of process-wide state.

    Attributes:
        name: how notes and saved entries name it.
        get: its current value (picklable), or None when it does not apply
            (its module is not imported).
        delta: what changed from ``before`` to ``after`` (None: nothing).
        apply: re-applies a delta.
        is_input: the value before a step is one of the step's inputs when the
            step changed it (a random generator's state).
    """

    name: str
    get: Callable[[], Any]
    delta: Callable[[Any, Any], Any]
    apply: Callable[[Any], None]
    is_input: bool = False


def _replaced(before: Any, after: Any) -> Any:
    """A whole-value delta: the new value if it differs (by content) from the old."""
    if after is None or value_digest(before) == value_digest(after):
        return None
    return after


def _mapping_delta(before: Any, after: Any) -> Any:
    """``{"set": {k: v}, "unset": [k]}`` between two flat mappings, or None."""
    if not isinstance(before, Mapping) or not isinstance(after, Mapping):
        return None
    changed = {k: v for k, v in after.items() if k not in before or before[k] != v}
    removed = sorted(k for k in before if k not in after)
    return {"set": changed, "unset": removed} if changed or removed else None


def _apply_environ(delta: Any) -> None:
    os.environ.update(delta["set"])
    for name in delta["unset"]:
        os.environ.pop(name, None)


def _path_delta(before: Any, after: Any) -> Any:
    added = [p for p in after if p not in before]
    return added or None


def _apply_path(added: Any) -> None:
    for path in added:
        if path not in sys.path:
            sys.path.append(path)


def _random_state() -> Any:
    random = sys.modules.get("random")
    return None if random is None else random.getstate()


def _set_random_state(state: Any) -> None:
    import random

    random.setstate(state)


def _numpy_state() -> Any:
    numpy = sys.modules.get("numpy")
    return None if numpy is None else numpy.random.get_state()


def _set_numpy_state(state: Any) -> None:
    import numpy

    numpy.random.set_state(state)


def _numpy_print() -> Any:
    numpy = sys.modules.get("numpy")
    return None if numpy is None else dict(numpy.get_printoptions())


def _apply_numpy_print(delta: Any) -> None:
    import numpy

    numpy.set_printoptions(**_differing(numpy.get_printoptions(), delta["set"]))


def _numpy_errors() -> Any:
    numpy = sys.modules.get("numpy")
    return None if numpy is None else dict(numpy.geterr())


def _apply_numpy_errors(delta: Any) -> None:
    import numpy

    numpy.seterr(**delta["set"])


def _sklearn_config() -> Any:
    sklearn = sys.modules.get("sklearn")
    return None if sklearn is None else dict(sklearn.get_config())


def _apply_sklearn(delta: Any) -> None:
    import sklearn  # type: ignore[import-not-found]

    sklearn.set_config(**_differing(sklearn.get_config(), delta["set"]))


_STYLES = {"PercentStyle": "%", "StrFormatStyle": "{", "StringTemplateStyle": "$"}


def _handler(handler: Any) -> Any:
    """A root-logger handler as plain data: a stream or file handler and its format
    (``logging.basicConfig`` makes these); any other handler by its type alone."""
    import logging

    formatter = handler.formatter
    form = None
    if formatter is not None:
        style = _STYLES.get(type(formatter._style).__name__, "%")
        form = (formatter._fmt, formatter.datefmt, style)
    if type(handler) is logging.StreamHandler:
        stream = handler.stream
        for name in ("stderr", "stdout"):  # or the recording stand-in of a step's output
            if stream is getattr(sys, name) or getattr(stream, "stands_for", None) == name:
                return ("stream", name, handler.level, form)
    if type(handler) is logging.FileHandler:
        where = (handler.baseFilename, handler.mode, handler.encoding)
        return ("file", where, handler.level, form)
    return ("other", f"{type(handler).__module__}.{type(handler).__qualname__}")


def _logging_root() -> Any:
    logging = sys.modules.get("logging")
    if logging is None:
        return None
    root = logging.getLogger()
    return {"level": root.level, "handlers": [_handler(h) for h in root.handlers]}


class _CurrentStream:
    """``sys.stdout`` or ``sys.stderr`` as it is at each write, so that what a replayed
    log handler writes while a later step runs is recorded by that step."""

    def __init__(self, name: str) -> None:
        self.stands_for = name

    def write(self, text: str) -> int:
        return int(getattr(sys, self.stands_for).write(text) or len(text))

    def flush(self) -> None:
        getattr(sys, self.stands_for).flush()


def _make_handler(described: Any) -> Any:
    import logging

    if described[0] == "other":
        raise ValueError(f"a {described[1]} handler cannot be made again")
    kind, where, level, form = described
    if kind == "stream":
        handler: Any = logging.StreamHandler(_CurrentStream(where))
    else:
        filename, mode, encoding = where
        handler = logging.FileHandler(filename, mode, encoding=encoding)
    handler.setLevel(level)
    if form is not None:
        handler.setFormatter(logging.Formatter(form[0], form[1], style=form[2]))
    return handler


def _set_logging_root(value: Any) -> None:
    import logging

    root = logging.getLogger()
    root.setLevel(value["level"])
    wanted = list(value["handlers"])
    for handler in list(root.handlers):  # keep the handlers it had, drop the others
        described = _handler(handler)
        if described in wanted:
            wanted.remove(described)
        else:
            root.removeHandler(handler)
    for described in wanted:
        root.addHandler(_make_handler(described))


def _differing(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, Any]:
    """What in ``wanted`` differs from ``current`` (a replay sets only that)."""
    out = {}
    for key, value in wanted.items():
        try:
            same = key in current and bool(current[key] == value)
        except Exception:  # values that do not compare to a bool (arrays)
            same = False
        if not same:
            out[key] = value
    return out


_DECIMAL = ("prec", "rounding", "Emin", "Emax", "capitals", "clamp")


def _decimal_context() -> Any:
    decimal = sys.modules.get("decimal")
    if decimal is None:
        return None
    context = decimal.getcontext()
    out = {name: getattr(context, name) for name in _DECIMAL}
    out["traps"] = sorted(signal.__name__ for signal, on in context.traps.items() if on)
    return out


def _apply_decimal(delta: Any) -> None:
    import decimal

    context = decimal.getcontext()
    for name, value in delta["set"].items():
        if name == "traps":
            traps = set(value)
            for signal in list(context.traps):
                context.traps[signal] = signal.__name__ in traps
        else:
            setattr(context, name, value)


def _pandas_options() -> Any:
    if "pandas" not in sys.modules:
        return None
    pandas = sys.modules["pandas"]
    try:
        from pandas._config import config  # type: ignore[import-untyped]

        deprecated = set(getattr(config, "_deprecated_options", {}))
        keys = [k for k in config._registered_options if k not in deprecated]
    except (ImportError, AttributeError):
        return None
    out: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # options pandas warns about reading
        for key in keys:
            try:
                out[key] = pandas.get_option(key)
            except Exception:
                continue
    return out


def _apply_pandas(delta: Any) -> None:
    import pandas  # type: ignore[import-untyped]

    refused = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # options pandas warns about reading
        current = {}
        for key in delta["set"]:
            with contextlib.suppress(Exception):
                current[key] = pandas.get_option(key)
    for key, value in _differing(current, delta["set"]).items():
        try:
            pandas.set_option(key, value)
        except Exception:
            refused.append(key)
    if refused:
        raise ValueError(f"pandas refused {', '.join(refused)}")


_RC_FRONT_END = frozenset(("backend", "interactive"))


def _rc_params() -> Any:
    if "matplotlib" not in sys.modules:
        return None
    import matplotlib

    # the backend and interactive mode are the front end's: the inline backend turns
    # interactive mode on when it loads, which a replay may do earlier than a run
    return {k: v for k, v in matplotlib.rcParams.items() if k not in _RC_FRONT_END}


def _apply_rc(delta: Any) -> None:
    import matplotlib

    params: Any = matplotlib.rcParams
    wanted = {k: v for k, v in delta["set"].items() if k in params and k not in _RC_FRONT_END}
    params.update(_differing({k: params[k] for k in wanted}, wanted))


def _set_filters(filters: Any) -> None:
    current: Any = warnings.filters
    current[:] = list(filters)
    warnings._filters_mutated()  # type: ignore[attr-defined]


STATES: dict[str, ProcessState] = {}
"""The registered states, by name."""


def register_process_state(
    name: str,
    get: Callable[[], Any],
    set: Callable[[Any], None],
    *,
    is_input: bool = False,
) -> None:
    """Record and replay a piece of process-wide state that steps may change.

    ``get()`` returns its value (picklable; None when it does not apply) and
    ``set(value)`` restores it. A step that changes it saves the new value,
    and a replay of the step calls ``set`` with it. With ``is_input`` the
    value before the step is also one of its inputs.

    >>> level = {"value": 1}
    >>> register_process_state("demo.level", lambda: level["value"],
    ...                        lambda v: level.update(value=v))
    >>> before = snapshot()
    >>> level["value"] = 2  # a step changes it
    >>> changes(before, snapshot())["demo.level"]
    2
    >>> level["value"] = 1  # a new kernel
    >>> apply_changes({"demo.level": 2}), level["value"]  # the step replays
    ([], 2)
    >>> del STATES["demo.level"]
    """
    STATES[name] = ProcessState(name, get, _replaced, set, is_input)


def _builtin() -> None:
    for state in (
        ProcessState("random", _random_state, _replaced, _set_random_state, is_input=True),
        ProcessState("numpy.random", _numpy_state, _replaced, _set_numpy_state, is_input=True),
        ProcessState("os.environ", lambda: dict(os.environ), _mapping_delta, _apply_environ),
        ProcessState("cwd", os.getcwd, _replaced, os.chdir),
        ProcessState("sys.path", lambda: list(sys.path), _path_delta, _apply_path),
        ProcessState("sys.recursionlimit", sys.getrecursionlimit, _replaced, sys.setrecursionlimit),
        ProcessState("warnings.filters", lambda: list(warnings.filters), _replaced, _set_filters),
        ProcessState("pandas.options", _pandas_options, _mapping_delta, _apply_pandas),
        ProcessState("numpy.printoptions", _numpy_print, _mapping_delta, _apply_numpy_print),
        ProcessState("numpy.seterr", _numpy_errors, _mapping_delta, _apply_numpy_errors),
        ProcessState("logging.root", _logging_root, _replaced, _set_logging_root),
        ProcessState("sklearn.config", _sklearn_config, _mapping_delta, _apply_sklearn),
        ProcessState("decimal.context", _decimal_context, _mapping_delta, _apply_decimal),
        ProcessState("matplotlib.rcParams", _rc_params, _mapping_delta, _apply_rc),
    ):
        STATES[state.name] = state


_builtin()


def snapshot() -> dict[str, Any]:
    """Every registered state's value now (those that do not apply are left out)."""
    out = {}
    for name, state in list(STATES.items()):
        try:
            value = state.get()
        except Exception:
            continue
        if value is not None:
            out[name] = value
    return out


def changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """What a step changed: ``{name: delta}`` for each state that differs."""
    out = {}
    for name, value in after.items():
        state = STATES.get(name)
        if state is None:
            continue
        try:
            if name in before:
                delta = state.delta(before[name], value)
            else:  # it came into being during the step (pandas imported): all of it is
                # new, and a replay sets what differs from the new kernel's
                delta = value if state.delta is _replaced else state.delta({}, value)
        except Exception:
            continue
        if delta is not None:
            out[name] = delta
    return out


def apply_changes(deltas: Mapping[str, Any]) -> list[str]:
    """Re-apply a step's saved changes; returns a line per change that could not be applied."""
    problems = []
    for name, delta in deltas.items():
        state = STATES.get(name)
        if state is None:
            problems.append(f"{name}: not registered in this process")
            continue
        try:
            state.apply(delta)
        except Exception as exc:
            problems.append(f"{name}: {type(exc).__name__}: {exc}")
    return problems


SETTINGS = "settings"
"""The input ``@settings``: the display and number settings in force before a cell ran."""

_NUMPY_PRINT = {
    "edgeitems": 3,
    "threshold": 1000,
    "floatmode": "maxprec",
    "precision": 8,
    "suppress": False,
    "linewidth": 75,
    "nanstr": "nan",
    "infstr": "inf",
    "sign": "-",
    "formatter": None,
    "legacy": False,
}
_NUMPY_ERRORS = {"divide": "warn", "over": "warn", "under": "ignore", "invalid": "warn"}


def _changed_from(defaults: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    return _differing(defaults, {k: v for k, v in current.items() if k in defaults})


def _pandas_changed() -> dict[str, Any]:
    if "pandas" not in sys.modules:
        return {}
    from pandas._config import config

    options, now = config._registered_options, _pandas_options() or {}
    return _changed_from({k: options[k].defval for k in now if k in options}, now)


def _rc_changed() -> dict[str, Any]:
    if "matplotlib" not in sys.modules:
        return {}
    import matplotlib

    defaults: Any = matplotlib.rcParamsDefault
    return _changed_from(defaults, _rc_params() or {})


def _decimal_changed() -> dict[str, Any]:
    if "decimal" not in sys.modules:
        return {}
    import decimal

    fresh = decimal.Context()
    defaults = {name: getattr(fresh, name) for name in _DECIMAL}
    defaults["traps"] = sorted(s.__name__ for s, on in fresh.traps.items() if on)
    return _changed_from(defaults, _decimal_context() or {})


_SKLEARN_DISPLAY = {"display": "diagram", "print_changed_only": True}
"""scikit-learn's settings that change how an estimator shows, at their defaults."""


def _sklearn_changed() -> dict[str, Any]:
    return _changed_from(_SKLEARN_DISPLAY, _sklearn_config() or {})


def _logging_changed() -> dict[str, Any]:
    root = _logging_root()
    if root is None or (root["level"] == 30 and not root["handlers"]):  # WARNING, none
        return {}
    return dict(root)


_IGNORED_BY_PYTHON = frozenset(
    ("DeprecationWarning", "PendingDeprecationWarning", "ImportWarning", "ResourceWarning")
)


def _warnings_changed() -> dict[str, Any]:
    """Filters that hide or raise every warning of a built-in category
    (``filterwarnings("ignore")``, ``simplefilter("error", FutureWarning)``), in
    order, beyond those Python starts with; ``"always"`` and ``"once"`` only change
    how often one shows. Filters for one message, one module or a library's own category are left
    out: libraries add those as they are imported (numpy's ``RankWarning``), which a
    replay may do in another order."""
    broad = []
    for action, message, category, module, lineno in warnings.filters:
        if message is not None or module is not None or lineno:
            continue
        if getattr(category, "__module__", "") != "builtins":
            continue
        name = getattr(category, "__qualname__", "")
        if action == "error" or (action == "ignore" and name not in _IGNORED_BY_PYTHON):
            broad.append(f"{action}:{name}")
    return {"filters": broad} if broad else {}


SETTINGS_SOURCES: dict[str, Callable[[], Mapping[str, Any]]] = {}
"""More settings a cell's output follows, by name: each tells those that differ from
their defaults (the notebook layer adds IPython's display settings)."""


def settings() -> dict[str, dict[str, Any]]:
    """The settings that change how a cell's output looks, where they differ from their
    defaults: pandas options, matplotlib rcParams, numpy print options and error
    handling, the ``decimal`` context, scikit-learn's display options, the root
    logger, the warnings filters that apply to a whole category of warnings.

    They are inputs of every ``%%step`` cell and ``with step`` block (``@settings``):
    a cell that prints a table after an edited cell set ``display.precision`` runs
    again. A library not imported counts as its defaults, so the order in which a
    replay imports libraries does not matter.
    """
    found: dict[str, dict[str, Any]] = {}
    numpy: Any = sys.modules.get("numpy")
    for name, changed in (
        ("pandas.options", _pandas_changed),
        ("matplotlib.rcParams", _rc_changed),
        ("numpy.printoptions", lambda: _changed_from(_NUMPY_PRINT, numpy.get_printoptions())),
        ("numpy.seterr", lambda: _changed_from(_NUMPY_ERRORS, numpy.geterr())),
        ("decimal.context", _decimal_changed),
        ("sklearn.display", _sklearn_changed),
        ("logging.root", _logging_changed),
        ("warnings.filters", _warnings_changed),
        *SETTINGS_SOURCES.items(),
    ):
        if numpy is None and name.startswith("numpy."):
            continue
        try:
            value = changed()
        except Exception:  # a library's internals moved: not compared
            continue
        if value:
            found[name] = dict(sorted(value.items()))
    return found


def state_digest(name: str) -> str | None:
    """The fingerprint of a registered state now, or of :func:`settings` (None if
    unknown or not applicable)."""
    state = STATES.get(name)
    try:
        if name == SETTINGS:
            value: Any = settings()
        elif state is None:
            return None
        else:
            value = state.get()
    except Exception:
        return None
    return None if value is None else value_digest(value)


def input_states(before: Mapping[str, Any], deltas: Mapping[str, Any]) -> dict[str, str]:
    """The inputs a step's changes imply: ``{"@numpy.random": digest before}``."""
    out = {}
    for name in deltas:
        state = STATES.get(name)
        if state is not None and state.is_input and name in before:
            digest = value_digest(before[name])
            if digest is not None:
                out[INPUT_PREFIX + name] = digest
    return out
