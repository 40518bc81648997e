"""Process-wide state a step changes is replayed; a seeded generator's state is an input."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from awaitly_nb.core.process import STATES, apply_changes, changes, snapshot


def test_environment_directory_and_pandas_options_changed_by_a_step_are_replayed(
    ip: Any, run: Any, marks: Any, restart: Any, tmp_path: Path
) -> None:
    here = os.getcwd()
    sub = tmp_path / "work"
    sub.mkdir()
    ip.user_ns["sub"] = str(sub)
    cell = (
        "%%step key=setup\nmark()\nimport os, pandas as pd\n"
        "os.environ['AWAITLY_TEST_VAR'] = 'on'\nos.chdir(sub)\n"
        "pd.set_option('display.precision', 2)\ndone = True"
    )
    try:
        assert run(cell).error is None
        os.environ.pop("AWAITLY_TEST_VAR")
        os.chdir(here)
        pd.reset_option("display.precision")
        restart()
        ip.user_ns["sub"] = str(sub)
        ran = run(cell)
        assert marks.count() == 1 and any("restored" in n for n in ran.notes)
        assert os.environ["AWAITLY_TEST_VAR"] == "on"
        assert os.getcwd() == str(sub)
        assert pd.get_option("display.precision") == 2
    finally:
        os.environ.pop("AWAITLY_TEST_VAR", None)
        os.chdir(here)
        pd.reset_option("display.precision")


def test_a_seeded_generator_is_advanced_by_a_replay_and_its_seed_is_an_input(
    ip: Any, run: Any, marks: Any, restart: Any
) -> None:
    draw = "%%step key=draw\nmark()\nimport numpy as np\ny = np.random.rand(3)"
    run("import numpy as np\nnp.random.seed(0)", store_history=True)
    run(draw)
    after_first = ip.user_ns["np"].random.rand(2)
    restart()
    run("import numpy as np\nnp.random.seed(0)", store_history=True)
    assert any("restored" in n for n in run(draw).notes)
    assert (ip.user_ns["np"].random.rand(2) == after_first).all()  # as a real run leaves it
    assert marks.count() == 1
    restart()
    run("import numpy as np\nnp.random.seed(1)", store_history=True)
    ran = run(draw)
    assert marks.count() == 2
    assert any("the numpy.random state before it changed" in n for n in ran.notes), ran.notes


def test_registered_state_is_recorded_and_applied() -> None:
    box = {"v": 1}
    from awaitly_nb import register_process_state

    register_process_state("test.box", lambda: box["v"], lambda v: box.update(v=v))
    try:
        before = snapshot()
        box["v"] = 5
        assert changes(before, snapshot()) == {"test.box": 5}
        box["v"] = 1
        assert apply_changes({"test.box": 5}) == [] and box["v"] == 5
        assert apply_changes({"unknown.state": 1}) == [
            "unknown.state: not registered in this process"
        ]
    finally:
        del STATES["test.box"]


def test_rcparams_sys_path_warnings_filters_and_recursion_limit_are_replayed(
    ip: Any, run: Any, marks: Any, restart: Any, tmp_path: Path
) -> None:
    import sys
    import warnings

    import matplotlib

    ip.user_ns["extra"] = str(tmp_path)
    cell = (
        "%%step key=settings\nmark()\nimport sys, warnings, matplotlib\n"
        "matplotlib.rcParams['lines.linewidth'] = 7.5\nsys.path.append(extra)\n"
        "warnings.filterwarnings('ignore', message='awaitly-test')\n"
        "sys.setrecursionlimit(4321)\ndone = 1"
    )
    limit, width = sys.getrecursionlimit(), matplotlib.rcParams["lines.linewidth"]
    filters = list(warnings.filters)
    try:
        assert run(cell).error is None
        matplotlib.rcParams["lines.linewidth"] = width  # a new kernel
        sys.path.remove(str(tmp_path))
        warnings.filters[:] = filters
        sys.setrecursionlimit(limit)
        restart()
        ip.user_ns["extra"] = str(tmp_path)
        assert any("restored" in n for n in run(cell).notes)
        assert marks.count() == 1
        assert matplotlib.rcParams["lines.linewidth"] == 7.5
        assert str(tmp_path) in sys.path
        assert any(f[1] is not None and f[1].pattern == "awaitly-test" for f in warnings.filters)
        assert sys.getrecursionlimit() == 4321
    finally:
        matplotlib.rcParams["lines.linewidth"] = width
        if str(tmp_path) in sys.path:
            sys.path.remove(str(tmp_path))
        warnings.filters[:] = filters
        sys.setrecursionlimit(limit)


CALL_STEP = """
import os, random, sys
import numpy as np
import awaitly_nb
awaitly_nb.configure(dir=sys.argv[1], workflow="w")
random.seed(SEED)
np.random.seed(SEED)

