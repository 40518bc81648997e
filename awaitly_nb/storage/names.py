"""What makes a step key (or a workflow name) usable in every store."""

from __future__ import annotations

from awaitly_nb.errors import InvalidKeyError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["check_name"]


def check_name(value: Any, what: str = "step key") -> str:
    """Return ``value`` if it is a non-empty string of valid text without NUL.

    Keys are never used as paths, so ``/``, ``..`` and long keys are fine.

    >>> check_name("posts/../1")
    'posts/../1'
    >>> check_name("")
    Traceback (most recent call last):
    ...
    awaitly_nb.errors.InvalidKeyError: step key must not be empty
    """
    if not isinstance(value, str):
        raise InvalidKeyError(
            f"{what} must be a str, got {type(value).__name__} {value!r}; "
            f'build one with an f-string, e.g. key=f"user:{{user_id}}"'
        )
    if not value:
        raise InvalidKeyError(f"{what} must not be empty")
    if "\x00" in value:
        raise InvalidKeyError(f"{what} must not contain NUL characters: {value!r}")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidKeyError(f"{what} is not valid text (lone surrogate): {value!r}") from None
    return value
