"""Edit-and-replay in real kernels: after an edit, a replay shows what a plain run shows.

Each scenario runs a notebook (nbclient, a new kernel), edits it (a plain cell,
a parameter, a helper, a comment), runs the edited notebook in another new
kernel on the same store, and compares every visible output with a run of the
edited notebook without awaitly_nb (the ground truth). A run log written by the
step bodies proves which steps ran again and which were restored.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook

pytestmark = pytest.mark.timeout(300)

SETUP = """%load_ext awaitly_nb
import os

def ran(name):
    with open(os.environ["RUN_LOG"], "a") as log:
        log.write(name + "\\n")"""


def plain(cells: list[str]) -> list[str]:
    """The same notebook without awaitly_nb: no extension, no %%step lines."""
    out = []
    for source in cells:
        lines = [
            line
            for line in source.splitlines()
            if not line.startswith("%%step") and line != "%load_ext awaitly_nb"
        ]
        out.append("\n".join(lines))
    return out


def execute(
    cells: list[str], folder: Path, store: Path, log: Path, *, errors: bool = False
) -> tuple[list[list[str]], list[str]]:
    """Run the cells in a new kernel: each cell's visible outputs, and awaitly_nb's notes.

    ``errors``: go on after a cell raises (as Run All does not).
    """
    nb = new_notebook(cells=[new_code_cell(source) for source in cells])
    client = NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(folder)}},
        allow_errors=errors,
    )
    client.execute(env={**os.environ, "AWAITLY_NB_DIR": str(store), "RUN_LOG": str(log)})
    shown, notes = [], []
    for cell in nb.cells:
        outputs = []
        for out in cell.outputs:
            if "awaitly_nb" in out.get("metadata", {}):
                notes.append(out["data"]["text/plain"])
            elif out.output_type == "stream":
                last = outputs[-1] if outputs else ""
                if last.startswith(f"{out.name}: "):  # JupyterLab merges them into one
                    outputs[-1] = last + out.text
                else:
                    outputs.append(f"{out.name}: {out.text}")
            elif out.output_type == "error":
                outputs.append(f"error: {out.ename}: {out.evalue}")
            else:
                data = out.get("data", {})
                image = data.get("image/png")
                shown_image = (
                    f" png {hashlib.sha256(image.encode()).hexdigest()[:12]}" if image else ""
                )
                outputs.append(f"{out.output_type}: {data.get('text/plain')}{shown_image}")
        shown.append(outputs)
    return shown, notes


class Scenario:
    """Run, edit, run again in a new kernel; compare with a plain run of the edited notebook."""

    def __init__(self, tmp_path: Path) -> None:
        self.folder = tmp_path
        self.store = tmp_path / "store"
        self.log = tmp_path / "ran.log"

    def runs(self) -> list[str]:
        return self.log.read_text().split() if self.log.exists() else []

    def play(
        self, before: list[str], after: list[str], on_disk: Callable[[], None] | None = None
    ) -> tuple[list[str], list[str]]:
        """Returns (steps that ran in the second run, the second run's notes).

        ``on_disk`` edits files between the first run and the others.
        """
        first, _ = execute([SETUP, *before], self.folder, self.store, self.log)
        assert not any(o.startswith("error") for cell in first for o in cell), first
        if on_disk is not None:
            on_disk()
        truth, _ = execute(plain([SETUP, *after]), self.folder, self.folder / "unused", self.log)
        self.log.unlink()
        second, shown_notes = execute([SETUP, *after], self.folder, self.store, self.log)
        ran_again = self.runs()
        self.log.unlink(missing_ok=True)
        assert second == truth
        third, _ = execute([SETUP, *after], self.folder, self.store, self.log)
        assert self.runs() == [], "a third run of the same notebook must restore everything"
        assert third == truth
        return ran_again, shown_notes


@pytest.fixture
def scenario(tmp_path: Path) -> Scenario:
    return Scenario(tmp_path)


RAW = '%%step key=raw\nran("raw")\nraw = list(range(10))'
CLEAN = '%%step key=clean\nran("clean")\nclean = [x for x in raw if x > t]\nprint(clean)'


def edited(cells: list[str], index: int, change: Callable[[str], str]) -> list[str]:
    return [change(c) if i == index else c for i, c in enumerate(cells)]


def test_a_parameter_edited_in_a_plain_cell_reruns_only_its_readers(scenario: Scenario) -> None:
    before = [RAW, "t = 5", CLEAN]
    ran, shown = scenario.play(before, edited(before, 1, lambda c: "t = 6"))
    assert ran == ["clean"]
    assert any("running 'clean' again: t changed (5 → 6)" in n for n in shown)


def test_an_unchanged_notebook_and_a_comment_only_edit_replay_everything(
    scenario: Scenario,
) -> None:
    before = [RAW, "t = 5", CLEAN]
    ran, _ = scenario.play(before, before)
    assert ran == []
    ran, _ = scenario.play(before, edited(before, 2, lambda c: c + "  # why: the threshold"))
    assert ran == []


def test_a_fixed_helper_reruns_the_steps_that_call_it_even_indirectly(
    scenario: Scenario,
) -> None:
    helpers = (
        "SCALE = 10\n"
        "def scale(x):\n    return x * SCALE\n"
        "def norm(xs):\n    return [scale(x) for x in xs]"
    )
    uses = '%%step key=uses\nran("uses")\nscaled = norm(raw)\nprint(scaled[:3])'
    other = '%%step key=other\nran("other")\nprint(sum(raw))'
    before = [RAW, helpers, uses, other]
    ran, shown = scenario.play(before, edited(before, 1, lambda c: c.replace("10", "100")))
    assert ran == ["uses"]
    assert any("running 'uses' again: norm() changed" in n for n in shown)


def test_a_plain_cell_that_changes_a_step_output_in_place_reruns_its_readers(
    scenario: Scenario,
) -> None:
    total = '%%step key=total\nran("total")\nprint(sum(raw))'
    before = [RAW, "raw.sort()", total]
    ran, shown = scenario.play(before, edited(before, 1, lambda c: "raw.append(100)"))
    assert ran == ["total"]
    assert any("running 'total' again: raw changed" in n for n in shown)


def test_an_upstream_step_that_changes_reruns_downstream_and_a_module_never_cascades(
    scenario: Scenario,
) -> None:
    first = '%%step key=first\nran("first")\nimport numpy as np\nbase = np.arange(4)'
    second = '%%step key=second\nran("second")\nprint(np.sum(base))'
    third = '%%step key=third\nran("third")\nprint(np.pi)'
    before = [first, second, third]
    # Same values, other code: `first` runs again; `second` and `third` restore.
    ran, _ = scenario.play(before, edited(before, 0, lambda c: c.replace("(4)", "(0, 4)")))
    assert ran == ["first"]
    # Other values: `second` reads them and runs again; `third` only uses np.
    ran, _ = scenario.play(before, edited(before, 0, lambda c: c.replace("(4)", "(5)")))
    assert ran == ["first", "second"]


def test_a_data_file_changed_on_disk_reruns_the_steps_that_read_it(scenario: Scenario) -> None:
    csv = scenario.folder / "sales.csv"
    csv.write_text("region,amount\nnorth,10\nsouth,20\n")
    load = (
        '%%step key=load\nran("load")\nimport pandas as pd\n'
        'sales = pd.read_csv("sales.csv")\nprint(sales.amount.sum())'
    )
    report = '%%step key=report\nran("report")\nprint(sales.groupby("region").amount.sum())'
    other = '%%step key=other\nran("other")\nprint("independent")'
    cells = [load, report, other]
    ran, _ = scenario.play(cells, cells, on_disk=lambda: os.utime(csv))  # touched, same bytes
    assert ran == []
    ran, shown = scenario.play(
        cells, cells, on_disk=lambda: csv.write_text("region,amount\nnorth,10\nsouth,25\n")
    )
    assert ran == ["load", "report"]
    assert any("running 'load' again: sales.csv changed" in n for n in shown)


def test_declared_deps_cover_files_read_by_c_libraries(scenario: Scenario) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = scenario.folder / "table.parquet"
    pq.write_table(pa.table({"x": [1, 2, 3]}), table)
    load = (
        '%%step key=load deps=*.parquet\nran("load")\nimport pyarrow.parquet as pq\n'
        'x = pq.read_table("table.parquet").column("x").to_pylist()\nprint(sum(x))'
    )
    ran, shown = scenario.play(
        [load], [load], on_disk=lambda: pq.write_table(pa.table({"x": [1, 2, 4]}), table)
    )
    assert ran == ["load"]
    assert any("running 'load' again: table.parquet changed" in n for n in shown)


def test_an_edited_helper_module_next_to_the_notebook_reruns_its_callers(
    scenario: Scenario,
) -> None:
    helpers = scenario.folder / "helpers.py"
    helpers.write_text("def clean(xs):\n    return [x for x in xs if x % 2 == 0]\n")
    imports = "import helpers\nfrom helpers import clean"
    by_module = '%%step key=by_module\nran("by_module")\nprint(helpers.clean(range(6)))'
    by_name = '%%step key=by_name\nran("by_name")\nprint(clean(range(6)))'
    other = '%%step key=other\nran("other")\nprint(sum(range(6)))'
    cells = [imports, by_module, by_name, other]
    ran, shown = scenario.play(
        cells,
        cells,
        on_disk=lambda: helpers.write_text(
            "def clean(xs):\n    return [x for x in xs if x % 2 == 1]\n"
        ),
    )
    assert ran == ["by_module", "by_name"]
    assert any("running 'by_module' again: helpers changed" in n for n in shown)


def test_a_file_named_in_the_code_counts_even_when_a_c_library_reads_it(
    scenario: Scenario,
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = scenario.folder / "table.parquet"
    pq.write_table(pa.table({"x": [1, 2, 3]}), table)
    load = (
        '%%step key=load\nran("load")\nimport pyarrow.parquet as pq\n'
        'x = pq.read_table("table.parquet").column("x").to_pylist()\nprint(sum(x))'
    )
    ran, _ = scenario.play([load], [load])
    assert ran == []
    ran, shown = scenario.play(
        [load], [load], on_disk=lambda: pq.write_table(pa.table({"x": [1, 2, 4]}), table)
    )
    assert ran == ["load"]
    assert any("running 'load' again: table.parquet changed" in n for n in shown)


def test_going_back_to_an_earlier_parameter_replays_it_instead_of_computing_again(
    scenario: Scenario,
) -> None:
    fit = '%%step key=fit\nran("fit")\nmodel = [n * i for i in range(3)]\nprint(model)'
    ran, _ = scenario.play(["n = 3", fit], ["n = 4", fit])
    assert ran == ["fit"]
    ran, _ = scenario.play(["n = 4", fit], ["n = 3", fit])  # a variant kept for n = 3
    assert ran == []


def test_running_only_a_downstream_step_after_a_restart(scenario: Scenario) -> None:
    threshold = "%%step key=threshold\nt = 5"
    total = '%%step key=total\nran("total")\nprint(sum(clean))'
    cells = [SETUP, RAW, threshold, CLEAN, total]
    first, _ = execute(cells, scenario.folder, scenario.store, scenario.log)
    assert scenario.runs() == ["raw", "clean", "total"]
    scenario.log.unlink()
    # A new kernel runs only the setup and the last cell: it trusts the saved, valid chain.
    alone, notes = execute([SETUP, total], scenario.folder, scenario.store, scenario.log)
    assert scenario.runs() == []
    assert alone[1] == first[4] == ["stdout: 30\n"]
    assert any("trusted the saved step 'clean'" in n for n in notes)
    # A plain cell makes the threshold: nothing vouches for it, so the step runs and says why.
    other_store = scenario.folder / "other-store"
    execute([SETUP, RAW, "t = 5", CLEAN], scenario.folder, other_store, scenario.log)
    shown, notes = execute([SETUP, CLEAN], scenario.folder, other_store, scenario.log, errors=True)
    assert shown[1] == ["error: NameError: name 'raw' is not defined"], notes
    assert any("t is not defined now and no saved step makes it" in n for n in notes)


def test_a_plain_cell_that_rebinds_a_step_output_reruns_its_readers(scenario: Scenario) -> None:
    total = '%%step key=total\nran("total")\nprint(sum(raw))'
    before = [RAW, "raw = raw[:5]", total]
    ran, shown = scenario.play(before, edited(before, 1, lambda c: "raw = raw[5:]"))
    assert ran == ["total"]
    assert any(
        "running 'total' again: raw changed ([0, 1, 2, 3, 4] → [5, 6, 7, 8, 9])" in n for n in shown
    )


def test_an_array_changed_in_place_by_a_plain_cell_is_seen_by_every_reader(
    scenario: Scenario,
) -> None:
    make = '%%step key=make\nran("make")\nimport numpy as np\narr = np.arange(6)'
    first = '%%step key=first\nran("first")\nprint(int(arr.sum()))'
    second = '%%step key=second\nran("second")\nprint(int(arr.max()))'
    before = [make, first, "arr[0] = 1", second]
    ran, shown = scenario.play(before, before)
    assert ran == []
    ran, shown = scenario.play(before, edited(before, 2, lambda c: "arr[0] = 100"))
    assert ran == ["second"]
    assert any("running 'second' again: arr changed" in n for n in shown)


def test_a_dataframe_filtered_differently_reruns_with_its_shape_in_the_note(
    scenario: Scenario,
) -> None:
    load = (
        '%%step key=load\nran("load")\nimport pandas as pd\n'
        'df = pd.DataFrame({"a": range(10), "b": range(10, 20)})'
    )
    report = '%%step key=report\nran("report")\nprint(sub.describe().loc["mean"])'
    before = [load, "sub = df[df.a > 1]", report]
    ran, shown = scenario.play(before, edited(before, 1, lambda c: "sub = df[df.a > 3]"))
    assert ran == ["report"]
    assert any("sub changed (DataFrame 8x2 → DataFrame 6x2)" in n for n in shown)


def test_a_class_defined_in_a_plain_cell_reruns_its_users_when_a_method_changes(
    scenario: Scenario,
) -> None:
    cls = (
        "class Scaler:\n    def __init__(self, k):\n        self.k = k\n"
        "    def apply(self, xs):\n        return [x * self.k for x in xs]"
    )
    use = '%%step key=use\nran("use")\nprint(Scaler(2).apply(raw[:3]))'
    other = '%%step key=other\nran("other")\nprint(len(raw))'
    before = [RAW, cls, use, other]
    ran, _ = scenario.play(before, edited(before, 1, lambda c: c + "  # a comment"))
    assert ran == []
    ran, shown = scenario.play(
        before, edited(before, 1, lambda c: c.replace("x * self.k", "x + self.k"))
    )
    assert ran == ["use"]
    assert any("running 'use' again: Scaler changed" in n for n in shown)


def test_a_closure_made_by_a_factory_with_another_argument_reruns_its_users(
    scenario: Scenario,
) -> None:
    factory = "def scaler(k):\n    return lambda x: x * k\ntimes = scaler(3)"
    use = '%%step key=use\nran("use")\nprint([times(x) for x in raw[:3]])'
    before = [RAW, factory, use]
    ran, shown = scenario.play(before, edited(before, 1, lambda c: c.replace("(3)", "(4)")))
    assert ran == ["use"]
    assert any("running 'use' again: times changed" in n for n in shown), shown


def test_a_config_dict_and_an_unordered_set_are_compared_by_value(scenario: Scenario) -> None:
    config = 'config = {"lr": 0.1, "tags": {"a", "b", "c"}}'
    fit = '%%step key=fit\nran("fit")\nprint(config["lr"] * 10, sorted(config["tags"]))'
    before = [config, fit]
    same = 'config = {"lr": 0.1, "tags": {"c", "a", "b"}}'  # the set written in another order
    ran, _ = scenario.play(before, [same, fit])
    assert ran == []
    ran, shown = scenario.play(before, edited(before, 0, lambda c: c.replace("0.1", "0.2")))
    assert ran == ["fit"]
    assert any("running 'fit' again: config changed" in n for n in shown)


def test_a_data_file_deleted_on_disk_runs_the_step_and_fails_as_a_plain_run(
    scenario: Scenario,
) -> None:
    data = scenario.folder / "numbers.txt"
    data.write_text("1 2 3")
    load = (
        '%%step key=load\nran("load")\n'
        'numbers = [int(x) for x in open("numbers.txt").read().split()]\nprint(sum(numbers))'
    )
    first, _ = execute([SETUP, load], scenario.folder, scenario.store, scenario.log)
    assert first[1] == ["stdout: 6\n"]
    data.unlink()
    shown, notes = execute(
        [SETUP, load], scenario.folder, scenario.store, scenario.log, errors=True
    )
    assert shown[1] == [
        "error: FileNotFoundError: [Errno 2] No such file or directory: 'numbers.txt'"
    ]
    assert any(n.endswith("running 'load' again: numbers.txt was deleted") for n in notes), notes


def test_pin_keeps_the_saved_result_whatever_changed_and_force_runs_it_again(
    scenario: Scenario,
) -> None:
    pinned = '%%step key=fit --pin\nran("fit")\nprint(n * 2)'
    first, _ = execute([SETUP, "n = 3", pinned], scenario.folder, scenario.store, scenario.log)
    scenario.log.unlink()
    again, _ = execute([SETUP, "n = 4", pinned], scenario.folder, scenario.store, scenario.log)
    assert scenario.runs() == [] and again[2] == first[2] == ["stdout: 6\n"]
    forced = pinned.replace("--pin", "--force")
    shown, _ = execute([SETUP, "n = 4", forced], scenario.folder, scenario.store, scenario.log)
    assert scenario.runs() == ["fit"] and shown[2] == ["stdout: 8\n"]


def test_a_plot_of_an_edited_parameter_is_drawn_again_and_an_unchanged_one_replays_the_image(
    scenario: Scenario,
) -> None:
    plot = (
        '%%step key=plot\nran("plot")\nimport matplotlib.pyplot as plt\n'
        "fig, ax = plt.subplots(figsize=(3, 2))\nax.plot([x ** power for x in range(10)])\n"
        "plt.show()"
    )
    setup = "%matplotlib inline\npower = 2"
    before = [setup, plot]
    ran, _ = scenario.play(before, before)
    assert ran == []
    ran, shown = scenario.play(before, edited(before, 0, lambda c: c.replace("2", "3")))
    assert ran == ["plot"]
    assert any("running 'plot' again: power changed (2 → 3)" in n for n in shown)


def test_a_default_argument_of_a_helper_counts(scenario: Scenario) -> None:
    helper = "def top(xs, n=3):\n    return sorted(xs)[-n:]"
    use = '%%step key=use\nran("use")\nprint(top(raw))'
    before = [RAW, helper, use]
    ran, shown = scenario.play(before, edited(before, 1, lambda c: c.replace("n=3", "n=2")))
    assert ran == ["use"]
    assert any("running 'use' again: top() changed" in n for n in shown)


def test_a_global_a_helper_changes_is_replayed_for_the_cells_after(scenario: Scenario) -> None:
    helpers = "log = []\ndef record(m):\n    log.append(m)"
    record = '%%step key=s\nran("s")\nrecord("hi")\nv = 1'
    cells = [helpers, record, "print(log)"]
    ran, _ = scenario.play(cells, cells)
    assert ran == []


def test_two_cells_sharing_a_key_each_replay_their_own(scenario: Scenario) -> None:
    a = '%%step key=same\nran("a")\nx = 1\nprint(x)'
    b = '%%step key=same\nran("b")\nx = 2\nprint(x)'
    first, _ = execute([SETUP, a, b], scenario.folder, scenario.store, scenario.log)
    assert scenario.runs() == ["a", "b"]
    scenario.log.unlink()
    again, _ = execute([SETUP, a, b], scenario.folder, scenario.store, scenario.log)
    assert scenario.runs() == [] and again == first


def test_a_seeded_notebook_draws_the_same_numbers_after_a_replay_and_a_new_seed_reruns(
    scenario: Scenario,
) -> None:
    seed = "import numpy as np\nimport random\nnp.random.seed(0)\nrandom.seed(0)"
    draw = (
        '%%step key=draw\nran("draw")\n'
        "train = np.random.rand(3)\npick = random.random()\nprint(train, pick)"
    )
    later = "print(np.random.rand(2), random.random())"  # must not repeat the step's numbers
    before = [seed, draw, later]
    ran, _ = scenario.play(before, before)
    assert ran == []
    ran, shown = scenario.play(before, edited(before, 0, lambda c: c.replace("(0)", "(1)")))
    assert ran == ["draw"]
    assert any("state before it changed" in n for n in shown), shown


def test_environment_and_working_directory_set_by_a_step_hold_after_its_replay(
    scenario: Scenario,
) -> None:
    (scenario.folder / "sub").mkdir()
    setup = (
        '%%step key=setup\nran("setup")\nimport os\nos.environ["MODE"] = "fast"\nos.chdir("sub")'
    )
    later = 'import os\nprint(os.environ["MODE"], os.path.basename(os.getcwd()))'
    ran, _ = scenario.play([setup, later], [setup, later])
    assert ran == []


CLASSES = '''from dataclasses import dataclass
from enum import Enum

@dataclass(frozen=True)
class R:
    name: str

class Color(Enum):
    RED = 1
    BLUE = 2

class display:
    """A display helper, as teaching notebooks define it: its repr reads notebook globals."""
    def __init__(self, *names):
        self.names = names
    def __repr__(self):
        return "\\n".join(f"{n}: {eval(n)!r}" for n in self.names)'''


def test_instances_of_notebook_classes_come_back_as_instances_of_the_live_class(
    scenario: Scenario,
) -> None:
    make = (
        '%%step key=make\nran("make")\nr = R("a")\nc = Color.RED\nitems = {R("a"): 1}\n'
        'shown = display("r", "c")\nshown'
    )
    check = (
        'print(isinstance(r, R), r == R("a"), c is Color.RED, items[R("a")])\n'
        "match c:\n    case Color.RED:\n        print('red')\n    case _:\n        print('other')\n"
        "shown"
    )
    cells = [CLASSES, make, check]
    ran, _ = scenario.play(cells, cells)
    assert ran == []


def test_a_class_missing_at_restore_runs_the_step_again_and_names_it(scenario: Scenario) -> None:
    make = '%%step key=make\nran("make")\nr = R("a")\nprint(r)'
    execute([SETUP, CLASSES, make], scenario.folder, scenario.store, scenario.log)
    shown, notes = execute(
        [SETUP, make], scenario.folder, scenario.store, scenario.log, errors=True
    )
    assert shown[1] == ["error: NameError: name 'R' is not defined"]
    assert any("R is not defined now" in n for n in notes), notes


DEFINITIONS = """%%step key=defs
ran("defs")
import functools
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Generic, NamedTuple, Protocol, TypedDict, TypeVar

T = TypeVar("T")

@dataclass(order=True, frozen=True)
class P:
    x: int
    y: int = 0

@dataclass(slots=True)
class Slotted:
    a: int

class Movie(TypedDict):
    title: str

class Greeter(Protocol):
    def greet(self) -> str: ...

class Holder(Generic[T]):
    def __init__(self, item: T):
        self.item = item

class Level(IntEnum):
    LOW = 1
    HIGH = 2

class Pair(NamedTuple):
    a: int
    b: str

class Box:
    def __init__(self, v):
        self._v = v
    @property
    def v(self):
        return self._v * SCALE
    @classmethod
    def of(cls, v):
        return cls(v)
    @staticmethod
    def unit():
        return 1

@contextmanager
def tagged(name):
    print("<" + name + ">")
    yield name
    print("</" + name + ">")

@functools.lru_cache(maxsize=None)
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)

