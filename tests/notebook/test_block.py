"""``with step("key"):`` and ``step(fn, key=...)`` in a notebook and in a plain script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from awaitly_nb.errors import AwaitlyError

BLOCK = """\
from awaitly_nb import step
with step("posts:1"):
    posts = [1, 2, 3]
    mark()
    print("fetched", len(posts))
print("after the block")
"""


def test_with_block_miss_runs_and_saves(ip: Any, run: Any, marks: Any, saved: Any) -> None:
    ran = run(BLOCK)

    assert ran.result.success, ran.error
    assert marks.count() == 1
    assert ran.stdout == "fetched 3\nafter the block\n"
    assert saved()["posts:1"].variables == ("posts",)


def test_with_block_hit_skips_the_body_and_replays(
    ip: Any, run: Any, marks: Any, restart: Any
) -> None:
    assert run(BLOCK).result.success
    restart()

    again = run(BLOCK)

    assert again.result.success, again.error
    assert marks.count() == 1
    assert ip.user_ns["posts"] == [1, 2, 3]
    assert again.stdout == "fetched 3\nafter the block\n"
    assert any("restored" in note for note in again.notes)


def test_with_block_options(ip: Any, run: Any, marks: Any, restart: Any, saved: Any) -> None:
    cell = (
        "from awaitly_nb import step\n"
        "with step('opts', outputs=['a', 'b'], exclude=None, force=False):\n"
        "    a, b, scratch = 1, 2, 3\n"
        "    mark()\n"
    )
    assert run(cell).result.success
    assert saved()["opts"].variables == ("a", "b")

    forced = run(cell.replace("force=False", "force=True"))
    assert forced.result.success
    assert marks.count() == 2

    excluded = run(
        "from awaitly_nb import step\n"
        "with step('excl', exclude='scratch'):\n"
        "    a, scratch = 1, 3\n"
        "    mark()\n"
    )
    assert excluded.result.success
    assert saved()["excl"].variables == ("a",)


def test_with_block_changed_body_runs_again(ip: Any, run: Any, marks: Any) -> None:
    assert run(BLOCK).result.success

    changed = run(BLOCK.replace("[1, 2, 3]", "[4, 5]"))

    assert changed.result.success
    assert marks.count() == 2
    assert ip.user_ns["posts"] == [4, 5]


def test_with_block_failure_saves_nothing(ip: Any, run: Any, marks: Any, saved: Any) -> None:
    cell = "from awaitly_nb import step\nwith step('bad'):\n    x = 1\n    mark()\n    1 / 0\n"
    ran = run(cell)

    assert isinstance(ran.result.error_in_exec, ZeroDivisionError)
    assert saved() == {}
    run(cell)
    assert marks.count() == 2


def test_with_block_inside_a_function_is_an_error(
    ip: Any, run: Any, marks: Any, saved: Any
) -> None:
    ran = run(
        "from awaitly_nb import step\n"
        "def load():\n"
        "    with step('inner'):\n"
        "        mark()\n"
        "load()\n"
    )

    assert isinstance(ran.result.error_in_exec, AwaitlyError)
    message = str(ran.result.error_in_exec)
    assert "notebook or module level" in message
    assert "step(work, arg, key=...)" in message and "await step(" in message  # what instead
    assert marks.count() == 0
    assert saved() == {}


SCRIPT = """\
from pathlib import Path
from awaitly_nb import step

def mark():
    with Path("marks.txt").open("a") as f:
        f.write("ran\\n")

with step("work"):
    value = 21 * 2
    mark()
    print("computed", value)

