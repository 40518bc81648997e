"""The status widget: which steps are complete, live, with a forget button per step.

``%steps`` (or ``awaitly_nb.status_widget()``) shows it in a notebook. It
follows the session's events, so it updates while later cells run without
being displayed again. Its text form (for front ends without widgets) is the
table of :func:`~awaitly_nb.notebook.status_table.status_text`.
"""

from __future__ import annotations

import asyncio
import html
import time
import weakref
from typing import Any

import ipywidgets as widgets

from awaitly_nb.config import Session, get_session
from awaitly_nb.core.events import Event
from awaitly_nb.core.tracker import StepStatus
from awaitly_nb.notebook.shell import current_shell
from awaitly_nb.notebook.status_table import COLUMNS, row_cells, status_summary, status_text
from awaitly_nb.storage.manifest import StepManifest

__all__ = ["StatusWidget"]

_COLORS = {
    "complete": "#2e7d32",
    "restored": "#1565c0",
    "running": "#ef6c00",
    "stale": "#8d6e63",
    "failed": "#c62828",
    "not run yet": "#757575",
}
_WIDTHS = ("22%", "10%", "15%", "9%", "9%", "9%", "18%")
_SHOWN: dict[int, StatusWidget] = {}


def _cell(content: str, width: str) -> widgets.HTML:
    return widgets.HTML(content, layout=widgets.Layout(width=width, overflow="hidden"))


