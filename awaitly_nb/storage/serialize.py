"""How objects become bytes: cloudpickle (protocol 5) and the versions that wrote them.

Every saved value records the Python, cloudpickle and awaitly_nb versions
(:func:`versions`), so a value that cannot be loaded any more is reported
with the versions that wrote it. :mod:`awaitly_nb.storage.codec` builds the
stored records on top of this.
"""

from __future__ import annotations

import pickle
import platform
from collections.abc import Callable
from typing import Any

import cloudpickle

from awaitly_nb._version import __version__
from awaitly_nb.errors import SerializationError, StateFormatError

__all__ = ["dumps_value", "loads_value", "versions"]


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
