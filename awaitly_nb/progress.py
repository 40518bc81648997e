"""Progress bars over bytes moved: bundles exported or imported, shared blobs
uploaded or downloaded. tqdm draws them, only for transfers big enough to wait on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["PROGRESS_MIN_BYTES", "Progress", "progress_bar"]

PROGRESS_MIN_BYTES = 64 * 1024 * 1024
"""Transfers of at least this many bytes show a progress bar (unless told otherwise)."""

Progress = Callable[[int], Any]
"""Called with each number of bytes moved."""


@contextmanager
def progress_bar(
    total: int, what: str, show: bool | None = None, *, transient: bool = False
) -> Iterator[Progress | None]:
    """A tqdm bar over ``total`` bytes: shown if ``show``, or if None and ``total`` is big.

    A ``transient`` bar (a download while a step restores) is drawn as a widget in
    a notebook and removed when done; others are text on stderr and stay.

    >>> with progress_bar(10, "copy") as update:
    ...     update is None  # 10 bytes: no bar
    True
    """
    if show is False or (show is None and total < PROGRESS_MIN_BYTES):
        yield None
        return
    if transient:
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm
    with tqdm(
        total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=what, leave=not transient
    ) as bar:
        yield bar.update
