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


def _drawn_states(widget: StatusWidget) -> dict[str, str]:
    """The state each drawn row shows (the text inside its coloured state cell)."""
    import re

    return {key: re.sub("<[^>]+>", "", cells[1]) for key, cells in _shown(widget).items()}


def test_a_gather_shows_each_call_running_and_completing_as_it_happens(
    ip: Any, widget: Any
) -> None:
    import asyncio

    from awaitly_nb import step

    widget.every = 0  # draw at every event, to see each one
    seen: dict[int, dict[str, str]] = {}

    async def fetch(uid: int) -> int:
        seen[uid] = _drawn_states(widget)  # what the widget shows while this call runs
        await asyncio.sleep(0)
        return uid

    asyncio.run(step.map(fetch, range(4), key="user:{}", concurrency=1, progress=False))
    assert seen[0] == {"user:0": "running"}
    assert seen[2] == {"user:0": "complete", "user:1": "complete", "user:2": "running"}
    assert _drawn_states(widget) == {f"user:{i}": "complete" for i in range(4)}


def test_a_burst_of_steps_redraws_rarely_and_the_rest_is_drawn_at_the_end(
    ip: Any, run: Any, widget: Any
) -> None:
    import asyncio

    from awaitly_nb import step

    draws = []
    refresh = widget.refresh
    widget.refresh = lambda **kw: draws.append(kw) or refresh(**kw)
    widget.every = 3600.0
    ip.user_ns["step"] = step
    assert run("for u in range(30):\n    step(lambda: u, key=f'n:{u}')").error is None
    assert len(draws) <= 2  # one at the first event, one when the cell ended
    assert _drawn_states(widget) == {f"n:{u}": "complete" for u in range(30)}

    widget.every = 0.05  # in an event loop, what is left is drawn soon after

    async def burst() -> None:
        async def answer(u: int) -> int:
            return u

        await step.map(answer, range(30, 40), key="n:{}", progress=False)
        await asyncio.sleep(0.5)

    asyncio.run(burst())
    assert _drawn_states(widget) == {f"n:{u}": "complete" for u in range(40)}


def test_many_steps_show_those_needing_attention_and_the_latest_then_a_count(
    ip: Any, widget: Any
) -> None:
    from awaitly_nb import step

    widget.max_rows = 5
    for u in range(12):
        step(lambda u=u: u, key=f"n:{u}")
    with pytest.raises(ZeroDivisionError):
        step(lambda: 1 / 0, key="broken")
    widget.refresh()
    drawn = _drawn_states(widget)
    assert len(drawn) == 5 and drawn["broken"] == "failed"
    assert "n:11" in drawn and "n:0" not in drawn  # the latest saved
    assert "8 more steps not shown" in widget._more.value