def draw():
    os.environ["AWAITLY_TEST_DRAWN"] = "yes"
    return random.random(), float(np.random.rand())

value = awaitly_nb.step(draw, key="draw")
print(repr([value, random.random(), float(np.random.rand()), os.environ.get("AWAITLY_TEST_DRAWN")]))
"""


def _script(tmp_path: Path, seed: int, *, plain: bool = False) -> tuple[list[Any], str]:
    import ast
    import subprocess
    import sys

    code = CALL_STEP.replace("SEED", str(seed))
    if plain:  # the same script without awaitly_nb: what a replay must show
        code = code.replace('awaitly_nb.step(draw, key="draw")', "draw()")
    path = tmp_path / f"script_{seed}_{plain}.py"
    path.write_text(code)
    env = {k: v for k, v in os.environ.items() if k != "AWAITLY_TEST_DRAWN"}
    done = subprocess.run(
        [sys.executable, str(path), str(tmp_path / "store")],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return ast.literal_eval(done.stdout.strip()), done.stderr


def test_a_call_step_in_a_script_replays_the_generators_and_environment_it_changed(
    tmp_path: Path,
) -> None:
    plain, _ = _script(tmp_path, 1, plain=True)
    first, _ = _script(tmp_path, 1)
    second, _ = _script(tmp_path, 1)
    assert first == plain
    # The step did not run (its value is the saved one), yet the code after it
    # draws the numbers a real run draws, and sees the variable it set.
    assert second == plain


def test_the_seed_before_a_call_step_that_draws_is_one_of_its_inputs(tmp_path: Path) -> None:
    _script(tmp_path, 1)
    reseeded, _ = _script(tmp_path, 2)
    assert reseeded == _script(tmp_path, 2, plain=True)[0]
    assert reseeded[0] != _script(tmp_path, 1, plain=True)[0][0]


def test_numpy_print_options_and_the_decimal_context_set_by_a_step_are_replayed(
    ip: Any, run: Any, marks: Any, restart: Any
) -> None:
    import decimal

    import numpy as np

    cell = (
        "%%step key=formats\nmark()\n"
        "np.set_printoptions(precision=2)\ndecimal.getcontext().prec = 3\n"
        "decimal.getcontext().traps[decimal.Inexact] = True"
    )
    shown = "print(np.array([1 / 3]), decimal.Decimal(1) / decimal.Decimal(8))"
    run("import numpy as np, decimal")
    try:
        assert run(cell).error is None
        first = run(shown).stdout
        np.set_printoptions(precision=8)
        decimal.setcontext(decimal.Context())
        restart()
        run("import numpy as np, decimal")
        ran = run(cell)
        assert marks.count() == 1 and any("restored" in n for n in ran.notes)
        assert run(shown).stdout == first == "[0.33] 0.125\n"
        assert decimal.getcontext().traps[decimal.Inexact]
    finally:
        np.set_printoptions(precision=8)
        decimal.setcontext(decimal.Context())


SETUP_STEP = """
import sys, awaitly_nb
awaitly_nb.configure(dir=sys.argv[1], workflow="w")
with awaitly_nb.step("setup"):
    import numpy as np  # imported by the step that sets its options
    np.set_printoptions(precision=2)
    np.seterr(divide="ignore")
