"""How objects become bytes: cloudpickle (protocol 5), big buffers out of band.

The codec does no I/O. :func:`encode` turns a value into a small pickle
stream plus the large buffers inside it (numpy and pandas data, Arrow
buffers), left where they are in memory; :mod:`awaitly_nb.storage.values`
writes them to blob files and reads them back. Every saved value records the
Python, cloudpickle and awaitly_nb versions (:func:`versions`), so a value
that cannot be loaded any more is reported with the versions that wrote it.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import pickle
import sys
import types
from collections.abc import Callable
from contextvars import ContextVar

from awaitly_nb._version import __version__
from awaitly_nb.errors import SerializationError, StateFormatError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NamedTuple
else:
    from awaitly_nb._namedtuple import NamedTuple

__all__ = [
    "INLINE_BUFFER_LIMIT",
    "Encoded",
    "decode",
    "dumps_value",
    "encode",
    "loads_value",
    "versions",
]

INLINE_BUFFER_LIMIT = 64 * 1024
"""Buffers smaller than this stay inside the pickle stream."""


def versions() -> dict[str, str]:
    """The versions recorded with every saved value (read once: cloudpickle is
    imported by the first save, not by a process that only restores).

    >>> sorted(versions())
    ['awaitly_nb', 'cloudpickle', 'python']
    """
    return dict(_versions())


@functools.cache
def _versions() -> tuple[tuple[str, str], ...]:
    import platform

    import cloudpickle

    return (
        ("python", platform.python_version()),
        ("cloudpickle", str(cloudpickle.__version__)),
        ("awaitly_nb", __version__),
    )


MAIN_BY_REFERENCE: ContextVar[Callable[[Any], str | None] | None] = ContextVar(
    "awaitly_nb_main_by_reference", default=None
)
"""While set, classes and functions of the notebook (``__main__``) for which it returns
a name are saved by that name, not by value, and restored as the live definition."""


class _NotDefined(LookupError):
    pass


def main_global(name: str) -> Any:
    """The notebook's definition ``name`` (``Thing`` or ``Outer.Inner``), when restoring.

    Raises:
        LookupError: the notebook does not define it now (the step then runs again).
    """
    namespace = vars(sys.modules["__main__"])
    head, *rest = name.split(".")
    if head not in namespace:
        raise _NotDefined(
            f"{name} is not defined in the notebook now (run the cell that defines it)"
        )
    found = namespace[head]
    for part in rest:
        found = getattr(found, part)
    return found


_LRU_WRAPPER = type(functools.lru_cache(maxsize=1)(len))
_SENTINELS = {
    id(value): (name, value)
    for name in ("MISSING", "_FIELD", "_FIELD_CLASSVAR", "_FIELD_INITVAR", "_HAS_DEFAULT_FACTORY")
    if (value := getattr(dataclasses, name, None)) is not None
}
"""Objects of the dataclasses module that must stay the same objects when pickled."""


@functools.cache
def _pickler() -> type:
    """cloudpickle's Pickler, with the notebook's own definitions saved by name where
    asked (made at the first save: cloudpickle is not imported before)."""
    import cloudpickle

    class _ReferencingPickler(cloudpickle.Pickler):  # type: ignore[misc]
        def __init__(
            self,
            file: Any,
            by_reference: Callable[[Any], str | None] | None,
            buffer_callback: Callable[[pickle.PickleBuffer], Any] | None,
        ) -> None:
            super().__init__(file, protocol=5, buffer_callback=buffer_callback)
            self._by_reference = by_reference
            numpy = sys.modules.get("numpy")
            self._ndarray = numpy.ndarray if numpy is not None else None
            self._roots: set[int] = set()

        def dump(self, obj: Any) -> None:
            if self._ndarray is not None:
                self._roots = _array_roots(obj, self._ndarray)
            super().dump(obj)

        def reducer_override(self, obj: Any) -> Any:
            if type(obj) is self._ndarray and obj.base is not None and self._roots:
                view = _as_view(obj, self._ndarray, self._roots)
                if view is not None:
                    return view
            if self._by_reference is not None and isinstance(
                obj, (type, types.FunctionType, _LRU_WRAPPER)
            ):
                name = self._by_reference(obj)
                if name is not None:
                    return main_global, (name,)
            sentinel = _SENTINELS.get(id(obj))
            if sentinel is not None and sentinel[1] is obj:
                # dataclasses compares these by identity (`f._field_type is _FIELD`): a
                # copy would make fields(), asdict() and replace() see no fields after a
                # restore
                return getattr, (dataclasses, sentinel[0])
            if type(obj) is _LRU_WRAPPER and getattr(obj, "__module__", None) == "__main__":
                # pickle would name it "__main__.f", which a new kernel does not have yet
                return lru_cached, (obj.__wrapped__, obj.cache_parameters())
            return super().reducer_override(obj)

    return _ReferencingPickler


def _root(array: Any, ndarray: Any) -> Any:
    """The array owning the memory ``array`` views (itself when it owns it)."""
    while type(array.base) is ndarray:
        array = array.base
    return array


def _array_roots(value: Any, ndarray: Any, budget: int = 10_000) -> set[int]:
    """Ids of the arrays owning the memory of two or more arrays among ``value``'s
    lists, tuples, dicts and objects' attributes (a step's variables), or owning
    their own and saved: the bases views are saved against, so they stay shared.

    A base that only one small view uses is not saved for it (``head = big[:10]``
    is saved as a copy of ten rows, not with all of ``big``).
    """
    users: dict[int, list[Any]] = {}
    roots: dict[int, Any] = {}
    seen: set[int] = set()
    todo = [value]
    while todo and budget > 0:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        budget -= 1
        if type(obj) is ndarray:
            root = _root(obj, ndarray)
            if root.base is None and root.flags.c_contiguous:
                roots[id(root)] = root
                users.setdefault(id(root), []).append(obj)
        elif isinstance(obj, (list, tuple)):
            todo.extend(obj[:budget])
        elif isinstance(obj, dict):
            todo.extend(list(obj.values())[:budget])
        elif isinstance(getattr(obj, "__dict__", None), dict) and not isinstance(obj, type):
            todo.extend(list(vars(obj).values())[:budget])
    return {
        key
        for key, arrays in users.items()
        if any(a is roots[key] for a in arrays)
        or (len(arrays) > 1 and roots[key].nbytes <= 2 * sum(a.nbytes for a in arrays))
    }


def _as_view(array: Any, ndarray: Any, roots: set[int]) -> Any:
    """A numpy view saved as a view of its base, when the base is saved too: a replay
    keeps them sharing memory, as a run leaves them (``part = whole[:10]``)."""
    root = _root(array, ndarray)
    if root is array or id(root) not in roots or array.dtype.hasobject:
        return None
    offset = array.__array_interface__["data"][0] - root.__array_interface__["data"][0]
    layout = (array.shape, array.strides, array.dtype, array.flags.writeable)
    return array_view, (root, offset, *layout)


def array_view(
    root: Any,
    offset: int,
    shape: tuple[int, ...],
    strides: tuple[int, ...],
    dtype: Any,
    writeable: bool,
) -> Any:
    """The view of ``root`` a step saved (see :func:`_as_view`)."""
    import numpy

    view = numpy.ndarray(shape, dtype, buffer=root, offset=offset, strides=strides)
    if not writeable:
        view.flags.writeable = False
    return view


def lru_cached(function: Callable[..., Any], parameters: dict[str, Any]) -> Any:
    """A notebook function wrapped in ``functools.lru_cache`` again (with an empty cache,
    as a run of its cell would leave it)."""
    return functools.lru_cache(
        maxsize=parameters.get("maxsize"), typed=parameters.get("typed", False)
    )(function)


def dumps_value(
    value: Any, buffer_callback: Callable[[pickle.PickleBuffer], Any] | None = None
) -> bytes:
    """Pickle ``value`` with cloudpickle (protocol 5).

    ``buffer_callback`` is as in :func:`pickle.dumps`: it may take buffers out of band.

    Raises:
        SerializationError: the value (or something inside it) cannot be pickled.
    """
    by_reference = MAIN_BY_REFERENCE.get()
    try:
        out = io.BytesIO()
        _pickler()(out, by_reference, buffer_callback).dump(value)
        return out.getvalue()
    except Exception as exc:  # cloudpickle raises TypeError, PicklingError, AttributeError, ...
        raise SerializationError(
            f"cannot serialise a value of type {type(value).__qualname__}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc


def loads_value(data: Any, written_by: dict[str, Any] | None = None, buffers: Any = None) -> Any:
    """Unpickle bytes made by :func:`dumps_value` (``buffers``: its out-of-band buffers).

    Raises:
        StateFormatError: the bytes cannot be unpickled here; the message names
            the versions that wrote them when ``written_by`` is given.
    """
    try:
        return pickle.loads(data, buffers=buffers)
    except Exception as exc:  # any import or reduce error means "not loadable here"
        where = ""
        if written_by:
            theirs = ", ".join(f"{k} {written_by.get(k, '?')}" for k in versions())
            ours = ", ".join(f"{k} {v}" for k, v in versions().items())
            if theirs != ours:
                where = f" (written by {theirs}; this is {ours})"
        raise StateFormatError(
            f"cannot unpickle saved value{where}: {type(exc).__name__}: {exc}"
        ) from exc


class Encoded(NamedTuple):
    """A value as bytes: the pickle stream and, in order, its out-of-band buffers."""

    stream: bytes
    buffers: list[memoryview]


def encode(value: Any) -> Encoded:
    """Pickle ``value``; buffers of at least ``INLINE_BUFFER_LIMIT`` bytes stay out of band.

    The buffers are views of the value's own memory: nothing big is copied.

    >>> encoded = encode({"a": pickle.PickleBuffer(bytearray(100_000)), "b": 1})
    >>> len(encoded.buffers), encoded.buffers[0].nbytes
    (1, 100000)
    >>> decode(encoded.stream, encoded.buffers)["b"]
    1

    Raises:
        SerializationError: the value cannot be pickled.
    """
    buffers: list[memoryview] = []

    def out_of_band(buffer: pickle.PickleBuffer) -> bool:
        raw = buffer.raw()
        if raw.nbytes < INLINE_BUFFER_LIMIT:
            return True  # in band
        buffers.append(raw)
        return False

    return Encoded(dumps_value(value, buffer_callback=out_of_band), buffers)


def decode(stream: Any, buffers: Any = (), written_by: dict[str, Any] | None = None) -> Any:
    """The value of :func:`encode`'s stream and buffers (any buffer objects, e.g. memory maps).

    Raises:
        StateFormatError: it cannot be unpickled here (the message names the
            versions that wrote it when ``written_by`` is given).
    """
    return loads_value(stream, written_by, list(buffers))
