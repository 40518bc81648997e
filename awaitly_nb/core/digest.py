"""Fingerprints of values: what a step reads, compared by value.

:func:`value_digest` turns a value into a short hex digest that is equal for
equal values and stable across processes and hash seeds (sets are ordered by
their members' digests, never by ``hash()``):

- ``None``, numbers, strings and bytes by value; tuples, lists and dicts by
  their items (a dict in insertion order, as it prints); sets order-free;
- numpy arrays by dtype, shape and their buffer (xxh3, hashed in place);
- modules by name and version: using ``np`` never makes a step stale;
- functions and classes defined in the notebook (``__main__``) by their code,
  defaults and, transitively, the notebook globals they use (cycles are cut);
  functions and classes from modules by where they live and its version;
- anything else by its pickle stream (protocol 5, big buffers hashed in place);
  pandas and Arrow objects take this path, which covers values, index,
  columns, dtypes, categories and attrs.

A value that cannot be pickled (a lock, a generator, a connection) has no
digest (None): the engine falls back to lineage and says it was not checked.
:func:`summary` is the short text a note shows for a value (``5``, ``'a'``,
``DataFrame 1000x4``).
"""

from __future__ import annotations

import io
import pickle
import re
import sys
import types
from collections.abc import Callable, Mapping

import xxhash