print(np.array([1 / 3]), np.geterr()["divide"])
"""


def test_settings_of_a_library_the_same_step_imports_are_set_again_by_its_replay(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys

    script = tmp_path / "setup.py"
    script.write_text(SETUP_STEP)
    runs = [
        subprocess.run(
            [sys.executable, str(script), str(tmp_path / "store")],
            capture_output=True,
            text=True,
            check=True,
        )
        for _ in range(2)
    ]
    assert "restored" in runs[1].stderr
    assert [r.stdout for r in runs] == ["[0.33] ignore\n"] * 2


def test_scikit_learns_config_changed_by_a_step_is_replayed(monkeypatch: Any) -> None:
    import types

    config = {"display": "diagram", "print_changed_only": True}
    fake = types.ModuleType("sklearn")
    fake.get_config = lambda: dict(config)  # type: ignore[attr-defined]
    fake.set_config = config.update  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sklearn", fake)
    before = snapshot()
    config["display"] = "text"  # the step calls set_config(display="text")
    changed = changes(before, snapshot())
    assert changed["sklearn.config"] == {"set": {"display": "text"}, "unset": []}
    config["display"] = "diagram"  # a new kernel
    assert apply_changes(changed) == [] and config["display"] == "text"


def test_scikit_learns_display_options_are_settings_a_step_s_output_follows(
    monkeypatch: Any,
) -> None:
    import types

    from awaitly_nb.core.process import settings

    config = {"display": "diagram", "print_changed_only": True, "assume_finite": False}
    fake = types.ModuleType("sklearn")
    fake.get_config = lambda: dict(config)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sklearn", fake)
    assert "sklearn.display" not in settings()  # at their defaults
    config["assume_finite"] = True  # not about how estimators show
    assert "sklearn.display" not in settings()
    config["print_changed_only"] = False
    assert settings()["sklearn.display"] == {"print_changed_only": False}


LOGGING_STEP = """
import logging, sys, awaitly_nb
awaitly_nb.configure(dir=sys.argv[1], workflow="w")
with awaitly_nb.step("log"):
    logging.basicConfig(level=logging.INFO, format="LOG %(levelname)s %(message)s")
logging.info("after the step")
N = 1
with awaitly_nb.step("work"):
    logging.info(f"working on {N}")
