"""Step keys: what makes a key valid."""

from __future__ import annotations

from typing import Any

from awaitly_nb.storage.names import check_name

__all__ = ["validate_key"]


def validate_key(key: Any) -> str:
    """Return ``key`` if it is usable as a step key, else raise :class:`InvalidKeyError`.

    A key is a non-empty string of valid text without NUL characters. It is
    never used as a file name, so ``/``, ``..`` and very long keys are fine.

    >>> validate_key("posts:1")
    'posts:1'
    >>> validate_key("")
    Traceback (most recent call last):
    ...
    awaitly_nb.errors.InvalidKeyError: step key must not be empty
    """
    return check_name(key)
