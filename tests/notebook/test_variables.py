"""Which variables a ``%%step`` cell saves: found from the namespace diff and the cell's AST."""

from __future__ import annotations

import copy
import types
from typing import Any

import pytest


def _saved_variables(saved: Any, key: str) -> list[str]:
    return list(saved()[key].variables)


def test_new_and_rebound_names_are_saved_and_restored(
    ip: Any, run: Any, marks: Any, restart: Any, saved: Any
) -> None:
    ip.user_ns["old"] = 1
    cell = "%%step key=v\nnew = 10\nold = 2\nmark()"
    assert run(cell).result.success

    assert _saved_variables(saved, "v") == ["new", "old"]
    restart()
    ip.user_ns["old"] = 1
    assert run(cell).result.success
    assert marks.count() == 1
    assert (ip.user_ns["new"], ip.user_ns["old"]) == (10, 2)


# (setup, cell body, expected saved name, check after the restore)
IN_PLACE = [
    pytest.param(
        {"rows": [0]},
        "rows.append(1)",
        "rows",
        lambda ns: ns["rows"] == [0, 1],
        id="method-call-receiver",
    ),
    pytest.param(
        {"cfg": {}},
        "cfg['a'] = 1",
        "cfg",
        lambda ns: ns["cfg"] == {"a": 1},
        id="subscript-store",
    ),
    pytest.param(
        {"obj": types.SimpleNamespace()},
        "obj.value = 3",
        "obj",
        lambda ns: getattr(ns["obj"], "value", None) == 3,
        id="attribute-store",
    ),
    pytest.param(
        {"acc": [1]},
        "acc += [2]",
        "acc",
        lambda ns: ns["acc"] == [1, 2],
        id="augmented-in-place",
    ),
    pytest.param(
        {"n": 1},
        "n += 1",
        "n",
        lambda ns: ns["n"] == 2,
        id="augmented-rebinding",
    ),
    pytest.param(
        {"grid": [[0, 0]]},
        "grid[0].append(5)",
        "grid",
        lambda ns: ns["grid"] == [[0, 0, 5]],
        id="nested-receiver",
    ),
]


@pytest.mark.parametrize(("setup", "body", "name", "check"), IN_PLACE)
def test_variables_changed_in_place_are_saved_and_restored(
    ip: Any,
    run: Any,
    marks: Any,
    restart: Any,
    saved: Any,
    setup: dict[str, Any],
    body: str,
    name: str,
    check: Any,
) -> None:
    ip.user_ns.update(copy.deepcopy(setup))
    cell = f"%%step key=inplace\n{body}\nmark()"
    ran = run(cell)
    assert ran.result.success, ran.error
    assert _saved_variables(saved, "inplace") == [name]

    # Restart: the earlier cells ran again, so the variable has its old value.
    restart()
    ip.user_ns.update(copy.deepcopy(setup))
    assert not check(ip.user_ns)
    assert run(cell).result.success

    assert marks.count() == 1
    assert check(ip.user_ns)


BINDINGS = [
    pytest.param("import json as j", ["j"], "j.dumps([1]) == '[1]'", id="import-as"),
    pytest.param("from os import path", ["path"], "path.join('a', 'b')", id="from-import"),
    pytest.param("def f(x):\n    return x * 2", ["f"], "f(21) == 42", id="def"),
    pytest.param(
        "class C:\n    def m(self):\n        return 'm'", ["C"], "C().m() == 'm'", id="class"
    ),
    pytest.param("for i in range(3):\n    pass", ["i"], "i == 2", id="for-target"),
    pytest.param(
        "total = 0\nfor k, v in [('a', 1), ('b', 2)]:\n    total += v",
        ["k", "total", "v"],
        "(k, v, total) == ('b', 2, 3)",
        id="for-tuple-target",
    ),
    pytest.param(
        "import contextlib\nwith contextlib.nullcontext(5) as five:\n    pass",
        ["contextlib", "five"],
        "five == 5",
        id="with-target",
    ),
    pytest.param("if (w := 7):\n    pass", ["w"], "w == 7", id="walrus"),
]


@pytest.mark.parametrize(("body", "names", "check"), BINDINGS)
def test_bound_names_are_saved_and_restored(
    ip: Any,
    run: Any,
    marks: Any,
    restart: Any,
    saved: Any,
    body: str,
    names: list[str],
    check: str,
) -> None:
    cell = f"%%step key=bind\n{body}\nmark()"
    ran = run(cell)
    assert ran.result.success, ran.error
    assert _saved_variables(saved, "bind") == names

    restart()
    for name in names:
        assert name not in ip.user_ns
    assert run(cell).result.success

    assert marks.count() == 1
    assert eval(check, ip.user_ns)