"""


def test_logging_set_up_by_a_step_is_set_up_again_by_its_replay(tmp_path: Path) -> None:
    import subprocess

    script = tmp_path / "log.py"
    runs = []
    for n in (1, 1, 2, 2):  # the last two: 'work' runs after 'log' replayed, then replays
        script.write_text(LOGGING_STEP.replace("N = 1", f"N = {n}"))
        runs.append(
            subprocess.run(
                [sys.executable, str(script), str(tmp_path / "store")],
                capture_output=True,
                text=True,
                check=True,
            ).stderr
        )
    assert "restored 'log'" in runs[1] and "restored 'work'" in runs[3], runs
    assert all("LOG INFO after the step" in r for r in runs), runs
    assert "LOG INFO working on 2" in runs[2] and "LOG INFO working on 2" in runs[3], runs


def test_a_cell_after_an_edited_setting_runs_again_and_an_unedited_one_replays(
    ip: Any, run: Any, marks: Any, restart: Any
) -> None:
    setup = "%%step key=setup\npd.set_option('display.precision', {})"
    show = "%%step key=show\nmark()\nprint(pd.Series([1.23456]).to_string())"
    try:
        run("import pandas as pd")
        run(setup.format(2))
        assert run(show).stdout == "0    1.23\n"
        for precision, shown, ran in ((2, "0    1.23\n", 1), (4, "0    1.2346\n", 2)):
            pd.reset_option("display.precision")
            restart()
            run("import pandas as pd")
            run(setup.format(precision))
            again = run(show)
            assert again.stdout == shown and marks.count() == ran, again.notes
        assert any("settings made before it changed" in n for n in again.notes), again.notes
    finally:
        pd.reset_option("display.precision")


def test_a_cell_after_an_added_warnings_filter_runs_again(
    ip: Any, run: Any, marks: Any, restart: Any
) -> None:
    show = "%%step key=warns\nmark()\nimport warnings\nwarnings.warn('careful', UserWarning)\nx = 1"
    with warnings.catch_warnings():
        warnings.simplefilter("default", UserWarning)
        run(show)
        restart()
        run(show)
        assert marks.count() == 1  # replayed
        restart()
        warnings.filterwarnings("ignore")  # an edited plain cell before it: no warning now
        again = run(show)
        assert marks.count() == 2
        assert any("settings made before it changed" in n for n in again.notes), again.notes
        restart()
        warnings.filterwarnings("ignore", message="a library's own")  # one message: not compared
        run(show)
        assert marks.count() == 2


def test_a_cell_after_an_edited_ipython_display_setting_runs_again(
    ip: Any, run: Any, marks: Any, restart: Any
) -> None:
    show = "%%step key=shown\nmark()\nd = {'a': 1}\nd"
    plain = ip.display_formatter.formatters["text/plain"]
    try:
        run(show)
        restart()
        run(show)
        assert marks.count() == 1  # replayed
        restart()
        plain.pprint = False  # `%pprint` in an earlier cell
        again = run(show)
        assert marks.count() == 2
        assert any("settings made before it changed" in n for n in again.notes), again.notes
    finally:
        plain.pprint = True


def test_a_replayed_cell_sets_ipython_display_settings_again(
    ip: Any, run: Any, marks: Any, restart: Any
) -> None:
    cell = "%%step key=display\nmark()\n%precision 3\n%pprint"
    plain = ip.display_formatter.formatters["text/plain"]
    try:
        run(cell)
        assert (plain.float_precision, plain.pprint) == ("3", False)
        plain.float_precision, plain.pprint = "", True  # a new kernel
        restart()
        ran = run(cell)
        assert any("restored" in n for n in ran.notes) and marks.count() == 1
        assert (plain.float_precision, plain.pprint) == ("3", False)
    finally:
        plain.float_precision, plain.pprint = "", True


PRINTER = (
    "from fractions import Fraction\n"
    "def show(x, p, cycle):\n    p.text({text})\n"
    "get_ipython().display_formatter.formatters['text/plain'].for_type(Fraction, show)"
)


def test_a_printer_the_notebook_registered_is_a_setting_and_set_again(
    ip: Any, run: Any, marks: Any, restart: Any
) -> None:
    from fractions import Fraction

    plain = ip.display_formatter.formatters["text/plain"]
    show = "%%step key=shown\nmark()\nFraction(1, 3)"
    try:
        assert run(PRINTER.format(text="f'{float(x):.3f}'")).error is None
        assert run(show).error is None
        restart()
        plain.type_printers.pop(Fraction)  # a new kernel
        assert run(PRINTER.format(text="f'{x.numerator}/{x.denominator}'")).error is None
        again = run(show)  # the edited printer: a plain run shows 1/3
        assert marks.count() == 2, again.notes
        assert any("settings made before it changed" in n for n in again.notes), again.notes

        cell = "%%step key=register\nmark()\n" + PRINTER.format(text="'third'")
        restart()
        plain.type_printers.pop(Fraction)  # a new kernel, where a step registers it
        assert run(cell).error is None
        restart()
        plain.type_printers.pop(Fraction)  # a new kernel
        assert any("restored" in n for n in run(cell).notes) and marks.count() == 3
        printer = _Printer()
        plain.lookup_by_type(Fraction)(Fraction(1, 3), printer, False)
        assert printer.shown == "third"  # registered again, as the run left it
    finally:
        plain.type_printers.pop(Fraction, None)


class _Printer:
    shown = ""

    def text(self, value: str) -> None:
        self.shown += value


BLOCK_STEP = """
import os, sys
import numpy as np
import awaitly_nb
from utils import set_seed
awaitly_nb.configure(dir=sys.argv[1], workflow="w")
set_seed(1)  # a helper of yours seeds the generator; no call named seed here
with awaitly_nb.step("draw"):
    x = np.random.rand(2).round(6).tolist()
    mode = os.environ.get("AWAITLY_TEST_MODE", "none")