def logged(fn):
    @functools.wraps(fn)
    def inner(*args):
        return ("logged", fn(*args))
    return inner

@logged
def double(x):
    return 2 * x

def adder(k):
    return lambda x: x + k

add3 = adder(3)
p = P(1, 2)"""

USE_DEFINITIONS = """print(p, p < P(2), P(1, 2) == p, Level.HIGH > Level.LOW, Pair(1, "b"))
print(Slotted(1), Movie(title="x"), Holder[int](3).item, Greeter.__name__)
print(Box.of(2).v, Box.unit(), fib(20), double(4), double.__name__, add3(1))
with tagged("t") as t:
    print(t)"""


def test_classes_and_functions_a_step_defines_behave_after_a_restore(scenario: Scenario) -> None:
    cells = ["SCALE = 10", DEFINITIONS, USE_DEFINITIONS]
    ran, _ = scenario.play(cells, cells)
    assert ran == []


def test_a_notebook_progress_bar_replays_finished_and_a_widget_says_it_was_live(
    scenario: Scenario,
) -> None:
    loop = (
        '%%step key=loop\nran("loop")\nfrom tqdm.notebook import tqdm\n'
        "total = 0\nfor i in tqdm(range(50)):\n    total += i\nprint(total)"
    )
    slider = '%%step key=slider\nran("slider")\nimport ipywidgets\nipywidgets.IntSlider(value=3)'
    first, _ = execute([SETUP, loop, slider], scenario.folder, scenario.store, scenario.log)
    replay, _ = execute([SETUP, loop, slider], scenario.folder, scenario.store, scenario.log)
    assert scenario.runs() == ["loop", "slider"]  # the first run only
    bar = next(o for o in replay[1] if o.startswith("display_data"))
    assert "100%" in bar and "50/50" in bar, replay[1]
    assert replay[1][-1] == "stdout: 1225\n"
    assert "a live widget in the original run" in replay[2][-1]
    assert "IntSlider" in replay[2][-1]
    assert any("0/50" in o for o in first[1])  # what nbclient recorded of the live bar


def test_objects_shared_between_steps_stay_shared_after_a_replay(scenario: Scenario) -> None:
    plot = (
        '%%step key=plot\nran("plot")\nimport matplotlib.pyplot as plt\n'
        "fig, ax = plt.subplots(figsize=(3, 2))\nax.plot([1, 2, 3]);"
    )
    ticks = (
        '%%step key=ticks\nran("ticks")\nfrom matplotlib.ticker import MultipleLocator\n'
        "ax.xaxis.set_major_locator(MultipleLocator(0.5))\nax.set_title('ticks')"
    )
    show = "print(fig.axes[0].get_title(), fig.axes[0] is ax, len(ax.get_xticks()))\nfig"
    frames = (
        '%%step key=frame\nran("frame")\nimport pandas as pd\n'
        'df = pd.DataFrame({"a": [1, 2]})\nalias = df'
    )
    grow = '%%step key=grow\nran("grow")\ndf["b"] = df["a"] * 2'
    check = "print(list(alias.columns), alias is df)"
    model = (
        '%%step key=model\nran("model")\nclass Est:\n    coef_ = None\n'
        "    def fit(self, x):\n        self.coef_ = sum(x)\n        return self\n"
        'est = Est()\npipe = {"steps": [("est", est)]}'
    )
    fit = '%%step key=fit\nran("fit")\nest.fit([1, 2, 3]);'
    use = 'print(pipe["steps"][0][1].coef_, pipe["steps"][0][1] is est)'
    cells = [plot, ticks, show, frames, grow, check, model, fit, use]
    ran, _ = scenario.play(cells, cells)
    assert ran == []


def test_functions_a_step_defines_do_not_make_their_users_run_again_after_a_restore(
    scenario: Scenario,
) -> None:
    define = (
        '%%step key=define\nran("define")\ndef f(v):\n    return v + 1\n'
        "class A:\n    def twice(self, v):\n        return 2 * v"
    )
    use = '%%step key=use\nran("use")\nprint(f(1), A().twice(3))'
    ran, _ = scenario.play([define, use], [define, use])
    assert ran == []


def test_an_input_a_helper_changes_in_place_is_saved_and_a_seeding_step_replays(
    scenario: Scenario,
) -> None:
    helpers = "import numpy as np\nimport random\ndef add_col(d):\n    d['b'] = d['a'] * 2"
    frame = '%%step key=frame\nran("frame")\nimport pandas as pd\ndf = pd.DataFrame({"a": [1, 2]})'
    grow = '%%step key=grow\nran("grow")\nadd_col(df)'
    rng = '%%step key=rng\nran("rng")\nrandom.seed(1)\ngen = np.random.default_rng(0)'
    draw = '%%step key=draw\nran("draw")\ndef draw(r):\n    return r.normal(size=2)\na = draw(gen)'
    probe = "print(list(df.columns), gen.integers(0, 1000, 3), random.random())"
    cells = [helpers, frame, grow, rng, draw, probe]
    ran, _ = scenario.play(cells, cells)
    assert ran == []


def test_a_cell_value_comes_before_the_figure_drawn_at_the_end_as_in_a_plain_run(
    scenario: Scenario,
) -> None:
    plot = (
        '%%step key=plot\nran("plot")\nimport matplotlib.pyplot as plt\n'
        "fig2, ax2 = plt.subplots(figsize=(3, 2))\nax2.plot([3, 1, 2])\nax2.set_title('t');\n"
        "len(ax2.lines)"
    )
    ran, _ = scenario.play([plot], [plot])  # compared with a plain run, in order
    assert ran == []


def test_quoted_keys_shell_commands_and_unknown_keys_in_a_real_kernel(scenario: Scenario) -> None:
    quoted = '%%step key="user 1"\nran("quoted")\n!true\nprint("user", 1)'
    ran, _ = scenario.play([quoted], [quoted])
    assert ran == []
    shown, _ = execute(
        [SETUP, quoted, "%steps forget usr 1"],
        scenario.folder,
        scenario.store,
        scenario.log,
        errors=True,
    )
    assert shown[2] == [  # IPython shows a UsageError on stderr
        "stderr: UsageError: no saved step 'usr 1' in workflow 'default'; did you mean 'user 1'?\n"
    ]


def test_await_step_and_async_with_step_in_a_real_kernel(scenario: Scenario) -> None:
    define = (
        "import asyncio\nfrom awaitly_nb import step\n"
        'async def fetch_user(uid):\n    ran(f"user:{uid}")\n    await asyncio.sleep(0)\n'
        '    return {"id": uid}'
    )
    direct = 'user = await step(lambda: fetch_user(1), key="user:1")\nprint(user)'
    block = (
        'async with step("posts:1"):\n    ran("posts")\n    await asyncio.sleep(0)\n'
        '    posts = ["a", "b"]\n    print(posts)'
    )
    cells = [SETUP, define, direct, block]
    first, _ = execute(cells, scenario.folder, scenario.store, scenario.log)
    assert scenario.runs() == ["user:1", "posts"]
    scenario.log.unlink()
    again, notes = execute(cells, scenario.folder, scenario.store, scenario.log)
    assert scenario.runs() == []
    assert again == first
    assert first[2] == ["stdout: {'id': 1}\n"] and first[3] == ["stdout: ['a', 'b']\n"]
    assert any("restored 'posts:1'" in n for n in notes)


def test_step_map_in_a_real_kernel_fetches_only_what_is_not_saved(scenario: Scenario) -> None:
    define = (
        "import asyncio\nfrom awaitly_nb import step\n"
        'async def fetch(uid):\n    ran(f"u{uid}")\n    await asyncio.sleep(0)\n    return uid * 2'
    )
    gather = (
        'users = await step.map(fetch, range(12), key="user:{}", concurrency=3)\nprint(sum(users))'
    )
    cells = [SETUP, define, gather]
    first, _ = execute(cells, scenario.folder, scenario.store, scenario.log)
    assert sorted(scenario.runs()) == sorted(f"u{i}" for i in range(12))
    scenario.log.unlink()
    again, _ = execute(cells, scenario.folder, scenario.store, scenario.log)
    assert scenario.runs() == []
    assert "stdout: 132\n" in first[2] and "stdout: 132\n" in again[2]


CALLABLES = """import functools
from awaitly_nb import step

