"""Which of a step's inputs share objects: part of what the step reads.

Two inputs with equal values behave differently when they are one object: a
step that changes ``df2`` in place changes ``df`` too when a cell wrote
``df2 = df``, and not when it wrote ``df2 = df.copy()``. Digests compare values,
so they cannot tell the two apart; a replay would show the other one's result
and, worse, bind both names to one object again. :func:`shared_objects` describes
the sharing among the inputs, and between them and the other variables, as a
short text the engine compares like any input (``(shared objects) changed``).

What is followed: lists, dicts and tuples, the attributes of objects of classes
defined in the notebook, and the memory of numpy arrays (a view shares its
base's). Other objects (a DataFrame, a model) count by identity only: their
insides are the library's business and may hold caches that differ between runs.
Sets are not followed (their order is not the same in every process).
"""

from __future__ import annotations

import itertools
import sys
import types
from collections.abc import Iterable, Iterator, Mapping

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["ATOMS", "SHARED", "memory_of", "shared_objects", "sharing_with"]

SHARED = "(shared objects)"
"""The input name under which a step's sharing is compared."""

ATOMS = (
    type(None),
    bool,
    int,
    float,
    complex,
    str,
    bytes,
    type,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
)
"""Values that are not data a step could share or change in place: scalars, strings,
and definitions (followed by their code, not their objects)."""
_ATOMS = (*ATOMS, range, frozenset)  # nor are ranges and frozensets, for sharing
_FOLLOWED_MODULES = {"__main__", "types"}  # the notebook's classes, SimpleNamespace
_NODES = 10_000
"""Objects followed per step at most (a big list of records is followed in part)."""
_PER_VARIABLE = 1_000
_PER_HOLDER = 200
"""Objects followed in another variable, looking for an input's (``rows = [df]``)."""
_HOLDER_MAX = 1_000
"""Another variable's list or dict longer than this is not searched for an input's
objects (a table of records); an input itself is followed within the budget."""


def _big(obj: Any) -> bool:
    return isinstance(obj, (list, tuple, dict)) and len(obj) > _HOLDER_MAX


def _key(path: str) -> str:
    return path if len(path) <= 60 else path[:57] + "..."


def _identity(obj: Any, numpy: Any) -> tuple[int, bool]:
    """The id that tells whether two values are one object: for a numpy array, the
    memory it views (a restored array views the buffer it was read into)."""
    if numpy is None or not isinstance(obj, numpy.ndarray):
        return id(obj), False
    base = obj
    while isinstance(base.base, numpy.ndarray):
        base = base.base
    return id(base.base if base.base is not None else base), True


def memory_of(obj: Any) -> int | None:
    """For a numpy array, the id of the memory it views (through views, its base's);
    None for any other value.

    >>> import numpy as np
    >>> data = np.arange(10.0)
    >>> memory_of(data[:7]) == memory_of(data[7:]) == memory_of(data), memory_of([1])
    (True, None)
    """
    numpy = sys.modules.get("numpy")
    key, array = _identity(obj, numpy)
    return key if array else None


def _walk(
    value: Any, root: str, where: dict[int, list[str]], budget: list[int], only: set[int] | None
) -> None:
    """Record where each shared-able object under ``value`` is: ``where[id] += [path]``.

    With ``only``, record just the objects in it (another variable holding an input's).
    """
    numpy = sys.modules.get("numpy")
    todo: list[tuple[Any, str]] = [(value, root)]
    seen: set[int] = set()
    most = _PER_VARIABLE if only is None else _PER_HOLDER
    left = min(budget[0], most)
    while todo and left > 0:
        obj, path = todo.pop()
        if isinstance(obj, _ATOMS):
            continue
        left -= 1
        key, array = _identity(obj, numpy)
        if array:
            path = f"{path} (memory)"
        if (only is None or key in only) and not isinstance(obj, tuple):  # tuples: immutable
            where.setdefault(key, []).append(_key(path))
        if key in seen:  # met again: recorded above, followed once
            continue
        seen.add(key)
        room = left - len(todo)  # what is followed stays within the budget
        if room <= 0 or (only is not None and _big(obj)):
            continue  # another variable's big list is data, not a holder of inputs
        if isinstance(obj, (tuple, list)):
            items: Any = enumerate(obj[:room])
            labels = "[{}]"
        elif isinstance(obj, dict):
            items = itertools.islice(obj.items(), room)
            labels = "[{!r}]"
        elif type(obj).__module__ in _FOLLOWED_MODULES and isinstance(
            getattr(obj, "__dict__", None), dict
        ):
            items = itertools.islice(vars(obj).items(), room)
            labels = ".{}"
        else:
            continue
        children = [(k, item) for k, item in items if not isinstance(item, _ATOMS)][:room]
        todo.extend(
            (item, path + (labels.format(k) if isinstance(k, (str, int)) else "[#]"))
            for k, item in reversed(children)
        )
    budget[0] -= min(budget[0], most) - left