def test_repeated_import_of_an_existing_name_is_saved(
    ip: Any, run: Any, marks: Any, saved: Any
) -> None:
    import json

    ip.user_ns["json"] = json  # same object before and after: the diff alone misses it
    assert run("%%step key=imp\nimport json\nmark()").result.success

    assert _saved_variables(saved, "imp") == ["json"]


def test_variables_the_cell_only_reads_are_not_saved(
    ip: Any, run: Any, marks: Any, saved: Any
) -> None:
    ip.user_ns.update(source=[1, 2, 3], factor=10, untouched={"a": 1})
    ran = run(
        "%%step key=reads\n"
        "result = sum(source) * factor\n"
        "size = len(untouched)\n"
        "squares = [x * x for x in source]\n"
        "mark()"
    )

    assert ran.result.success, ran.error
    assert _saved_variables(saved, "reads") == ["result", "size", "squares"]
    assert "x" not in ip.user_ns  # comprehension variables are local


def test_outputs_option_saves_only_the_named_variables(
    ip: Any, run: Any, marks: Any, restart: Any, saved: Any
) -> None:
    cell = "%%step key=out outputs=a,b\na = 1\nb = 2\nscratch = 3\nmark()"
    assert run(cell).result.success

    assert _saved_variables(saved, "out") == ["a", "b"]
    restart()
    assert run(cell).result.success
    assert marks.count() == 1
    assert (ip.user_ns["a"], ip.user_ns["b"]) == (1, 2)
    assert "scratch" not in ip.user_ns


def test_exclude_option_leaves_variables_out(
    ip: Any, run: Any, marks: Any, restart: Any, saved: Any
) -> None:
    cell = "%%step key=exc exclude=scratch,tmp\na = 1\nscratch = 3\ntmp = 4\nmark()"
    assert run(cell).result.success

    assert _saved_variables(saved, "exc") == ["a"]
    restart()
    assert run(cell).result.success
    assert marks.count() == 1
    assert ip.user_ns["a"] == 1
    assert "scratch" not in ip.user_ns


def test_deleted_variables_are_deleted_again_on_restore(
    ip: Any, run: Any, marks: Any, restart: Any
) -> None:
    ip.user_ns["temp"] = "big"
    cell = "%%step key=del\nkept = len(temp)\ndel temp\nmark()"
    assert run(cell).result.success
    assert "temp" not in ip.user_ns

    restart()
    ip.user_ns["temp"] = "big"
    assert run(cell).result.success
    assert marks.count() == 1
    assert ip.user_ns["kept"] == 3
    assert "temp" not in ip.user_ns


def test_shared_references_stay_shared(ip: Any, run: Any, marks: Any, restart: Any) -> None:
    cell = "%%step key=alias\nrows = [1]\nalias = rows\nmark()"
    assert run(cell).result.success
    restart()

    assert run(cell).result.success

    assert marks.count() == 1
    assert ip.user_ns["alias"] is ip.user_ns["rows"]


def test_a_variable_holding_what_a_step_s_output_holds_stays_shared_with_it(
    ip: Any, run: Any, marks: Any, restart: Any, saved: Any
) -> None:
    cells = [
        "%%step key=make\na = [0]\nb = {'ref': a}\nmark()",
        "%%step key=pair\nc = [a, a]\nmark()",
        "%%step key=grow\na.append(1)\nmark()",
    ]
    for cell in cells:
        assert run(cell).result.success
    assert _saved_variables(saved, "pair") == ["a", "b", "c"]  # b holds the a that c holds

    restart()
    for cell in cells:
        assert run(cell).result.success

    assert marks.count() == 3  # all three restored
    ns = ip.user_ns
    assert ns["b"]["ref"] is ns["a"] is ns["c"][0] is ns["c"][1]
    assert ns["b"] == {"ref": [0, 1]}


def test_an_edit_to_a_holder_saved_with_a_later_step_runs_that_step_again(
    ip: Any, run: Any, marks: Any, restart: Any, saved: Any
) -> None:
    make = "%%step key=make\nmodel = [0]"
    config = "config = {'model': model, 'lr': 0.1}"
    fit = "%%step key=fit\nmodel.append(1)\nmark()"
    for cell in (make, config, fit):
        assert run(cell).result.success
    assert _saved_variables(saved, "fit") == ["config", "model"]  # config holds model

    restart()
    for cell in (make, config, fit):  # unchanged: restored
        assert run(cell).result.success
    assert marks.count() == 1

    restart()
    for cell in (make, config.replace("0.1", "0.2"), fit):
        ran = run(cell)
    assert marks.count() == 2
    assert any("config changed since the step saved it" in n for n in ran.notes), ran.notes
    ns = ip.user_ns
    assert ns["config"] == {"model": [0, 1], "lr": 0.2} and ns["config"]["model"] is ns["model"]


