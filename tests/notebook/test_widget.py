"""The status widget's model: rows and states as events arrive, forget, summary, fallbacks."""

from __future__ import annotations

import sys
from typing import Any

import ipywidgets
import pytest

from awaitly_nb.config import get_session
from awaitly_nb.notebook.widget import StatusWidget


def _states(widget: StatusWidget) -> dict[str, str]:
    return {row.key: row.state for row in widget.rows()}


def _shown(widget: StatusWidget) -> dict[str, list[str]]:
    """What the widget displays: the text of each row's cells, by key."""
    shown = {}
    for box in widget._body.children:
        cells = [child.value for child in box.children if isinstance(child, ipywidgets.HTML)]
        key = cells[0]
        shown[key] = cells
    return shown


@pytest.fixture
def widget(ip: Any) -> Any:
    made = StatusWidget()
    ip.user_ns["status"] = made
    yield made
    made.close()


def test_rows_follow_events_while_cells_run(ip: Any, run: Any, marks: Any, widget: Any) -> None:
    # Inside the body the widget (displayed once, earlier) already says "running".
    cell = (
        "%%step key=load\nseen = dict((r.key, r.state) for r in status.rows())\nmark()\nrows = [1]"
    )
    assert run(cell).result.success
    assert ip.user_ns["seen"] == {"load": "running"}
    assert _states(widget) == {"load": "complete"}
    assert "complete" in _shown(widget)["load"][1]

    assert run("%%step key=fit\nmodel = 2\nmark()").result.success
    assert _states(widget) == {"load": "complete", "fit": "complete"}
    assert list(_shown(widget)) == ["load", "fit"]
    assert "2 of 2 complete" in widget._summary.value


def test_restore_shows_restored_with_replay_time_and_time_saved(
    ip: Any, run: Any, marks: Any, widget: Any
) -> None:
    cell = "%%step key=slow\nimport time\ntime.sleep(0.05)\nvalue = 1\nmark()"
    assert run(cell).result.success
    assert run(cell).result.success  # restored
    assert marks.count() == 1
    (row,) = widget.rows()
    assert row.state == "restored"
    assert row.replay_ms is not None and row.duration_ms is not None
    assert row.duration_ms >= 50 and row.replay_ms < row.duration_ms
    assert row.variables == ("time", "value")
    assert get_session().engine.tracker.time_saved_ms > 0
    assert "1 restored" in widget._summary.value
    cells = _shown(widget)["slow"]
    assert "restored" in cells[1] and cells[3] and cells[4] and "time, value" in cells[6]


def test_failed_and_stale_states(ip: Any, run: Any, marks: Any, widget: Any) -> None:
    result = run("%%step key=bad\nmark()\nraise ValueError('nope')").result
    assert not result.success
    assert _states(widget) == {"bad": "failed"}
    assert widget.rows()[0].error == "ValueError: nope"

    assert run("%%step key=code\nx = 1").result.success
    seen: list[str] = []
    get_session().engine.listeners.append(
        lambda e: seen.append(_states(widget)["code"]) if e.type == "step_cache_miss" else None
    )
    try:
        assert run("%%step key=code\nx = 2").result.success
    finally:
        get_session().engine.listeners.pop()
    assert seen == ["stale"]  # shown as stale when found out of date, then it ran again
    assert _states(widget)["code"] == "complete"


def test_forget_button_forgets_the_step(ip: Any, run: Any, marks: Any, widget: Any) -> None:
    cell = "%%step key=a\nv = 1\nmark()"
    assert run(cell).result.success
    box = widget._body.children[0]
    button = box.children[-1]
    assert isinstance(button, ipywidgets.Button) and button.description == "forget"

    button.click()

    assert _states(widget) == {"a": "not run yet"}
    assert "0 of 1 complete" in widget._summary.value
    assert run(cell).result.success  # runs again: it was forgotten
    assert marks.count() == 2
    assert _states(widget) == {"a": "complete"}


def test_steps_forget_in_another_cell_updates_a_shown_widget(
    ip: Any, run: Any, widget: Any
) -> None:
    assert run("%%step key=a\nv = 1").result.success
    assert run("%steps forget a").result.success
    assert _states(widget) == {"a": "not run yet"}


def test_summary_counts_and_store_size(ip: Any, run: Any, widget: Any) -> None:
    assert run("%%step key=a\nv = list(range(1000))").result.success
    assert run("%%step key=b\nraise KeyError(1)").result.success is False
    summary = widget._summary.value
    assert "1 of 2 complete" in summary
    assert "KB" in summary or "MB" in summary  # the store's size on disk


def test_closed_widget_stops_following_events(ip: Any, run: Any) -> None:
    made = StatusWidget()
    listeners = len(get_session().engine.listeners)
    made.close()
    assert len(get_session().engine.listeners) == listeners - 1
    assert run("%%step key=later\nv = 1").result.success  # no error from a closed widget


def test_text_fallback_in_the_mime_bundle(ip: Any, run: Any, widget: Any) -> None:
    assert run("%%step key=a\nv = 1").result.success
    bundle = widget._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    text = bundle["text/plain"]
    assert "a" in text.splitlines()[-1] and "complete" in text


def test_steps_in_a_terminal_prints_the_table(ip: Any, run: Any) -> None:
    assert getattr(ip, "kernel", None) is None  # the in-process shell is a terminal-like one
    assert run("%%step key=a\nv = 1").result.success
    shown = run("%steps")
    assert shown.result.success
    assert shown.result.result is None
    assert "complete" in shown.stdout and "status" in shown.stdout


def test_steps_in_a_kernel_returns_the_widget(
    ip: Any, run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ip, "kernel", object(), raising=False)
    shown = run("%steps")
    assert shown.result.success, shown.error
    assert isinstance(shown.result.result, StatusWidget)
    shown.result.result.close()


def test_steps_without_ipywidgets_explains_and_shows_the_table(
    ip: Any, run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ip, "kernel", object(), raising=False)
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import fails
    monkeypatch.delitem(sys.modules, "awaitly_nb.notebook.widget")
    assert run("%%step key=a\nv = 1").result.success
    shown = run("%steps")
    assert shown.result.success, shown.error
    assert "needs ipywidgets" in shown.stdout
    assert "complete" in shown.stdout


def test_steps_shows_one_widget_per_session_however_often_it_runs(
    ip: Any, run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ip, "kernel", object(), raising=False)
    listeners = len(get_session().engine.listeners)
    first = run("%steps").result.result
    second = run("%steps").result.result
    try:
        assert first is second
        assert len(get_session().engine.listeners) == listeners + 1
    finally:
        first.close()
    assert len(get_session().engine.listeners) == listeners
    third = run("%steps").result.result  # a closed widget is replaced
    assert third is not first
    third.close()


def test_a_hit_does_not_reread_the_store(
    ip: Any, run: Any, widget: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cell = "%%step key=a\nv = 1"
    assert run(cell).result.success
    reads: list[int] = []
    store = get_session().store
    real = store.manifests
    monkeypatch.setattr(store, "manifests", lambda *a: reads.append(1) or real(*a))
    assert run(cell).result.success  # restored: rows change, the store does not
    assert reads == []
    assert _states(widget) == {"a": "restored"}