def shared_objects(
    inputs: Mapping[str, Any], namespace: Mapping[str, Any], skip: Any = None
) -> str | None:
    """The objects a step's ``inputs`` share, with each other or with other variables
    of ``namespace``, as text (``"df & df2"``); None when they share none.

    ``skip(name)`` is true for variables that are not the user's (IPython's ``Out``).

    >>> grid = [[0, 0]] * 2
    >>> shared_objects({"grid": grid}, {"grid": grid})
    'grid[0] & grid[1]'
    >>> a = [1]; b = a; c = [1]
    >>> shared_objects({"b": b, "c": c}, {"a": a, "b": b, "c": c})
    'a & b'
    >>> shared_objects({"c": c}, {"a": a, "b": b, "c": c}) is None
    True
    """
    where = _where(inputs)
    if not where:
        return None
    others = [
        n
        for n in sorted(namespace)
        if n not in inputs and not n.startswith("__") and (skip is None or not skip(n))
    ]
    for _name, held in _holding(set(where), namespace, others):
        for key, paths in held.items():
            where[key].extend(paths)
    groups = sorted(" & ".join(sorted(paths)) for paths in where.values() if len(paths) > 1)
    return "; ".join(groups) or None


def sharing_with(
    values: Mapping[str, Any], namespace: Mapping[str, Any], names: Iterable[str]
) -> set[str]:
    """Those of ``names`` (variables of ``namespace``) holding one of the objects
    ``values`` hold, followed as :func:`shared_objects` follows them: ``parts`` when
    a step made ``sel = [parts["p3"]]`` (a replay binding ``sel`` must bind ``parts``
    too, or ``sel[0] += 1`` would no longer change ``parts["p3"]``).

    >>> p3 = [3]; ns = {"parts": {"p3": p3, "p7": [7]}, "other": {"x": [3]}}
    >>> sorted(sharing_with({"sel": [p3]}, ns, ["parts", "other"]))
    ['parts']
    """
    mine = set(_where(values))
    if not mine:
        return set()
    present = sorted(n for n in names if n in namespace)
    return {name for name, _held in _holding(mine, namespace, present)}


def _where(values: Mapping[str, Any]) -> dict[int, list[str]]:
    """Where each object that ``values`` hold is, as :func:`_walk` follows them."""
    where: dict[int, list[str]] = {}
    budget = [_NODES]
    for name in sorted(values):
        _walk(values[name], name, where, budget, None)
    return where


def _holding(
    mine: set[int], namespace: Mapping[str, Any], names: Iterable[str]
) -> Iterator[tuple[str, dict[int, list[str]]]]:
    """Each of ``names`` (variables of ``namespace``) that is or holds one of the
    objects ``mine``, with where it holds them; small holders only, within a budget."""
    numpy = sys.modules.get("numpy")
    budget = [_NODES // 10]
    for name in names:
        value = namespace[name]
        if isinstance(value, _ATOMS):
            continue
        key, array = _identity(value, numpy)
        if key in mine:
            yield name, {key: [f"{name} (memory)" if array else name]}
        elif isinstance(value, (list, dict, tuple)) or type(value).__module__ in _FOLLOWED_MODULES:
            held: dict[int, list[str]] = {}
            _walk(value, name, held, budget, mine)
            if held:
                yield name, held
