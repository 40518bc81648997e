"""A miss: the body runs with live output, and what it shows is recorded for the replay."""

from __future__ import annotations

from typing import Any

import pytest


def test_stdout_and_stderr_are_shown_while_the_cell_runs(
    ip: Any, run: Any, marks: Any, restart: Any
) -> None:
    cell = (
        "%%step key=io\nimport sys\nprint('to stdout')\nprint('to stderr', file=sys.stderr)\nmark()"
    )
    first = run(cell)

    assert first.result.success, first.error
    assert first.stdout == "to stdout\n"
    assert first.stderr == "to stderr\n"

    restart()
    again = run(cell)
    assert marks.count() == 1
    assert again.stdout == "to stdout\n"
    assert again.stderr == "to stderr\n"


def test_output_streams_live_not_at_the_end(ip: Any, transcript: Any) -> None:
    seen: list[list[tuple[Any, ...]]] = []
    with transcript() as t:
        ip.user_ns["probe"] = lambda: seen.append(list(t.events))
        result = ip.run_cell(
            "%%step key=live\n"
            "from IPython.display import HTML, display\n"
            "print('before')\n"
            "display(HTML('<i>shown</i>'))\n"
            "probe()\n"
        )

    assert result.success, result.error_in_exec
    (during,) = seen
    assert ("stdout", "before\n") in during
    assert any(e[0] == "display" and e[1].get("text/html") == "<i>shown</i>" for e in during)


def test_display_is_recorded_and_replayed_with_the_same_bundle(
    ip: Any, run: Any, marks: Any, restart: Any
) -> None:
    cell = (
        "%%step key=html\n"
        "from IPython.display import HTML, display\n"
        "display(HTML('<b>bold</b>'))\n"
        "mark()"
    )
    first = run(cell)
    assert first.result.success, first.error
    assert len(first.displays) == 1
    assert first.displays[0]["text/html"] == "<b>bold</b>"

    restart()
    again = run(cell)

    assert marks.count() == 1
    assert again.displays == first.displays


@pytest.fixture
def inline_backend(ip: Any) -> Any:
    import matplotlib
    import matplotlib.pyplot as plt

    backend = matplotlib.get_backend()
    ip.run_line_magic("matplotlib", "inline")
    yield plt
    plt.close("all")
    plt.switch_backend(backend)


def test_inline_figure_drawn_at_the_end_of_the_cell_is_replayed(
    ip: Any, run: Any, marks: Any, restart: Any, inline_backend: Any
) -> None:
    cell = "%%step key=plot\nimport matplotlib.pyplot as plt\nplt.plot([1, 2])\nmark()"
    first = run(cell)

    assert first.result.success, first.error
    images = [d for d in first.displays if "image/png" in d]
    assert len(images) == 1  # shown once (not again by the post-execute hook)

    restart()
    again = run(cell)

    assert marks.count() == 1
    replayed = [d for d in again.displays if "image/png" in d]
    assert len(replayed) == 1
    assert replayed[0]["image/png"] == images[0]["image/png"]


def test_dataframe_as_last_expression_is_replayed_as_html(
    ip: Any, run: Any, marks: Any, restart: Any, execute_results: Any
) -> None:
    cell = "%%step key=df\nimport pandas as pd\ndf = pd.DataFrame({'a': [1, 2]})\nmark()\ndf"
    first = run(cell, store_history=True)
    assert first.result.success, first.error
    (shown_first,) = execute_results
    assert "<table" in shown_first["text/html"]

    restart()
    again = run(cell, store_history=True)

    assert marks.count() == 1
    shown_again = execute_results[1]
    assert shown_again["text/html"] == shown_first["text/html"]
    assert again.result.result.equals(ip.user_ns["df"])


def test_the_last_value_is_rendered_once_and_replayed_as_it_was_shown(
    ip: Any, run: Any, restart: Any, execute_results: Any
) -> None:
    ip.user_ns["renders"] = renders = []
    setup = (
        "class Shown:\n    def _repr_html_(self):\n        renders.append(1)\n"
        "        return f'<b>render {len(renders)}</b>'"
    )
    cell = "%%step key=shown\nvalue = Shown()\nvalue"
    assert run(setup).result.success
    assert run(cell, store_history=True).result.success
    assert len(renders) == 1  # as a plain run renders it: once
    assert execute_results[0]["text/html"] == "<b>render 1</b>"

    restart()
    ip.user_ns["renders"] = renders = []  # as in a new kernel
    assert run(setup).result.success
    assert run(cell, store_history=True).result.success
    assert renders == []  # restored: not rendered again
    assert execute_results[1]["text/html"] == "<b>render 1</b>"  # what the run showed
