"""The exceptions and warnings awaitly_nb raises.

Every error derives from :class:`AwaitlyError`, so ``except AwaitlyError``
catches all of them. Damage that can be recovered from (a cache entry written
by another Python, a module that no longer exists) is never an error: it is a
:class:`CacheWarning` and the step runs again.
"""

from __future__ import annotations

__all__ = [
    "AwaitlyError",
    "CacheWarning",
    "InvalidKeyError",
    "SerializationError",
    "StateFormatError",
    "StorageError",
    "TrustError",
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