class StatusWidget(widgets.VBox):  # type: ignore[misc]
    """Steps of the current workflow and their state, kept up to date from events.

    Columns: key, state (complete, running, restored, stale, failed, not run
    yet), when it was saved, how long the original run took, how long the
    restore took, size on disk and the variables; a forget button per step and
    a summary line (N of M complete, time saved by replays this session,
    store size).

    While events pour in (a gather of many steps) it redraws at most every
    :attr:`every` seconds; what is left is drawn by the event loop soon after
    (``await`` cells) or when the cell ends.
    """

    every = 0.25
    """Seconds between redraws while events arrive."""
    max_rows = 40
    """Rows shown at most (a gather of 1,000 steps is summed up, not listed)."""

    def __init__(self, session: Session | None = None) -> None:
        self.session = session or get_session()
        self._summary = widgets.HTML()
        header = [_cell(f"<b>{name}</b>", w) for name, w in zip(COLUMNS, _WIDTHS, strict=True)]
        self._pool: list[tuple[widgets.HBox, list[widgets.HTML], widgets.Button]] = []
        self._keys: list[str] = []
        """The key each pooled row shows (rows are reused: making widgets is slow)."""
        self._body = widgets.VBox()
        self._more = widgets.HTML()
        super().__init__(
            [self._summary, widgets.HBox([*header, _cell("", "8%")]), self._body, self._more]
        )
        self.add_class("awaitly-nb-status")
        # A weak reference: a widget nobody holds must not be kept alive by the session.
        ref = weakref.ref(self)

        def on_event(event: Event | None = None) -> None:
            widget = ref()
            if widget is None:
                return
            if event is None:  # a forget, a clear or an import: the user is waiting
                widget.refresh()
            else:  # only a save changes the store: re-read it then
                widget._changed(reread=event.type == "step_complete")

        self._listener = on_event
        self._manifests: list[StepManifest] = []
        self._disk = 0
        self._drawn = 0.0
        self._pending = self._stale = False
        self._timer: asyncio.TimerHandle | None = None
        self.engine = self.session.engine
        self.engine.listeners.append(on_event)
        self.engine.on_change.append(on_event)
        self._shell = current_shell()
        if self._shell is not None:
            self._shell.events.register("post_run_cell", self._after_cell)
        self.refresh()

    def _changed(self, *, reread: bool) -> None:
        self._pending = True
        self._stale = self._stale or reread
        if time.monotonic() - self._drawn >= self.every:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # drawn by the next event, or when the cell ends
            self._timer = loop.call_later(self.every, self.flush)

    def flush(self) -> None:
        """Draw what changed since the last redraw, if anything did."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._pending:
            self.refresh(reread=self._stale)

    def _after_cell(self, result: Any = None) -> None:
        self.flush()

    def _row(self, index: int) -> tuple[widgets.HBox, list[widgets.HTML], widgets.Button]:
        cells = [_cell("", width) for width in _WIDTHS]
        button = widgets.Button(description="forget", layout=widgets.Layout(width="8%"))
        button.on_click(lambda _: self.engine.forget(self._keys[index]))
        box = widgets.HBox([*cells, button])
        box.add_class("awaitly-nb-step")
        return box, cells, button

    def _shown(self, rows: list[StepStatus]) -> list[StepStatus]:
        """At most :attr:`max_rows`: those running, failed or stale, then the latest saved."""
        if len(rows) <= self.max_rows:
            return rows
        urgent = {"running", "failed", "stale"}
        ranked = sorted(
            range(len(rows)),
            key=lambda i: (rows[i].state not in urgent, -(rows[i].saved_at or 0.0), i),
        )
        return [rows[i] for i in sorted(ranked[: self.max_rows])]

    def refresh(self, *, reread: bool = True) -> None:
        """Redraw what changed; ``reread`` the store's manifests and size first."""
        self._pending = self._stale = False
        self._drawn = time.monotonic()
        if reread:
            self._manifests = self.session.store.manifests(self.session.workflow_id())
            self._disk = self.session.store.disk_usage()
        rows = self.engine.status(self._manifests)
        summary = html.escape(status_summary(self.session, rows, self._disk))
        self._summary.value = f"<b>awaitly_nb</b> · {summary}"
        shown = self._shown(rows)
        while len(self._pool) < len(shown):
            self._pool.append(self._row(len(self._pool)))
            self._keys.append("")
        for index, row in enumerate(shown):
            _, cells, button = self._pool[index]
            if self._keys[index] != row.key:
                self._keys[index] = row.key
                button.tooltip = f"forget {row.key}: it runs again next time"
            for i, (cell, value) in enumerate(zip(cells, row_cells(row), strict=True)):
                text = html.escape(value)
                if i == 1:
                    color = _COLORS.get(row.state, "inherit")
                    why = f"ran again: {row.why}" if row.why else ""
                    title = html.escape(row.error or why)
                    text = f'<b style="color:{color}" title="{title}">{text}</b>'
                if cell.value != text:
                    cell.value = text
        children = tuple(box for box, _, _ in self._pool[: len(shown)])
        if self._body.children != children:
            self._body.children = children
        hidden = len(rows) - len(shown)
        more = (
            f"<i>{hidden} more step{'s' if hidden != 1 else ''} not shown "
            "(running, failed and latest first); <code>%steps list</code> shows every step</i>"
            if hidden
            else ""
        )
        if self._more.value != more:
            self._more.value = more

    def rows(self) -> list[StepStatus]:
        """The steps as shown."""
        return self.engine.status(self._manifests)

    @classmethod
    def for_session(cls, session: Session | None = None) -> StatusWidget:
        """The session's widget: one per session, shown again by every ``%steps``.

        ipywidgets keeps every widget alive until it is closed, so making a new
        one per ``%steps`` would pile up listeners; one widget can be displayed
        in several places instead.
        """
        session = session or get_session()
        widget = _SHOWN.get(id(session))
        if widget is None or widget.session is not session or widget.comm is None:
            widget = _SHOWN[id(session)] = cls(session)
        else:
            widget.refresh()
        return widget

    def close(self) -> None:
        """Stop following events and close the widget and its rows."""
        for callbacks in (self.engine.listeners, self.engine.on_change):
            if self._listener in callbacks:
                callbacks.remove(self._listener)
        if self._timer is not None:
            self._timer.cancel()
        if self._shell is not None and self._after_cell in self._shell.events.callbacks.get(
            "post_run_cell", []
        ):
            self._shell.events.unregister("post_run_cell", self._after_cell)
        for box, _, _ in self._pool:
            for child in box.children:
                child.close()
            box.close()
        self._more.close()
        if _SHOWN.get(id(self.session)) is self:
            del _SHOWN[id(self.session)]
        super().close()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        if isinstance(bundle, dict):
            bundle["text/plain"] = status_text(self.session)
        return bundle