from awaitly_nb.core.fingerprint import (
    code_object_fingerprint,
    function_fingerprint,
    global_names,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar

__all__ = ["VALUE", "namespace_free", "summary", "value_digest"]

VALUE = "v:"
"""The prefix of a step input fingerprinted by value (others are lineage stamps)."""

_SCALARS = (type(None), bool, int, float, complex, str, bytes, bytearray)
_MAX_DEPTH = 200


_BY_VALUE = (type, types.FunctionType)


class _Unhashable(Exception):
    """The value (or something inside it) cannot be fingerprinted."""


def _module_version(name: str) -> str:
    module = sys.modules.get(name.split(".")[0])
    return str(getattr(module, "__version__", "")) if module is not None else ""


ModuleVersion = Callable[[str], str]
"""Tells what version of a module (by name) is loaded; the default reads ``__version__``.
The engine passes one that also fingerprints the source of the user's own modules: their
version holds that fingerprint after an :data:`OWN` mark."""

OWN = ":"
"""In a module's version, what marks one of the user's own modules (``"<version>:<source>"``)."""


class _Hasher:
    def __init__(
        self, namespace: Mapping[str, Any] | None, module_version: ModuleVersion | None
    ) -> None:
        self.h = xxhash.xxh3_128()
        self.namespace = namespace
        self.module_version = module_version or _module_version
        self.active: dict[int, int] = {}  # id -> position, for cycles
        self.depth = 0
        self.types: dict[type, str] = {}  # a class's digest, once per value
        self.defs: dict[int, str] = {}  # notebook definitions inside pickled values
        self.owns: dict[Any, bool] = {}  # module name -> one of the user's own modules
        self.shared: frozenset[int] = frozenset()  # ids of objects digested as "shared"

    def tag(self, text: str) -> None:
        self.h.update(text.encode("utf-8", "surrogatepass") + b"\x00")

    def feed(self, value: Any) -> None:
        self.depth += 1
        try:
            if self.depth > _MAX_DEPTH:
                raise _Unhashable("too deeply nested")
            self._feed(value)
        finally:
            self.depth -= 1

    def _feed(self, value: Any) -> None:
        kind = type(value)
        if kind in _SCALARS:
            self.tag(f"{kind.__name__}:{value!r}" if kind not in (bytes, bytearray) else "b")
            if kind in (bytes, bytearray):
                self.tag(str(len(value)))
                self.h.update(value)
            return
        key = id(value)
        if key in self.shared:
            self.tag("shared")
            return
        if key in self.active:  # a cycle: name the position it points back to
            self.tag(f"cycle:{self.active[key]}")
            return
        self.active[key] = len(self.active)
        try:
            self._container(value, kind)
        finally:
            del self.active[key]

    def _container(self, value: Any, kind: type) -> None:
        if kind in (tuple, list):
            self.tag(f"{kind.__name__}:{len(value)}")
            for item in value:
                self.feed(item)
        elif kind is dict:
            self.tag(f"dict:{len(value)}")
            for k, v in value.items():
                self.feed(k)
                self.feed(v)
        elif kind in (set, frozenset):
            self.tag(f"{kind.__name__}:{len(value)}")
            digests = (value_digest(v, self.namespace, self.module_version) for v in value)
            for digest in sorted(d or "?" for d in digests):
                self.tag(digest)
        elif isinstance(value, types.ModuleType):
            self.tag(f"module:{value.__name__}@{self.module_version(value.__name__)}")
        elif isinstance(value, (types.FunctionType, type)):
            self._definition(value)
        elif isinstance(value, types.MethodType):
            self.tag("method")
            self.feed(value.__func__)
            self.feed(value.__self__)
        elif isinstance(value, (types.BuiltinFunctionType, types.BuiltinMethodType)):
            self.tag(f"builtin:{getattr(value, '__module__', '')}.{value.__qualname__}")
            bound = getattr(value, "__self__", None)
            if bound is not None and not isinstance(bound, types.ModuleType):
                self.feed(bound)  # ``"{:.2f}".format``: the string it formats with
        elif _wraps_function(value):
            # functools.lru_cache / cache and other wrappers that are not functions:
            # the function they call counts by its code (not their memo).
            self.tag(f"wraps:{kind.__module__}.{kind.__qualname__}")
            self.feed(value.__wrapped__)
        elif _is_numpy_array(value) and value.dtype.hasobject is False:
            self._array(value)
        elif _is_artist(value):
            # A figure or axes pickles differently in every process (its callbacks,
            # transforms' caches): compared by value it would differ after each restart.
            raise _Unhashable("a matplotlib artist")
        else:
            self._pickled(value)

    def _array(self, value: Any) -> None:
        import numpy as np

        fortran = value.flags.f_contiguous and not value.flags.c_contiguous
        self.tag(f"ndarray:{value.dtype.str}:{value.shape}" + (":F" if fortran else ""))
        data = value if value.flags.c_contiguous else np.ascontiguousarray(value)
        self.h.update(memoryview(data).cast("B") if data.size else b"")  # type: ignore[arg-type]

    def _definition(self, value: Any) -> None:
        module = getattr(value, "__module__", None)
        if module != "__main__":
            qualname = getattr(value, "__qualname__", repr(value))
            version = self.module_version(str(module))
            self.tag(f"ref:{module}.{qualname}@{version}")
            if OWN in version and isinstance(value, types.FunctionType):
                # A function of the user's own module: its source is in the version,
                # but not what it reads at run time: a helper it imports from another
                # of the user's modules, a module global a cell set (``helpers.SCALE = 2``).
                # One that cannot be fingerprinted (a lock) counts as "?": the function
                # itself is still compared.
                globals_ = value.__globals__
                for name in sorted(global_names(value.__code__)):
                    if name in globals_:
                        self.tag(f"global:{name}:{self._tolerant(globals_[name])}")
                if value.__dict__:
                    self.tag(f"attributes:{self._tolerant(value.__dict__)}")
            return
        if isinstance(value, type):
            self.tag(f"class:{value.__qualname__}")
            for base in value.__bases__:
                self.feed(base)
            for name, member in sorted(vars(value).items()):
                if name in _NOT_MEMBERS:
                    continue
                self.tag(name)
                target = getattr(member, "__func__", member)
                if isinstance(target, property):
                    parts: tuple[Any, ...] = (target.fget, target.fset, target.fdel)
                elif isinstance(getattr(target, "func", None), types.FunctionType):
                    parts = (target.func,)  # cached_property, partialmethod: their function
                else:
                    parts = (target,)
                for part in parts:
                    self.tag(self._tolerant(part))
            return
        registry = getattr(value, "registry", None)
        if isinstance(registry, Mapping) and callable(getattr(value, "dispatch", None)):
            # functools.singledispatch: its implementations, by type (not its cache).
            self.tag("singledispatch")
            self.feed(dict(registry))
            return
        # By compiled code, not source: comments do not reach it, and a function
        # restored from a step (no source in this kernel) fingerprints as it ran.
        self.tag(f"function:{value.__qualname__}:{function_fingerprint(value) or ''}")
        self.feed(value.__defaults__)
        self.feed(value.__kwdefaults__)
        # A decorator's wrapper (``functools.wraps``): the function it wraps counts in
        # full, the decorator's own state where it can (``np.errstate``'s settings).
        wrapper = "__wrapped__" in value.__dict__
        for cell in value.__closure__ or ():
            try:
                contents = cell.cell_contents
            except ValueError:  # an empty cell
                self.tag("empty-cell")
                continue
            if wrapper and contents is not value.__wrapped__:
                self.tag(f"cell:{self._tolerant(contents)}")
            else:
                self.feed(contents)
        if value.__dict__:  # attributes set on it (``f.k = 4``)
            self.tag(f"attributes:{self._tolerant(value.__dict__)}")
        globals_ = value.__globals__
        if wrapper and globals_.get("__name__") != "__main__":
            return  # a library's wrapper (``np.errstate``'s): its module's globals are not yours
        for name in sorted(global_names(value.__code__)):
            if name in globals_:
                self.tag(f"global:{name}")
                self.feed(globals_[name])

    def _tolerant(self, value: Any) -> str:
        """The digest of a class member, or "?" if it has none (an ABC's cache, a lock)."""
        sub = _Hasher(self.namespace, self.module_version)
        sub.active, sub.depth, sub.shared = self.active, self.depth, self.shared
        try:
            sub.feed(value)
        except _Unhashable:
            return "?"
        return str(sub.h.hexdigest())

    def _by_value(self, value: Any, in_place: Callable[[pickle.PickleBuffer], bool]) -> bytes:
        """cloudpickle's stream, with notebook classes and functions named by their digest
        (cloudpickle would write them with a random per-process id)."""
        import cloudpickle

        hasher = self

        class Pickler(cloudpickle.Pickler):  # type: ignore[misc]
            def persistent_id(self, obj: Any) -> str | None:
                return hasher.main_id(obj)

            def reducer_override(self, obj: Any) -> Any:
                """Without the memo (fast mode), a class or function pickled by value reaches itself
                again through its methods and would recurse to the interpreter's limit:
                a second sighting goes to the memo pass at once instead."""
                reduced = super().reducer_override(obj)
                if self.fast and reduced is not NotImplemented and isinstance(obj, _BY_VALUE):
                    seen: set[int] = self.__dict__.setdefault("by_value", set())
                    if id(obj) in seen:
                        raise _Unhashable("a definition pickled by value inside itself")
                    seen.add(id(obj))
                return reduced

        try:
            return self._stream(
                value, in_place, lambda f, _, cb: Pickler(f, protocol=5, buffer_callback=cb)
            )
        except Exception as exc:
            raise _Unhashable(str(exc)) from exc

    def _stream(
        self, value: Any, in_place: Callable[[Any], bool], make: Callable[..., Any]
    ) -> bytes:
        """Pickle ``value`` without pickle's memo where it can: the memo writes which
        equal objects are the same object (two equal strings, or one), which a restored
        value does not keep, so a fingerprint must not depend on it. Values that
        refer to themselves need the memo."""
        for fast in (True, False):
            out = io.BytesIO()
            pickler = make(out, self, in_place)
            pickler.fast = fast
            try:
                pickler.dump(value)
            except Exception:  # in fast mode, a cycle: RecursionError, or PicklingError
                if fast:
                    continue
                raise
            return out.getvalue()
        raise _Unhashable("cannot be pickled")

    def main_id(self, obj: Any) -> str | None:
        """A notebook class or function inside a pickled value, named by its digest:
        the same whether it is the live definition or one restored from a step. One
        of the user's own modules (``functools.partial(helpers.g, 2)``) is named by
        its digest too, which holds its module's source: pickle names it only.

        Raises:
            _Unhashable: a matplotlib artist inside the value (``axs``, an array of
                axes): it pickles differently in every process.
        """
        if id(obj) in self.shared:
            return "shared"
        if not isinstance(obj, (type, types.FunctionType)):
            if _is_artist(obj):
                raise _Unhashable("a matplotlib artist inside")
            return None
        if obj.__module__ != "__main__" and not self._own(obj.__module__):
            return None
        digest = self.defs.get(id(obj))
        if digest is None:
            digest = self.defs[id(obj)] = self._tolerant(obj)
        return f"main:{digest}"

    def _own(self, module: Any) -> bool:
        own = self.owns.get(module)
        if own is None:
            own = self.owns[module] = OWN in self.module_version(str(module))
        return own

    def _type(self, kind: type) -> None:
        """The class of a pickled object counts: its code if the notebook defines it,
        else where it lives and that module's version (your own modules: their source)."""
        digest = self.types.get(kind)
        if digest is None:
            digest = self.types[kind] = self._tolerant(kind)
        self.tag(f"type:{digest}")

    def _pickled(self, value: Any) -> None:
        buffers: list[pickle.PickleBuffer] = []

        def in_place(buffer: pickle.PickleBuffer) -> bool:
            buffers.append(buffer)
            return False

        self._type(type(value))
        try:
            stream = self._stream(value, in_place, _NamingPickler)
        except Exception:
            buffers.clear()
            stream = self._by_value(value, in_place)
        if _SET_OPCODES.search(stream):  # maybe a set: its order follows the hash seed
            canonical = _canonical_stream(value, self)
            if canonical is not None:
                stream, buffers = canonical
        for buffer in buffers:
            raw = buffer.raw()
            self.tag(f"buffer:{raw.nbytes}")
            self.h.update(raw)
        self.h.update(stream)


_NAMESPACE_BOUND = (
    *_SCALARS,
    tuple,
    list,
    dict,
    set,
    frozenset,
    types.ModuleType,
    types.FunctionType,
    types.MethodType,
    types.BuiltinFunctionType,
    types.BuiltinMethodType,
    type,
)


def namespace_free(value: Any) -> bool:
    """True for a value whose digest depends on its contents alone (not on other globals)
    and is worth remembering: arrays, frames and other objects fingerprinted by pickle.

    >>> namespace_free([1, 2]), namespace_free(len), namespace_free(object())
    (False, False, True)
    """
    return not isinstance(value, _NAMESPACE_BOUND)


_NOT_MEMBERS = frozenset(
    ("__dict__", "__weakref__", "__module__", "__doc__", "__firstlineno__", "__slotnames__")
)
"""Class attributes that are not its definition: ``__slotnames__`` is pickle's cache
(set on a class the first time an instance is pickled), ``__firstlineno__`` moves
when a line is added above the class."""

_SET_OPCODES = re.compile(b"[\x8f\x91]")
"""EMPTY_SET and FROZENSET: a pickle stream without these bytes holds no set."""


class _NamingPickler(pickle.Pickler):
    """pickle, with the notebook's classes and functions named by their digest."""

    def __init__(self, file: Any, hasher: _Hasher, buffer_callback: Any) -> None:
        super().__init__(file, protocol=5, buffer_callback=buffer_callback)
        self.hasher = hasher

    def persistent_id(self, obj: Any) -> str | None:
        return self.hasher.main_id(obj)


class _CanonicalPickler(pickle._Pickler):
    """Pickles sets with their items in digest order: the same stream in every process."""

    dispatch: ClassVar[dict[type, Any]] = dict(pickle._Pickler.dispatch)

    def __init__(self, file: Any, hasher: _Hasher, buffer_callback: Any) -> None:
        super().__init__(file, protocol=5, buffer_callback=buffer_callback)
        self.hasher = hasher

    def _ordered(self, items: Any) -> list[Any]:
        keyed = [
            (value_digest(item, self.hasher.namespace, self.hasher.module_version) or "", item)
            for item in items
        ]
        return [item for _, item in sorted(keyed, key=lambda pair: pair[0])]

    def persistent_id(self, obj: Any) -> str | None:
        return self.hasher.main_id(obj)

    def save_set(self, obj: Any) -> None:
        self.save_reduce(type(obj), (self._ordered(obj),), obj=obj)  # type: ignore[attr-defined]

    dispatch[set] = save_set
    dispatch[frozenset] = save_set


def _canonical_stream(value: Any, hasher: _Hasher) -> tuple[bytes, list[Any]] | None:
    """``value`` pickled with ordered sets (pure-Python pickler: slower, so only when needed)."""
    buffers: list[pickle.PickleBuffer] = []
    out = io.BytesIO()
    try:
        _CanonicalPickler(out, hasher, buffers.append).dump(value)
    except Exception:
        return None
    return out.getvalue(), buffers


def _wraps_function(value: Any) -> bool:
    """A callable that is not a function but calls one it names (``functools.lru_cache``)."""
    try:
        wrapped = value.__dict__.get("__wrapped__") if hasattr(value, "__dict__") else None
    except Exception:  # a strange object's __dict__
        return False
    return isinstance(wrapped, types.FunctionType) and callable(value)


def _is_numpy_array(value: Any) -> bool:
    numpy = sys.modules.get("numpy")
    return numpy is not None and type(value) is numpy.ndarray


def _is_artist(value: Any) -> bool:
    """A matplotlib figure, axes or other artist (matplotlib is not imported for it)."""
    artist = sys.modules.get("matplotlib.artist")
    return artist is not None and isinstance(value, artist.Artist)


def value_digest(
    value: Any,
    namespace: Mapping[str, Any] | None = None,
    module_version: ModuleVersion | None = None,
    *,
    shared: frozenset[int] = frozenset(),
) -> str | None:
    """A digest of ``value`` that is equal for equal values, in any process; None if unknown.

    ``shared``: ids of objects inside ``value`` that count as a placeholder, not by
    their content (what a holder shares with a step's variables).

    >>> a, b = [1], [2]
    >>> value_digest({"ref": a, "tag": 1}, shared=frozenset({id(a)})) == value_digest(
    ...     {"ref": b, "tag": 1}, shared=frozenset({id(b)}))
    True
    >>> value_digest({"a": [1, 2.0]}) == value_digest({"a": [1, 2.0]})
    True
    >>> value_digest({1, 2, 3}) == value_digest({3, 2, 1})
    True
    >>> value_digest(5) == value_digest(6), value_digest(1) == value_digest(True)
    (False, False)
    >>> import threading
    >>> value_digest(threading.Lock()) is None
    True
    """
    hasher = _Hasher(namespace, module_version)
    hasher.shared = shared
    try:
        hasher.feed(value)
    except Exception:  # _Unhashable, RecursionError, or anything a strange object raises
        return None
    return str(hasher.h.hexdigest())


def kind_digest(
    value: Any,
    namespace: Mapping[str, Any] | None = None,
    module_version: ModuleVersion | None = None,
) -> str:
    """What can be told of a value no digest describes: its class (a notebook class by
    its code) and, for a generator or coroutine, the code it runs.

    >>> def count():
    ...     yield 1
    >>> kind_digest(count()) == kind_digest(count()) != kind_digest(iter([]))
    True
    """
    parts = [value_digest(type(value), namespace, module_version) or "?"]
    for attribute in ("gi_code", "cr_code", "ag_code"):
        code = getattr(value, attribute, None)
        if isinstance(code, types.CodeType):
            parts.append(code_object_fingerprint(code))
    return xxhash.xxh3_64_hexdigest(" ".join(parts).encode())


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def summary(value: Any, width: int = 40) -> str:
    """A short description of a value for a note: its repr when short, else its shape.

    >>> summary(5), summary("abc"), summary(list(range(1000))), summary(object())
    ('5', "'abc'", 'list of 1000', 'object object')

    Big containers are described by their length without building their repr.
    """
    shape = getattr(value, "shape", None)
    if isinstance(shape, tuple) and shape and all(isinstance(n, int) for n in shape):
        return f"{type(value).__name__} {'x'.join(str(n) for n in shape)}"
    if isinstance(value, types.FunctionType):
        return f"{value.__qualname__}()"
    if isinstance(value, type):
        return value.__name__
    try:
        size = len(value)
    except Exception:
        size = None
    if size is not None and size > width:  # its repr is longer than the width anyway
        return f"{type(value).__name__} of {size}"
    try:
        text = repr(value)
    except Exception:
        text = ""
    if _ADDRESS.search(text):  # ``<F object at 0x7f...>``: the address tells nothing
        return f"{type(value).__name__} object"
    if text and len(text) <= width and "\n" not in text:
        return text
    try:
        return f"{type(value).__name__} of {len(value)}"
    except Exception:
        return type(value).__name__