print(repr([x, mode]))
"""


def _block_script(tmp_path: Path, offset: int, mode: str, *, plain: bool = False) -> list[Any]:
    import ast
    import subprocess
    import sys

    (tmp_path / "utils.py").write_text(
        f"import numpy as np\ndef set_seed(s):\n    np.random.seed(s + {offset})\n"
    )
    code = BLOCK_STEP
    if plain:
        code = code.replace('with awaitly_nb.step("draw"):', "if True:")
    path = tmp_path / "script.py"
    path.write_text(code)
    done = subprocess.run(
        [sys.executable, str(path), str(tmp_path / "store")],
        capture_output=True,
        text=True,
        env={**os.environ, "AWAITLY_TEST_MODE": mode},
        cwd=tmp_path,
        check=True,
    )
    return ast.literal_eval(done.stdout.strip())  # type: ignore[no-any-return]


def test_a_seed_set_through_a_helper_and_an_environment_variable_read_are_inputs(
    tmp_path: Path,
) -> None:
    assert _block_script(tmp_path, 1, "alpha") == _block_script(tmp_path, 1, "alpha", plain=True)
    assert _block_script(tmp_path, 2, "alpha") == _block_script(tmp_path, 2, "alpha", plain=True)
    assert _block_script(tmp_path, 2, "beta") == _block_script(tmp_path, 2, "beta", plain=True)
    assert _block_script(tmp_path, 2, "beta")[1] == "beta"  # restored now: nothing changed


def test_an_environment_variable_a_cell_reads_is_an_input(
    ip: Any, run: Any, marks: Any, restart: Any
) -> None:
    cell = "%%step key=mode\nimport os\nmark()\nmode = os.getenv('AWAITLY_TEST_MODE')"
    os.environ["AWAITLY_TEST_MODE"] = "alpha"
    try:
        run(cell)
        restart()
        run(cell)
        assert (marks.count(), ip.user_ns["mode"]) == (1, "alpha")
        restart()
        os.environ["AWAITLY_TEST_MODE"] = "beta"
        ran = run(cell)
        assert (marks.count(), ip.user_ns["mode"]) == (2, "beta")
        assert any("os.environ['AWAITLY_TEST_MODE'] changed" in n for n in ran.notes), ran.notes
    finally:
        os.environ.pop("AWAITLY_TEST_MODE", None)


def test_a_step_that_seeds_through_a_helper_does_not_depend_on_the_state_before_it(
    ip: Any, run: Any, marks: Any, restart: Any
) -> None:
    helper = "import numpy as np\ndef set_seed(s):\n    np.random.seed(s)"
    cell = "%%step key=init\nmark()\nset_seed(42)\nx = np.random.rand(2)"
    run(helper, store_history=True)
    run(cell, store_history=True)
    first = ip.user_ns["x"].tolist()
    restart()
    run(helper, store_history=True)
    run("np.random.rand(5)")  # another kernel: another state before the step
    ran = run(cell, store_history=True)
    assert marks.count() == 1, ran.notes  # restored: it seeds itself
    assert ip.user_ns["x"].tolist() == first
