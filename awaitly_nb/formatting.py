"""Text for people: durations, sizes, times and aligned tables (the CLI, ``%steps``, the widget)."""

from __future__ import annotations

import time
from collections.abc import Sequence

__all__ = [
    "NOTE_METADATA",
    "format_duration",
    "format_size",
    "format_time",
    "note_data",
    "text_table",
]

NOTE_METADATA = {"awaitly_nb": {"note": True}}
"""The metadata of every note awaitly_nb displays in a notebook (tools can leave them out)."""


def format_duration(ms: float) -> str:
    """``format_duration(4200)`` is ``'4.2 s'``.

    >>> format_duration(0.4), format_duration(4200), format_duration(95_000)
    ('0.4 ms', '4.2 s', '1 min 35 s')
    """
    if ms < 1000:
        return f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def format_size(n: float | None) -> str:
    """``format_size(1536)`` is ``'1.5 KB'``.

    >>> format_size(None), format_size(512), format_size(3 * 1024**3)
    ('', '512 B', '3.0 GB')
    """
    if n is None:
        return ""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover - the loop returns at GB


def format_time(ts: float | None, *, seconds: bool = False) -> str:
    """A local time such as ``2026-11-29 16:03`` (empty for None or 0)."""
    if not ts:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M", time.localtime(ts))


def note_data(text: str) -> dict[str, str]:
    """A short awaitly_nb note as display data: plain text and small, faint HTML.

    >>> note_data("a < b")["text/plain"]
    '[awaitly_nb] a < b'
    """
    html = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return {
        "text/plain": f"[awaitly_nb] {text}",
        "text/html": f'<div style="font-size:smaller;opacity:0.7">awaitly_nb: {html}</div>',
    }


def text_table(rows: Sequence[Sequence[str]]) -> str:
    """Rows as aligned text columns, the first row a header underlined with dashes.

    >>> print(text_table([("key", "size"), ("a", "1 KB")]))
    key  size
    ---  ----
    a    1 KB
    """
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