print("value is", value)
"""


def test_with_block_in_a_plain_script(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "AWAITLY_NB_DIR": str(tmp_path / "store")}
    env.pop("JPY_SESSION_NAME", None)

    def run_script() -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done

    first = run_script()
    second = run_script()

    assert first.stdout == "computed 42\nvalue is 42\n"
    assert second.stdout == "computed 42\nvalue is 42\n"
    assert (tmp_path / "marks.txt").read_text() == "ran\n"
    assert "restored 'work'" in second.stderr
    assert (tmp_path / "store").is_dir()
    assert not (tmp_path / ".awaitly").exists()


# --- the call form --------------------------------------------------------------------------

CALL = "from awaitly_nb import step\ntotal = step(lambda: (mark(), 6 * 7)[1], key='total:1')\n"


def test_call_form_computes_once(ip: Any, run: Any, marks: Any, restart: Any) -> None:
    assert run(CALL).result.success
    restart()

    again = run(CALL)

    assert again.result.success, again.error
    assert marks.count() == 1
    assert ip.user_ns["total"] == 42


def test_call_form_uses_the_notebook_store_and_workflow(
    ip: Any, run: Any, marks: Any, saved: Any
) -> None:
    assert run(CALL).result.success
    assert run("%%step key=cell\nx = 1").result.success

    listing = run("%steps list")

    assert sorted(saved()) == ["cell", "total:1"]
    assert "total:1" in listing.stdout
    assert "cell" in listing.stdout


def test_call_form_changed_function_runs_again(ip: Any, run: Any, marks: Any) -> None:
    assert run(CALL).result.success

    changed = run(CALL.replace("6 * 7", "6 * 8"))

    assert changed.result.success
    assert marks.count() == 2
    assert ip.user_ns["total"] == 48
    assert any("running 'total:1' again: code changed" in n for n in changed.notes), changed.notes


def test_a_call_step_in_a_script_says_why_it_runs_again(tmp_path: Path) -> None:
    script = tmp_path / "job.py"
    code = (
        "import sys\nfrom awaitly_nb import configure, step\n"
        "configure(dir=sys.argv[1], workflow='w')\nN = 3\n"
        "print(step(lambda: N * 2, key='double'))\n"
    )
    outs = []
    for text in (code, code, code.replace("N = 3", "N = 4")):
        script.write_text(text)
        done = subprocess.run(
            [sys.executable, str(script), str(tmp_path / "store")],
            capture_output=True,
            text=True,
            check=True,
        )
        outs.append((done.stdout.strip(), done.stderr))
    assert [out for out, _ in outs] == ["6", "6", "8"]
    assert "again" not in outs[1][1]
    assert "[awaitly_nb] running 'double' again: N changed (3 → 4)" in outs[2][1], outs[2][1]


def test_call_form_failure_is_not_saved(ip: Any, run: Any, marks: Any, saved: Any) -> None:
    cell = "from awaitly_nb import step\ntotal = step(lambda: (mark(), 1 / 0), key='t')\n"
    ran = run(cell)

    assert isinstance(ran.result.error_in_exec, ZeroDivisionError)
    assert saved() == {}
    run(cell)
    assert marks.count() == 2


@pytest.mark.parametrize("where", ["cell", "function"])
def test_call_form_works_inside_functions_too(ip: Any, run: Any, marks: Any, where: str) -> None:
    body = "step(lambda: (mark(), 5)[1], key='fn')"
    if where == "function":
        cell = f"from awaitly_nb import step\ndef get():\n    return {body}\nv = get()\nv = get()\n"
    else:
        cell = f"from awaitly_nb import step\nv = {body}\nv = {body}\n"

    assert run(cell).result.success
    assert marks.count() == 1
    assert ip.user_ns["v"] == 5


def test_with_block_as_target_is_not_saved(
    ip: Any, run: Any, marks: Any, restart: Any, saved: Any
) -> None:
    cell = (
        "from awaitly_nb import step\n"
        "with step('as') as s:\n"
        "    v = 1\n"
        "    mark()\n"
        "was_restored = s.restored\n"
    )
    ran = run(cell)
    assert ran.result.success, ran.error
    assert saved()["as"].variables == ("v",)
    assert ip.user_ns["was_restored"] is False

    restart()
    assert run(cell).result.success
    assert marks.count() == 1
    assert ip.user_ns["was_restored"] is True


def test_a_key_used_by_the_call_form_and_a_block_is_not_mixed_up(
    ip: Any, run: Any, marks: Any
) -> None:
    assert run(
        "from awaitly_nb import step\nv = step(lambda: 5, key='both', pin=True)"
    ).result.success
    block = "with step('both', pin=True):\n    w = 6\n    mark()"
    ran = run(block)
    assert ran.result.success, ran.error  # not a KeyError: the saved shape differs, so it runs
    assert marks.count() == 1 and ip.user_ns["w"] == 6
    again = run("v = step(lambda: 5, key='both', pin=True)")
    assert again.result.success, again.error
    assert ip.user_ns["v"] == 5


TRACED = """
import sys
lines = []
def local(frame, event, arg):
    if event == "line":
        lines.append(frame.f_lineno)
    return local
def tracer(frame, event, arg):
    return None  # a debugger's global tracer; this module's frame traces lines
sys.settrace(tracer)
sys._getframe().f_trace = local
from awaitly_nb import step
with step("traced"):
    value = 1
after = 2
done = 3
sys.settrace(None)
print(sorted(set(lines)))
"""


def test_a_restored_block_leaves_an_active_tracer_tracing(tmp_path: Path) -> None:
    script = tmp_path / "traced.py"
    script.write_text(TRACED)
    env = {**os.environ, "AWAITLY_NB_DIR": str(tmp_path / "store")}
    runs = [
        subprocess.run(
            [sys.executable, str(script)], env=env, capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(2)
    ]
    traced_after = {15, 16}  # `after = 2` and `done = 3`, after the with-block
    for out in runs:
        assert traced_after <= set(eval(out)), out


IN_PLACE = """
import sys
import numpy as np
import awaitly_nb
from awaitly_nb import step
awaitly_nb.configure(dir=sys.argv[1], workflow="w")
log = []
rng = np.random.default_rng(1)
def record(x):
    log.append(x)
    return x