class Client:
    def __init__(self, base):
        self.base = base
    def get(self, uid):
        ran("get")
        return self.base + str(uid)

class Scale:
    def __init__(self, k):
        self.k = k
    def __call__(self, x):
        ran("scale")
        return x * self.k

def label(x, suffix="!"):
    ran("label")
    return f"{x}{suffix}"

client, scale = Client("A"), Scale(2)"""
CALLS = (
    'print(step(client.get, 1, key="get"))\n'
    'print(step(scale, 5, key="scale"))\n'
    'print(step(functools.partial(label, suffix="?"), 3, key="partial"))\n'
    'print(step(label, 4, key="label"))\n'
    'print(step(label, 6, suffix="~", key="kw"))'
)


@pytest.mark.parametrize(
    ("old", "new", "reran"),
    [
        ('Client("A")', 'Client("B")', ["get"]),  # a bound method's object
        ("return self.base + str(uid)", "return str(uid) + self.base", ["get"]),  # its code
        ("Scale(2)", "Scale(3)", ["scale"]),  # a callable object's state
        ("return x * self.k", "return x * self.k * 10", ["scale"]),  # its __call__
        # A function's defaults: every call of it runs again, even those passing suffix.
        ('suffix="!"', 'suffix="¡"', ["label", "label", "label"]),
    ],
)
def test_the_call_form_compares_what_the_callable_holds(
    scenario: Scenario, old: str, new: str, reran: list[str]
) -> None:
    before = [CALLABLES, CALLS]
    ran, _ = scenario.play(before, edited(before, 0, lambda c: c.replace(old, new)))
    assert sorted(ran) == sorted(reran)


def test_the_call_form_compares_partial_and_keyword_arguments(scenario: Scenario) -> None:
    before = [CALLABLES, CALLS]
    after = edited(before, 1, lambda c: c.replace('suffix="?"', 'suffix="¿"').replace("~", "≈"))
    ran, _ = scenario.play(before, after)
    assert sorted(ran) == ["label", "label"]  # the partial and the keyword call


def test_the_call_form_replays_what_the_call_printed_and_displayed(scenario: Scenario) -> None:
    define = (
        "import asyncio\nfrom IPython.display import HTML, display\nfrom awaitly_nb import step\n"
        "def report(n):\n    ran('report')\n    print('computing', n)\n"
        "    display(HTML(f'<b>{n}</b>'))\n    return n * 2\n"
        "async def fetch(uid):\n    ran(f'fetch{uid}')\n    print('fetching', uid)\n"
        "    await asyncio.sleep(0)\n    return uid"
    )
    calls = (
        "total = step(report, 4, key='report')\n"
        "users = await asyncio.gather(*(step(fetch, u, key=f'u:{u}') for u in range(3)))\n"
        "print(total, users)"
    )
    ran, _ = scenario.play([define, calls], [define, calls])
    assert ran == []
