"""The status view as text: the table ``%steps`` prints where widgets cannot render."""

from __future__ import annotations

import time
from collections.abc import Sequence

from awaitly_nb.core.session import Session, get_session
from awaitly_nb.core.status import StepStatus
from awaitly_nb.notebook.runner import format_duration

__all__ = ["COLUMNS", "format_size", "row_cells", "status_summary", "status_text", "text_table"]

COLUMNS = ("key", "status", "saved at", "took", "replay", "size", "variables")


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
    return f"{n:.1f} TB"


def row_cells(row: StepStatus) -> tuple[str, ...]:
    saved = time.strftime("%Y-%m-%d %H:%M", time.localtime(row.saved_at)) if row.saved_at else ""
    took = format_duration(row.duration_ms) if row.duration_ms is not None else ""
    replay = format_duration(row.replay_ms) if row.replay_ms is not None else ""
    return (
        row.key,
        row.state,
        saved,
        took,
        replay,
        format_size(row.size),
        ", ".join(row.variables),
    )


def status_summary(session: Session, rows: list[StepStatus], disk: int | None = None) -> str:
    """``"2 of 3 complete; replays saved 4.2 s this session; store 12.0 MB"``."""
    done = sum(row.state in ("complete", "restored") for row in rows)
    saved = format_duration(session.tracker.time_saved_ms)
    size = format_size(session.store.disk_usage() if disk is None else disk)
    return (
        f"{done} of {len(rows)} complete; replays saved {saved} this session "
        f"({session.tracker.restores} restored); store {size} on disk"
    )


def status_text(session: Session | None = None) -> str:
    """The status view as a text table (for terminals and front ends without widgets)."""
    session = session or get_session()
    rows = session.status()
    head = f"workflow {session.workflow_id()!r}: {status_summary(session, rows)}"
    if not rows:
        return f"{head}\nno saved steps yet"
    return head + "\n" + text_table([COLUMNS, *(row_cells(row) for row in rows)])


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
