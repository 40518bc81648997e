"""Step keys: what makes a key valid."""

from __future__ import annotations

from typing import Any

from awaitly_nb.errors import InvalidKeyError

__all__ = ["validate_key"]


def validate_key(key: Any) -> str:
    """Return ``key`` if it is usable as a step key, else raise :class:`InvalidKeyError`.

    A key is a non-empty string without NUL characters.

    >>> validate_key("posts:1")
    'posts:1'
    >>> validate_key("")
    Traceback (most recent call last):
    ...
    awaitly_nb.errors.InvalidKeyError: step key must not be empty
    """
    if not isinstance(key, str):
        raise InvalidKeyError(
            f"step key must be a str, got {type(key).__name__} {key!r}; "
            f'build one with an f-string, e.g. key=f"user:{{user_id}}"'
        )
    if not key:
        raise InvalidKeyError("step key must not be empty")
    if "\x00" in key:
        raise InvalidKeyError(f"step key must not contain NUL characters: {key!r}")
    return key
