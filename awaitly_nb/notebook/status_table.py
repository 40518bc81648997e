"""The status view as text: the table ``%steps`` prints where widgets cannot render."""

from __future__ import annotations

from awaitly_nb.config import Session, get_session
from awaitly_nb.core.tracker import StepStatus
from awaitly_nb.formatting import format_duration, format_size, format_time, text_table

__all__ = ["COLUMNS", "row_cells", "status_summary", "status_text"]

COLUMNS = ("key", "status", "saved at", "took", "replay", "size", "variables")


def row_cells(row: StepStatus) -> tuple[str, ...]:
    """One row of the table as text, in :data:`COLUMNS` order."""
    took = format_duration(row.duration_ms) if row.duration_ms is not None else ""
    replay = format_duration(row.replay_ms) if row.replay_ms is not None else ""
    state: str = row.state
    if row.why:
        why = row.why if len(row.why) <= 60 else row.why[:59] + "…"
        state = f"{state} (ran again: {why})"
    key = row.key if row.variants <= 1 else f"{row.key} ({row.variants} variants)"
    return (
        key,
        state,
        format_time(row.saved_at),
        took,
        replay,
        format_size(row.size),
        ", ".join(row.variables),
    )


def status_summary(session: Session, rows: list[StepStatus], disk: int | None = None) -> str:
    """``"2 of 3 complete; replays saved 4.2 s this session; store 12.0 MB"``."""
    tracker = session.engine.tracker
    done = sum(row.state in ("complete", "restored") for row in rows)
    saved = format_duration(tracker.time_saved_ms)
    size = format_size(session.store.disk_usage() if disk is None else disk)
    return (
        f"{done} of {len(rows)} complete; replays saved {saved} this session "
        f"({tracker.restores} restored); store {size} on disk"
    )


def status_text(session: Session | None = None) -> str:
    """The status view as a text table (for terminals and front ends without widgets)."""
    session = session or get_session()
    rows = session.engine.status()
    head = f"workflow {session.workflow_id()!r}: {status_summary(session, rows)}"
    if not rows:
        return f"{head}\nno saved steps yet"
    return head + "\n" + text_table([COLUMNS, *(row_cells(row) for row in rows)])
