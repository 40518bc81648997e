"""``class X(NamedTuple)`` at run time without importing :mod:`typing`.

Importing ``typing`` costs a script about 5 ms, an eighth of what a lookup may
cost to import (issue 15), and nothing a lookup runs needs it. Modules on the
lookup path import ``typing`` only for the type checker::

    TYPE_CHECKING = False
    if TYPE_CHECKING:
        from typing import Any, NamedTuple
    else:
        from awaitly_nb._namedtuple import NamedTuple

mypy sees :class:`typing.NamedTuple`; at run time the class is
:func:`collections.namedtuple`'s, with the class body's defaults, methods and
docstring, as ``typing.NamedTuple`` makes it.

>>> class Point(NamedTuple):
...     '''A point.'''
...     x: int
...     y: int = 0
...     def norm1(self) -> int:
...         return abs(self.x) + abs(self.y)
>>> Point(3), Point(3, -4).norm1(), Point._fields, Point.__doc__
(Point(x=3, y=0), 7, ('x', 'y'), 'A point.')
"""

from __future__ import annotations

import collections

__all__ = ["NamedTuple"]

_CLASS_ONLY = {"__annotations__", "__module__", "__qualname__", "__slots__", "__dict__"}
"""What the class statement puts in a body that is not the tuple's to keep."""


class _NamedTupleMeta(type):
    def __new__(
        mcs, name: str, bases: tuple[type, ...], namespace: dict[str, object]
    ) -> _NamedTupleMeta:
        if not bases:  # NamedTuple itself
            return super().__new__(mcs, name, bases, namespace)
        fields = list(namespace.get("__annotations__", {}))  # type: ignore[call-overload]
        defaults = [namespace[f] for f in fields if f in namespace]
        if any(f in namespace for f in fields[: len(fields) - len(defaults)]):
            raise TypeError(f"{name}: a field without a default follows one with a default")
        module = str(namespace["__module__"])
        made = collections.namedtuple(name, fields, defaults=defaults, module=module)  # type: ignore[misc]
        for attr, value in namespace.items():
            if attr not in fields and attr not in _CLASS_ONLY:
                setattr(made, attr, value)
        made.__qualname__ = str(namespace.get("__qualname__", name))
        return made  # type: ignore[return-value]


class NamedTuple(metaclass=_NamedTupleMeta):
    """Base of a named tuple class (see the module's docstring)."""
