"""The exceptions and warnings awaitly_nb raises.

Every error derives from :class:`AwaitlyError`, so ``except AwaitlyError``
catches all of them. Damage that can be recovered from (a cache entry written
by another Python, a module that no longer exists) is never an error: it is a
:class:`CacheWarning` and the step runs again.
"""

from __future__ import annotations

import os
import sys
import warnings

__all__ = [
    "AwaitlyError",
    "CacheWarning",
    "InvalidKeyError",
    "SerializationError",
    "StateFormatError",
    "StorageError",
    "TrustError",
    "reason",
    "warn",
]


class AwaitlyError(Exception):
    """Base class of every error raised by awaitly_nb."""


class StateFormatError(AwaitlyError, ValueError):
    """Saved state text or a stored entry is malformed, truncated, damaged or of unknown version."""


class StorageError(AwaitlyError):
    """A store or persistence adapter could not read or write."""


class SerializationError(AwaitlyError, TypeError):
    """A value cannot be serialised (an open socket, a generator, a lock, ...)."""


class InvalidKeyError(AwaitlyError, ValueError):
    """A step key is not a non-empty string without NUL characters."""


class TrustError(AwaitlyError):
    """A bundle is not signed with the team key, and was not explicitly trusted."""


class CacheWarning(UserWarning):
    """A saved entry could not be used; the step is treated as not saved and runs again."""


def reason(exc: BaseException) -> str:
    """An exception as a user reads it: its class and message (some drivers' reprs
    say only ``network:ConnectionError``).

    >>> reason(ConnectionRefusedError(111, "Connection refused"))
    'ConnectionRefusedError: [Errno 111] Connection refused'
    >>> reason(TimeoutError())
    'TimeoutError'
    """
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def warn(message: str, category: type[Warning] = CacheWarning) -> None:
    """Warn, pointing at the user's code: the first caller outside awaitly_nb, IPython,
    ipykernel and asyncio (the notebook cell or script line that ran the step)."""
    prefixes = _internal_prefixes()
    if sys.version_info >= (3, 12):
        warnings.warn(message, category, skip_file_prefixes=prefixes)
        return
    level, frame = 2, sys._getframe(1)
    while frame.f_back is not None and frame.f_code.co_filename.startswith(prefixes):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


def _internal_prefixes() -> tuple[str, ...]:
    """Where awaitly_nb and the machinery between it and the user's code live."""
    prefixes = [os.path.dirname(__file__) + os.sep]
    for name in ("IPython", "ipykernel", "asyncio", "contextlib"):
        path = getattr(sys.modules.get(name), "__file__", None)
        if path:  # a package's folder, or a module's file
            is_package = os.path.basename(path) == "__init__.py"
            prefixes.append(os.path.dirname(path) + os.sep if is_package else path)
    return tuple(prefixes)
