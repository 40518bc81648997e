"""Real-kernel tier: nbclient runs a notebook, a new kernel runs it again.

The second kernel must show the same outputs (stdout, the DataFrame's HTML,
the figure's PNG), hold the same variables, and never run the bodies again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbformat.v4 import new_code_cell, new_notebook

pytestmark = pytest.mark.timeout(300)

CELLS = [
    """%load_ext awaitly_nb
%matplotlib inline
import os, random
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from awaitly_nb import step

def ran(name):
    with open(os.environ["RUN_LOG"], "a") as log:
        log.write(name + "\\n")""",
    """%%step key=data:1
ran("data")
values = np.random.default_rng().random(5)  # different in every real run
token = random.random()
print("token", token)
df = pd.DataFrame({"g": list("aabba"), "v": values})
df.groupby("g").v.sum().to_frame()""",
    """%%step key=plot:1
ran("plot")
fig, ax = plt.subplots()
ax.plot(values, color="red")""",
    """with step("block:1"):
    ran("block")
    doubled = [t * 2 for t in values]
    print("doubled", doubled[0])""",
    """def expensive():
    ran("call")
    return random.random()

answer = step(expensive, key="call:1")""",
    """print(json.dumps({"token": token, "values": values.tolist(), "doubled": doubled,
                  "answer": answer, "df": df.to_dict()}))""".replace(
        "print(", "import json\nprint(", 1
    ),
]


def _execute(nb_path: Path, store: Path, log: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(nb_path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(nb_path.parent)}},
    )
    client.execute(env={**os.environ, "AWAITLY_NB_DIR": str(store), "RUN_LOG": str(log)})
    return nb


def _run_twice(path: Path, cells: list[str]) -> tuple[nbformat.NotebookNode, ...]:
    """Write ``cells`` as a notebook and run it twice, a new kernel each time, one store."""
    nb = new_notebook(cells=[new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nbformat.write(nb, path)
    store, log = path.parent / "store", path.parent / "runs.log"
    return _execute(path, store, log), _execute(path, store, log)


def _visible(cell: nbformat.NotebookNode) -> list[dict[str, object]]:
    """A cell's outputs without awaitly_nb's own notes, in a comparable form."""
    shown = []
    for out in cell.outputs:
        if "awaitly_nb" in out.get("metadata", {}):
            continue
        if out.output_type == "stream":
            shown.append({"stream": out.name, "text": out.text})
        else:
            shown.append({"type": out.output_type, "data": dict(out.data)})
    return shown


def _notes(cell: nbformat.NotebookNode) -> list[str]:
    return [
        out.data["text/plain"] for out in cell.outputs if "awaitly_nb" in out.get("metadata", {})
    ]


@pytest.fixture
def notebook(tmp_path: Path) -> Path:
    path = tmp_path / "analysis.ipynb"
    nb = new_notebook(cells=[new_code_cell(c) for c in CELLS])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nbformat.write(nb, path)
    return path


def test_restart_replays_outputs_and_variables_without_rerunning(
    notebook: Path, tmp_path: Path
) -> None:
    store, log = tmp_path / "store", tmp_path / "runs.log"
    first = _execute(notebook, store, log)
    assert log.read_text().split() == ["data", "plot", "block", "call"]

    second = _execute(notebook, store, log)
    # No body ran in the second kernel.
    assert log.read_text().split() == ["data", "plot", "block", "call"]

    data1, data2 = first.cells[1], second.cells[1]
    assert _visible(data1) == _visible(data2)
    kinds = [o.get("type", o.get("stream")) for o in _visible(data2)]
    assert kinds == ["stdout", "execute_result"]
    assert "text/html" in _visible(data2)[1]["data"]  # type: ignore[operator]
    # The restored last expression is a real execute_result with its own Out[] number.
    result = next(o for o in data2.outputs if o.output_type == "execute_result")
    assert result.execution_count == 2
    assert any("restored 'data:1'" in n for n in _notes(data2))

    plot1, plot2 = _visible(first.cells[2]), _visible(second.cells[2])
    pngs = [o["data"]["image/png"] for o in plot2 if o.get("type") == "display_data"]  # type: ignore[index]
    assert len(pngs) == 1 and pngs == [
        o["data"]["image/png"]
        for o in plot1
        if o.get("type") == "display_data"  # type: ignore[index]
    ]

    assert _visible(first.cells[3]) == _visible(second.cells[3])
    assert _visible(first.cells[3])[0]["text"].startswith("doubled")  # type: ignore[union-attr]

    # Same variables in both kernels: random values prove nothing was recomputed.
    dump1 = json.loads(first.cells[5].outputs[0].text)
    dump2 = json.loads(second.cells[5].outputs[0].text)
    assert dump1 == dump2


def test_failing_step_stops_the_notebook_and_saves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "fails.ipynb"
    cells = [
        CELLS[0],
        '%%step key=flaky\nran("flaky")\nvalue = 1\nif not os.path.exists(os.environ["FIXED"]):\n'
        '    raise RuntimeError("boom")',
        'print("after", value)',
    ]
    nbformat.write(new_notebook(cells=[new_code_cell(c) for c in cells]), path)
    store, log = tmp_path / "store", tmp_path / "runs.log"
    fixed = tmp_path / "fixed"

    def run() -> nbformat.NotebookNode:
        nb = nbformat.read(path, as_version=4)
        env = {"AWAITLY_NB_DIR": str(store), "RUN_LOG": str(log), "FIXED": str(fixed)}
        NotebookClient(nb, timeout=120, kernel_name="python3").execute(env={**os.environ, **env})
        return nb

    with pytest.raises(CellExecutionError, match="boom"):
        run()
    fixed.touch()
    nb = run()  # ran again: the failure was not saved
    assert log.read_text().split() == ["flaky", "flaky"]
    assert nb.cells[2].outputs[0].text == "after 1\n"
    run()  # and now it is restored
    assert log.read_text().split() == ["flaky", "flaky"]


def test_the_extension_loads_from_ipython_config(tmp_path: Path) -> None:
    """``c.InteractiveShellApp.extensions = ["awaitly_nb"]``: no %load_ext in the notebook."""
    profile = tmp_path / "ipython" / "profile_default"
    profile.mkdir(parents=True)
    (profile / "ipython_kernel_config.py").write_text(
        'c.InteractiveShellApp.extensions = ["awaitly_nb"]\n'
    )
    path = tmp_path / "configured.ipynb"
    cells = ["%%step key=configured\nvalue = 41 + 1\nprint('ran', value)", "print(value)"]
    nbformat.write(new_notebook(cells=[new_code_cell(c) for c in cells]), path)
    env = {
        **os.environ,
        "IPYTHONDIR": str(tmp_path / "ipython"),
        "AWAITLY_NB_DIR": str(tmp_path / "store"),
    }
    runs = []
    for _ in range(2):
        nb = nbformat.read(path, as_version=4)
        NotebookClient(nb, timeout=120, kernel_name="python3").execute(env=env)
        runs.append(nb)
    assert runs[0].cells[0].outputs[0].text == "ran 42\n"
    assert any("restored 'configured'" in n for n in _notes(runs[1].cells[0]))
    assert runs[1].cells[1].outputs[0].text == "42\n"


def test_a_failing_step_cells_traceback_names_its_own_cell_and_line(tmp_path: Path) -> None:
    import re

    cells = [
        "%load_ext awaitly_nb",
        "%%step key=a\ny = 1\n1/0",
        "%%step key=b\nimport asyncio\nawait asyncio.sleep(0)\n1/0",
    ]
    nb = new_notebook(cells=[new_code_cell(c) for c in cells])
    client = NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True)
    client.execute(env={**os.environ, "AWAITLY_NB_DIR": str(tmp_path / "store")})
    labels = []
    for cell in nb.cells[1:]:
        (error,) = [o for o in cell.outputs if o.output_type == "error"]
        text = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(error.traceback))
        labels.append(re.findall(r"Cell In\[(\d+)\], line (\d+)", text))
    assert labels == [[("2", "1"), ("2", "2")], [("3", "1"), ("3", "3")]]


def test_a_shared_blob_moving_shows_one_note_that_ends_done(tmp_path: Path) -> None:
    """A big blob's upload and download show as an awaitly_nb note updated in place
    (its last text says what moved), and the step's own outputs are as a plain run's."""
    shared = (tmp_path / "shared").as_uri()
    cells = [
        "%load_ext awaitly_nb\n"
        "import awaitly_nb, awaitly_nb.progress\n"
        "awaitly_nb.progress.PROGRESS_MIN_BYTES = 1024  # 'big' here: over 1 KB\n"
        f"awaitly_nb.configure(store={shared!r}, workflow='team')",
        "%%step key=big\nimport numpy as np\narr = np.arange(400_000.0)\nprint('sum', arr.sum())",
    ]
    path = tmp_path / "team.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell(c) for c in cells]), path)
    env_key = {"AWAITLY_NB_KEY": "team-key"}
    runs = []
    for who in ("alice", "bob"):  # bob: a new kernel and an empty local cache
        os.environ.update(env_key)
        try:
            runs.append(_execute(path, tmp_path / who, tmp_path / "log"))
        finally:
            os.environ.pop("AWAITLY_NB_KEY")
    first, second = (nb.cells[1] for nb in runs)
    assert (
        _visible(first) == _visible(second) == [{"stream": "stdout", "text": "sum 79999800000.0\n"}]
    )
    (upload,) = [n for n in _notes(first) if "upload" in n]
    (download,) = [n for n in _notes(second) if "download" in n]
    assert upload.startswith("[awaitly_nb] upload ") and upload.endswith("done")
    assert download.startswith("[awaitly_nb] download ") and download.endswith("done")
    assert "3.1 MB" in download


def test_a_cache_warning_in_a_notebook_is_its_message_alone(tmp_path: Path) -> None:
    cells = [
        "%load_ext awaitly_nb",
        "%%step key=lock\nimport threading\nlock = threading.Lock()\nprint('made')",
        "import warnings\nwarnings.warn('plain', UserWarning)",
    ]
    path = tmp_path / "warn.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell(c) for c in cells]), path)
    nb = _execute(path, tmp_path / "store", tmp_path / "log")
    stderr = "".join(o.text for o in nb.cells[1].outputs if o.get("name") == "stderr")
    assert stderr.startswith("CacheWarning: ") and "lock" in stderr
    assert "run_cell_magic" not in stderr  # not the cell's source, as the source line
    other = "".join(o.text for o in nb.cells[2].outputs if o.get("name") == "stderr")
    assert "UserWarning: plain" in other and "warnings.warn(" in other  # others as before


def test_a_replay_sends_stdout_and_stderr_in_the_order_the_run_did(tmp_path: Path) -> None:
    # Jupyter sends each stream in batches (stdout first at the cell's end), so this
    # fast cell shows its print before its warning, though it warned first.
    cells = [
        "%load_ext awaitly_nb",
        "%%step key=mixed\nimport sys, warnings\nwarnings.warn('careful')\nprint('after')\n"
        "sys.stderr.write('to stderr\\n')\nprint('last')",
    ]
    first, second = _run_twice(tmp_path / "mixed.ipynb", cells)
    assert any("restored 'mixed'" in n for n in _notes(second.cells[1]))
    assert [o["stream"] for o in _visible(first.cells[1])] == ["stdout", "stderr"]
    assert _visible(second.cells[1]) == _visible(first.cells[1])


def test_a_replay_sends_a_stream_the_step_flushed_when_it_did(tmp_path: Path) -> None:
    # A progress bar writes to stderr and flushes: Jupyter sends it at once, before
    # the print that follows, and the rest of stderr at the cell's end.
    cells = [
        "%load_ext awaitly_nb",
        "%%step key=bar\nimport sys\nsys.stderr.write('bar 100%')\nsys.stderr.flush()\n"
        "sys.stderr.write('\\n')\nprint('20')",
    ]
    first, second = _run_twice(tmp_path / "bar.ipynb", cells)
    assert any("restored 'bar'" in n for n in _notes(second.cells[1]))
    assert [o["stream"] for o in _visible(first.cells[1])] == ["stderr", "stdout", "stderr"]
    assert _visible(second.cells[1]) == _visible(first.cells[1])


def test_a_step_drawing_on_axes_a_plain_cell_made_replays_in_a_new_kernel(
    tmp_path: Path,
) -> None:
    # An Axes pickles differently in every process: compared by value, this step
    # would run again after every restart; it counts by the plain cell that made it.
    cells = [
        "%load_ext awaitly_nb",
        "import matplotlib.pyplot as plt\nfig, ax = plt.subplots()",
        "%%step key=draw\nax.plot([1, 2, 3])\nlines = len(ax.lines)\nprint(lines)",
    ]
    first, second = _run_twice(tmp_path / "axes.ipynb", cells)
    assert any("restored 'draw'" in n for n in _notes(second.cells[2])), _notes(second.cells[2])
    assert _visible(second.cells[2]) == _visible(first.cells[2])


def test_a_replay_shows_what_the_step_wrote_to_a_stream_held_since_before_it(
    tmp_path: Path,
) -> None:
    cells = [
        "%load_ext awaitly_nb",
        "import logging, sys\nlogging.basicConfig(level=logging.INFO)\nOUT = sys.stdout",
        "%%step key=held\nlogging.getLogger('nb').info('loaded %d rows', 10)\n"
        "print('via the held stream', file=OUT)",
    ]
    first, second = _run_twice(tmp_path / "held.ipynb", cells)
    assert any("restored 'held'" in n for n in _notes(second.cells[2]))
    shown = _visible(first.cells[2])
    assert {"stream": "stderr", "text": "INFO:nb:loaded 10 rows\n"} in shown
    assert {"stream": "stdout", "text": "via the held stream\n"} in shown
    assert _visible(second.cells[2]) == shown


def test_a_plain_cell_plotting_after_a_restored_pyplot_import_shows_its_figure(
    tmp_path: Path,
) -> None:
    cells = [
        "%load_ext awaitly_nb",
        "%%step key=imp\nimport matplotlib.pyplot as plt",
        "plt.figure(figsize=(2, 2), dpi=30)\nplt.plot([1, 2])\nprint('plotted')",
    ]
    first, second = _run_twice(tmp_path / "figs.ipynb", cells)
    assert any("restored 'imp'" in n for n in _notes(second.cells[1]))
    for run in (first, second):  # the inline backend shows it at the cell's end, as in a run
        shown = _visible(run.cells[2])
        assert any("image/png" in o.get("data", {}) for o in shown), shown


def test_an_inline_figure_format_configured_before_pyplot_loads_is_a_setting(
    tmp_path: Path,
) -> None:
    def run(fmt: str) -> nbformat.NotebookNode:
        cells = [
            "%load_ext awaitly_nb",
            f"%config InlineBackend.figure_format = '{fmt}'",
            "%%step key=plot\nimport matplotlib.pyplot as plt\nplt.figure(figsize=(2, 2))\n"
            "plt.plot([1, 2])\nplt.show()",
        ]
        nb = new_notebook(cells=[new_code_cell(c) for c in cells])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
        path = tmp_path / "fmt.ipynb"
        nbformat.write(nb, path)
        return _execute(path, tmp_path / "store", tmp_path / "runs.log")

    def formats(nb: nbformat.NotebookNode) -> list[str]:
        return [k for o in _visible(nb.cells[2]) for k in o.get("data", {}) if k != "text/plain"]

    assert formats(run("png")) == ["image/png"]
    edited = run("svg")
    assert any("settings made before it changed" in n for n in _notes(edited.cells[2]))
    assert formats(edited) == ["image/svg+xml"]