def draw():
    return rng.integers(0, 100, 3).tolist()
def add(rows):
    rows.append("added")
data = ["a"]
a = step(record, 1, key="r1")
b = step(lambda: record(2), key="r2")
c = step(draw, key="d1")
step(add, data, key="add")
class Acc:
    def __init__(self):
        self.items = []
    def add(self, x):
        self.items.append(x)
        return len(self.items)
acc = Acc()
n = step(acc.add, 5, key="acc")  # the object of a bound method
from collections import Counter
import helpers
counts = Counter()
step(counts.update, "abca", key="counts")  # a library's method: its module is not ours
step(helpers.tag, data, key="tag")  # an argument, passed to another module's function
grid = np.arange(6.0)
head, tail = grid[:3], grid[3:]  # views: a change through one is a change of grid
def center(part):
    part -= part.mean()
def shift():
    tail[:] += 10
step(center, head, key="center")  # an argument viewing grid's memory
step(shift, key="shift")  # a global viewing it
grid[0] = 7  # still one memory after a replay, as after a run
print(repr([a, b, log, c, int(rng.integers(0, 100)), data, acc.items, n, dict(counts),
            grid.tolist(), head.tolist(), tail.tolist()]))
"""


def test_a_call_step_replays_what_it_changed_in_place(tmp_path: Any) -> None:
    import ast
    import subprocess
    import sys

    def run(code: str) -> Any:
        path = tmp_path / "script.py"
        path.write_text(code)
        done = subprocess.run(
            [sys.executable, str(path), str(tmp_path / "store")],
            capture_output=True,
            text=True,
            check=True,
        )
        return ast.literal_eval(done.stdout.strip()), done.stderr

    (tmp_path / "helpers.py").write_text("def tag(rows):\n    rows.append('tagged')\n")
    plain = IN_PLACE
    for call, direct in [
        ('step(record, 1, key="r1")', "record(1)"),
        ('step(lambda: record(2), key="r2")', "record(2)"),
        ('step(draw, key="d1")', "draw()"),
        ('step(add, data, key="add")', "add(data)"),
        ('step(acc.add, 5, key="acc")', "acc.add(5)"),
        ('step(counts.update, "abca", key="counts")', 'counts.update("abca")'),
        ('step(helpers.tag, data, key="tag")', "helpers.tag(data)"),
        ('step(center, head, key="center")', "center(head)"),
        ('step(shift, key="shift")', "shift()"),
    ]:
        assert call in plain
        plain = plain.replace(call, direct)
    truth, _ = run(plain)
    first, _ = run(IN_PLACE)
    again, _ = run(IN_PLACE)  # every step restored
    assert first == again == truth  # the log, the generator and the argument as a run leaves them


def test_a_replayed_display_keeps_its_id_so_a_restored_handle_updates_it(
    ip: Any, run: Any, restart: Any
) -> None:
    cell = (
        "%%step key=handle\nfrom IPython.display import display, HTML\n"
        "h = display(HTML('<b>one</b>'), display_id=True)"
    )
    run(cell)
    restart()
    ran = run(cell)
    assert any("restored" in n for n in ran.notes), ran.notes
    shown = [o for o in ran.captured.outputs if "HTML object" in o.data.get("text/plain", "")]
    assert [o.transient for o in shown] == [{"display_id": ip.user_ns["h"].display_id}]


def test_a_call_step_runs_again_when_its_argument_stops_being_a_global_s_object(
    tmp_path: Any,
) -> None:
    import subprocess
    import sys

    script = tmp_path / "script.py"
    code = (
        "import sys, awaitly_nb\nfrom awaitly_nb import step\n"
        "awaitly_nb.configure(dir=sys.argv[1], workflow='w')\n"
        "a = [1, 2]\nb = {alias}\n"
        "def grow(rows):\n    rows.append(3)\n    return len(rows)\n"
        "n = step(grow, b, key='g')\nprint(a, b, n)\n"
    )

    def run(alias: str) -> subprocess.CompletedProcess[str]:
        script.write_text(code.format(alias=alias))
        return subprocess.run(
            [sys.executable, str(script), str(tmp_path / "store")],
            capture_output=True,
            text=True,
            check=True,
        )

    assert run("a").stdout == "[1, 2, 3] [1, 2, 3] 3\n"
    again = run("list(a)")  # the fix: a copy, equal to the alias before the call
    assert again.stdout == "[1, 2] [1, 2, 3] 3\n"  # as a plain run shows
    assert "running 'g' again: which inputs are one object changed" in again.stderr
