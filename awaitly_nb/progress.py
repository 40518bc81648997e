"""Progress bars over bytes moved: bundles exported or imported, shared blobs
uploaded or downloaded. tqdm draws them, only for transfers big enough to wait on.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from awaitly_nb.formatting import NOTE_METADATA, format_size, note_data

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

    A ``transient`` bar (a blob moving while a step saves or restores) is removed
    when done; in a notebook it is an awaitly_nb note updated in place, which ends
    saying what moved and how fast (a widget would leave a stalled "0%" in the
    saved notebook's text).

    >>> with progress_bar(10, "copy") as update:
    ...     update is None  # 10 bytes: no bar
    True
    """
    if show is False or (show is None and total < PROGRESS_MIN_BYTES):
        yield None
        return
    if transient and _in_a_kernel():
        with _note_bar(total, what) as update:
            yield update
        return
    from tqdm import tqdm

    desc = f"[awaitly_nb] {what}" if transient else what
    with tqdm(
        total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, leave=not transient
    ) as bar:
        yield bar.update


def _in_a_kernel() -> bool:
    """Whether this runs in a Jupyter kernel (which shows displays, not stderr bars)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and getattr(shell, "kernel", None) is not None


@contextmanager
def _note_bar(total: int, what: str) -> Iterator[Progress]:
    from IPython.display import display

    start = last = time.monotonic()
    done = 0
    note, mb, meta = note_data, format_size, NOTE_METADATA
    handle = display(  # type: ignore[no-untyped-call]
        note(f"{what}: 0 of {mb(total)}"), raw=True, display_id=True, metadata=meta
    )

    def update(n: int) -> None:
        nonlocal done, last
        done += n
        now = time.monotonic()
        if now - last >= 0.25 and handle is not None:
            last = now
            share = 100 * done // max(total, 1)
            handle.update(
                note(f"{what}: {mb(done)} of {mb(total)} ({share}%)"), raw=True, metadata=meta
            )

    try:
        yield update
    finally:
        if handle is not None:
            took = time.monotonic() - start
            ended = "done" if done >= total else "stopped"
            handle.update(
                note(f"{what}: {mb(done)} in {took:.1f} s, {ended}"), raw=True, metadata=meta
            )
