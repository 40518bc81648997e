"""The status widget: which steps are complete, live, with a forget button per step.

``%steps`` (or ``awaitly_nb.status_widget()``) shows it in a notebook. It
follows the session's events, so it updates while later cells run without
being displayed again. Its text form (for front ends without widgets) is the
table of :func:`~awaitly_nb.notebook.status_table.status_text`.
"""

from __future__ import annotations

import html
import weakref
from typing import Any

import ipywidgets as widgets

from awaitly_nb.config import Session, get_session
from awaitly_nb.core.events import Event
from awaitly_nb.core.tracker import StepStatus
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
    """

    def __init__(self, session: Session | None = None) -> None:
        self.session = session or get_session()
        self._summary = widgets.HTML()
        header = [_cell(f"<b>{name}</b>", w) for name, w in zip(COLUMNS, _WIDTHS, strict=True)]
        self._rows: dict[str, tuple[widgets.HBox, list[widgets.HTML]]] = {}
        self._body = widgets.VBox()
        super().__init__([self._summary, widgets.HBox([*header, _cell("", "8%")]), self._body])
        self.add_class("awaitly-nb-status")
        # A weak reference: a widget nobody holds must not be kept alive by the session.
        ref = weakref.ref(self)

        def on_event(event: Event | None = None) -> None:
            widget = ref()
            if widget is not None:
                # Only a save, a forget or an import changes the store: re-read it then.
                widget.refresh(reread=event is None or event.type == "step_complete")

        self._listener = on_event
        self._manifests: list[StepManifest] = []
        self._disk = 0
        self.engine = self.session.engine
        self.engine.listeners.append(on_event)
        self.engine.on_change.append(on_event)
        self.refresh()

    def _row(self, key: str) -> tuple[widgets.HBox, list[widgets.HTML]]:
        cells = [_cell("", width) for width in _WIDTHS]
        button = widgets.Button(
            description="forget",
            tooltip=f"forget {key}: it runs again next time",
            layout=widgets.Layout(width="8%"),
        )
        button.on_click(lambda _: self.engine.forget(key))
        box = widgets.HBox([*cells, button])
        box.add_class("awaitly-nb-step")
        return box, cells

    def refresh(self, *, reread: bool = True) -> None:
        """Redraw what changed; ``reread`` the store's manifests and size first."""
        if reread:
            self._manifests = self.session.store.manifests(self.session.workflow_id())
            self._disk = self.session.store.disk_usage()
        rows = self.engine.status(self._manifests)
        summary = html.escape(status_summary(self.session, rows, self._disk))
        self._summary.value = f"<b>awaitly_nb</b> · {summary}"
        children = []
        for row in rows:
            if row.key not in self._rows:
                self._rows[row.key] = self._row(row.key)
            box, cells = self._rows[row.key]
            for i, (cell, value) in enumerate(zip(cells, row_cells(row), strict=True)):
                text = html.escape(value)
                if i == 1:
                    color = _COLORS.get(row.state, "inherit")
                    why = f"ran again: {row.why}" if row.why else ""
                    title = html.escape(row.error or why)
                    text = f'<b style="color:{color}" title="{title}">{text}</b>'
                if cell.value != text:
                    cell.value = text
            children.append(box)
        if self._body.children != tuple(children):
            self._body.children = tuple(children)

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
        for box, _ in self._rows.values():
            for child in box.children:
                child.close()
            box.close()
        if _SHOWN.get(id(self.session)) is self:
            del _SHOWN[id(self.session)]
        super().close()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)
        if isinstance(bundle, dict):
            bundle["text/plain"] = status_text(self.session)
        return bundle