def test_arrays_viewing_the_memory_a_step_changed_in_place_are_saved_with_it(
    ip: Any, run: Any, marks: Any, restart: Any, saved: Any
) -> None:
    setup = "import numpy as np\ndata = np.arange(10.0)\ntrain, test = data[:7], data[7:]"
    cell = "%%step key=center\ntrain -= train.mean()\nmark()"
    assert run(setup).result.success
    assert run(cell).result.success
    assert _saved_variables(saved, "center") == ["data", "test", "train"]

    restart()
    assert run(setup).result.success
    assert run(cell).result.success

    assert marks.count() == 1
    ns = ip.user_ns
    assert ns["data"].tolist() == [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 7.0, 8.0, 9.0]
    ns["data"][0] = 99.0  # still views of one memory, as after a run
    assert (ns["train"][0], ns["test"].base is not None) == (99.0, True)

    restart()  # an edit that copies the slice: data no longer changes with train
    assert run(setup.replace("data[:7]", "data[:7].copy()")).result.success
    assert run(cell).result.success
    assert marks.count() == 2
    assert ip.user_ns["data"][0] == 0.0


def test_a_view_a_step_made_of_a_variable_s_array_stays_a_view_of_it(
    ip: Any, run: Any, marks: Any, restart: Any, saved: Any
) -> None:
    setup = "import numpy as np\nX = np.arange(10.0)"
    split = "%%step key=split\nhead = X[:3]\nmark()"
    center = "%%step key=center\nhead -= 1\nmark()"
    for cell in (setup, split, center):
        assert run(cell).result.success
    assert _saved_variables(saved, "split") == ["X", "head"]

    restart()
    for cell in (setup, split, center):
        assert run(cell).result.success

    assert marks.count() == 2  # both restored
    ns = ip.user_ns
    assert ns["X"].tolist() == [-1.0, 0.0, 1.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    ns["X"][0] = 99.0
    assert ns["head"][0] == 99.0


@pytest.mark.parametrize("line", ["%time y = 2", "!echo hi"], ids=["line-magic", "shell-escape"])
def test_cells_with_ipython_syntax_are_saved(
    ip: Any, run: Any, marks: Any, restart: Any, saved: Any, line: str
) -> None:
    cell = f"%%step key=ipy\nx = 1\n{line}\nmark()"
    ran = run(cell)

    assert ran.result.success, ran.error
    assert "get_ipython" not in saved()["ipy"].variables
    restart()
    assert run(cell).result.success
    assert marks.count() == 1
    assert ip.user_ns["x"] == 1


def test_top_level_await_in_the_body_runs_as_in_a_plain_cell(
    ip: Any, run: Any, marks: Any, saved: Any
) -> None:
    plain = run("import asyncio\nawait asyncio.sleep(0)\nplain = 1")
    assert plain.result.success, plain.error  # IPython allows it in a normal cell

    ran = run("%%step key=aw\nimport asyncio\nawait asyncio.sleep(0)\nz = 3\nmark()")

    assert ran.error is None, ran.error
    assert marks.count() == 1 and ip.user_ns["z"] == 3
    assert "z" in saved()["aw"].variables


def test_an_object_only_read_through_its_methods_stays_the_same_object(
    ip: Any, run: Any, marks: Any, restart: Any
) -> None:
    run("a = [1, 2]\nb = a")
    run("%%step key=count\nmark()\nn = a.count(1)\nimport math\nr = math.sqrt(4)")
    restart()
    run("a = [1, 2]\nb = a")
    ran = run("%%step key=count\nmark()\nn = a.count(1)\nimport math\nr = math.sqrt(4)")
    assert marks.count() == 1
    assert any("restored 'count' (math, n, r)" in note for note in ran.notes), ran.notes
    run("a.append(3)")
    assert ip.user_ns["b"] is ip.user_ns["a"] == [1, 2, 3]  # the alias holds, as in a plain run


def test_an_object_changed_through_its_methods_is_saved(
    ip: Any, run: Any, marks: Any, restart: Any
) -> None:
    run("rows = []")
    run("%%step key=grow\nmark()\nrows.append(1)")
    restart()
    run("rows = []")
    ran = run("%%step key=grow\nmark()\nrows.append(1)")
    assert marks.count() == 1 and ip.user_ns["rows"] == [1]
    assert any("restored 'grow' (rows)" in note for note in ran.notes)


def test_a_file_closed_by_its_with_block_is_left_out_not_an_error(
    ip: Any, run: Any, marks: Any, restart: Any, tmp_path: Any
) -> None:
    data = tmp_path / "words.txt"
    data.write_text("a b c")
    ip.user_ns["path"] = str(data)
    cell = "%%step key=read\nmark()\nwith open(path) as f:\n    words = f.read().split()"
    ran = run(cell)
    assert ran.error is None and not [w for w in ran.stderr.splitlines() if "CacheWarning" in w]
    restart()
    ip.user_ns["path"] = str(data)
    ran = run(cell)
    assert marks.count() == 1 and ip.user_ns["words"] == ["a", "b", "c"]
    assert any("restored 'read' (words)" in note for note in ran.notes)


def test_a_global_changed_by_a_function_the_step_calls_is_saved_and_restored(
    ip: Any, run: Any, marks: Any, restart: Any
) -> None:
    helpers = (
        "log = []\ncache = {}\n"
        "def record(m):\n    log.append(m)\n    remember(m)\n"
        "def remember(m):\n    cache[m] = len(m)"
    )
    cell = "%%step key=s\nmark()\nrecord('hi')\nv = 1"
    run(helpers)
    run(cell)
    restart()
    run(helpers)
    ran = run(cell)
    assert marks.count() == 1
    assert ip.user_ns["log"] == ["hi"] and ip.user_ns["cache"] == {"hi": 2}
    assert any("restored 's' (cache, log, v)" in note for note in ran.notes), ran.notes


def test_loop_comprehension_and_parameter_names_are_not_inputs(
    ip: Any, run: Any, marks: Any
) -> None:
    cell = (
        "%%step key=scopes\nmark()\nacc = []\nfor v in range(3):\n    acc.append(v)\n"
        "squares = [j * j for j in acc]\nshift = lambda q: q + 1\n"
        "def total(xs, start=0):\n    s = start\n    for x in xs:\n        s += x\n    return s\n"
        "with open(__file__) if False else open('/dev/null') as handle:\n    pass\n"
    )
    assert run(cell).error is None
    run("j = 5\nq = 1\nx = 2\ns = 3\nxs = []")  # the same names, defined outside
    again = run(cell)
    assert marks.count() == 1, again.notes  # restored: none of them is an input
    assert any("restored 'scopes'" in n for n in again.notes)
    assert ip.user_ns["squares"] == [0, 1, 4]


def test_a_global_read_inside_a_function_or_lambda_stays_an_input(
    ip: Any, run: Any, marks: Any
) -> None:
    cell = "%%step key=reads\nmark()\nf = lambda q: q + rate\nvalue = f(1)"
    run("rate = 2")
    run(cell)
    run("rate = 3")
    again = run(cell)
    assert marks.count() == 2, again.notes  # rate changed: run again
    assert ip.user_ns["value"] == 4


def test_a_holder_that_cannot_be_saved_with_a_step_makes_its_replay_run_again(
    ip: Any, run: Any, marks: Any, restart: Any
) -> None:
    setup = "import threading\ndata = [1]\nctx = {'data': data, 'lock': threading.Lock()}"
    cell = "%%step key=grow\ndata.append(2)\nmark()"
    assert run(setup).result.success
    assert run(cell).result.success

    restart()
    assert run(setup).result.success
    ran = run(cell)
    assert marks.count() == 2  # a replay would leave ctx holding the list it replaced
    assert any("ctx holds what it saved but could not be saved" in n for n in ran.notes), ran.notes
    assert ip.user_ns["ctx"]["data"] is ip.user_ns["data"] == [1, 2]


def test_a_variable_holding_an_element_an_output_list_holds_is_saved_with_it(
    ip: Any, run: Any, marks: Any, restart: Any, saved: Any
) -> None:
    cells = [
        "%%step key=make\nimport numpy as np\n"
        "parts = {'p3': np.full(4, 3.0), 'p7': np.full(4, 7.0)}",
        "%%step key=pick\nsel = [parts['p3']]\nmark()",
        "%%step key=bump\nsel[0] += 1\nmark()",
    ]
    for cell in cells:
        assert run(cell).result.success
    assert "parts" in _saved_variables(saved, "pick")

    restart()
    for cell in cells:
        assert run(cell).result.success
    assert marks.count() == 2  # both restored
    ns = ip.user_ns
    assert ns["sel"][0] is ns["parts"]["p3"]
    assert ns["parts"]["p3"].tolist() == [4.0] * 4  # the bump reached it, as in a run
