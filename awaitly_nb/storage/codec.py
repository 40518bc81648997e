"""How objects become bytes: cloudpickle (protocol 5), big buffers out of band.

The codec does no I/O. :func:`encode` turns a value into a small pickle
stream plus the large buffers inside it (numpy and pandas data, Arrow
buffers), left where they are in memory; :mod:`awaitly_nb.storage.values`
writes them to blob files and reads them back. Every saved value records the
Python, cloudpickle and awaitly_nb versions (:func:`versions`), so a value
that cannot be loaded any more is reported with the versions that wrote it.
"""

from __future__ import annotations

import pickle
import platform
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cloudpickle

from awaitly_nb._version import __version__
from awaitly_nb.errors import SerializationError, StateFormatError

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
    """The versions recorded with every saved value.

    >>> sorted(versions())
    ['awaitly_nb', 'cloudpickle', 'python']
    """
    return {
        "python": platform.python_version(),
        "cloudpickle": str(cloudpickle.__version__),
        "awaitly_nb": __version__,
    }


_VERSIONS = versions()


def dumps_value(
    value: Any, buffer_callback: Callable[[pickle.PickleBuffer], Any] | None = None
) -> bytes:
    """Pickle ``value`` with cloudpickle (protocol 5).

    ``buffer_callback`` is as in :func:`pickle.dumps`: it may take buffers out of band.

    Raises:
        SerializationError: the value (or something inside it) cannot be pickled.
    """
    try:
        return bytes(cloudpickle.dumps(value, protocol=5, buffer_callback=buffer_callback))
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
            theirs = ", ".join(f"{k} {written_by.get(k, '?')}" for k in _VERSIONS)
            ours = ", ".join(f"{k} {v}" for k, v in _VERSIONS.items())
            if theirs != ours:
                where = f" (written by {theirs}; this is {ours})"
        raise StateFormatError(
            f"cannot unpickle saved value{where}: {type(exc).__name__}: {exc}"
        ) from exc


@dataclass(frozen=True)
class Encoded:
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
