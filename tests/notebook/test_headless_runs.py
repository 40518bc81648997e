"""Headless runs the way teams schedule them: papermill, nbconvert, several notebooks.

A headless kernel cannot tell which notebook it runs, so every notebook in a
folder shares the workflow ``default``. These tests prove that sharing is
safe: a step is restored only for the same code and the same inputs, and
papermill parameters are ordinary inputs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

pytestmark = pytest.mark.timeout(300)

SETUP = """%load_ext awaitly_nb
import os

def ran(name):
    with open(os.environ["RUN_LOG"], "a") as log:
        log.write(name + "\\n")"""

FIT = '%%step key=fit\nran("fit")\nmodel = [n * i for i in range(3)]\nprint(model)'
DOUBLE = '%%step key=double\nran("double")\nprint([2 * m for m in model])'
OTHER = '%%step key=other\nran("other")\nprint(sum(range(10)))'


class Folder:
    """A folder of notebooks sharing one store, with a log of the steps that ran."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.log = path / "ran.log"
        self.env = {
            **os.environ,
            "AWAITLY_NB_DIR": str(path / "store"),
            "RUN_LOG": str(self.log),
            "PYTHONHASHSEED": "random",
        }

    def notebook(self, name: str, cells: list[str], parameters: str | None = None) -> Path:
        nb = new_notebook(cells=[new_code_cell(source) for source in cells])
        if parameters is not None:
            cell = new_code_cell(parameters)
            cell.metadata["tags"] = ["parameters"]
            nb.cells.insert(1, cell)
        nb.metadata["kernelspec"] = {
            "name": "python3",
            "display_name": "Python 3",
            "language": "python",
        }
        nb.metadata["language_info"] = {"name": "python"}
        target = self.path / name
        nbformat.write(nb, target)
        return target

    def ran(self) -> list[str]:
        """The steps whose bodies ran since the last call."""
        names = self.log.read_text().split() if self.log.exists() else []
        self.log.unlink(missing_ok=True)
        return names

    def papermill(self, notebook: Path, output: str, **parameters: int) -> list[str]:
        args = [sys.executable, "-m", "papermill", str(notebook), str(self.path / output)]
        for name, value in parameters.items():
            args += ["-p", name, str(value)]
        done = subprocess.run(
            [*args, "--cwd", str(self.path), "--no-progress-bar", "--kernel", "python3"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return streams(self.path / output)

    def nbconvert(self, notebook: Path, output: str) -> list[str]:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "nbconvert",
                "--to",
                "notebook",
                "--execute",
                "--ExecutePreprocessor.kernel_name=python3",
                "--output",
                output,
                str(notebook),
            ],
            env=self.env,
            cwd=self.path,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return streams(self.path / output)


def streams(path: Path) -> list[str]:
    """What a reader of the executed notebook sees printed, cell by cell (notes left out)."""
    nb = nbformat.read(path, as_version=4)
    return [
        "".join(
            out.get("text", "")
            for out in cell.get("outputs", [])
            if out.get("output_type") == "stream" and out.get("name") == "stdout"
        )
        for cell in nb["cells"]
    ]


def notes(path: Path) -> list[str]:
    nb = nbformat.read(path, as_version=4)
    return [
        out["data"]["text/plain"]
        for cell in nb["cells"]
        for out in cell.get("outputs", [])
        if "awaitly_nb" in out.get("metadata", {})
    ]


@pytest.fixture
def folder(tmp_path: Path) -> Folder:
    return Folder(tmp_path)


def test_a_papermill_parameter_reruns_exactly_the_steps_that_read_it(folder: Folder) -> None:
    nb = folder.notebook("report.ipynb", [SETUP, FIT, DOUBLE, OTHER], parameters="n = 3")
    first = folder.papermill(nb, "out3.ipynb", n=3)
    assert folder.ran() == ["fit", "double", "other"]
    # papermill inserts its "injected-parameters" cell after ours: fit is cell 3.
    assert "[0, 3, 6]" in first[3]

    second = folder.papermill(nb, "out4.ipynb", n=4)
    # `double` reads `model`, which `fit` recomputed with other values: it runs too.
    assert folder.ran() == ["fit", "double"]
    assert any(
        "running 'fit' again: n changed (3 → 4)" in n for n in notes(folder.path / "out4.ipynb")
    )
    assert "[0, 4, 8]" in second[3] and "[0, 8, 16]" in second[4]

    again = folder.papermill(nb, "out3-again.ipynb", n=3)  # the n=3 variant is kept
    assert folder.ran() == []
    assert again == first


def test_nbconvert_execute_twice_restores_every_step_with_the_same_outputs(
    folder: Folder,
) -> None:
    nb = folder.notebook("job.ipynb", [SETUP, "n = 2", FIT, DOUBLE, OTHER])
    first = folder.nbconvert(nb, "run1.ipynb")
    assert folder.ran() == ["fit", "double", "other"]
    second = folder.nbconvert(nb, "run2.ipynb")
    assert folder.ran() == []
    assert second == first
    assert any("restored" in n for n in notes(folder.path / "run2.ipynb"))


def test_two_headless_notebooks_sharing_a_key_never_restore_each_others_results(
    folder: Folder,
) -> None:
    a = folder.notebook("a.ipynb", [SETUP, "n = 3", FIT])
    b = folder.notebook("b.ipynb", [SETUP, "n = 4", FIT])
    a_out = folder.nbconvert(a, "a-1.ipynb")
    b_out = folder.nbconvert(b, "b-1.ipynb")
    assert folder.ran() == ["fit", "fit"]
    assert "[0, 3, 6]" in a_out[2] and "[0, 4, 8]" in b_out[2]
    # Each notebook runs again on the same store: each replays its own result.
    assert folder.nbconvert(a, "a-2.ipynb") == a_out
    assert folder.nbconvert(b, "b-2.ipynb") == b_out
    assert folder.ran() == []


def test_two_headless_notebooks_with_the_same_code_and_inputs_share_the_result(
    folder: Folder,
) -> None:
    a = folder.notebook("a.ipynb", [SETUP, "n = 3", FIT])
    b = folder.notebook("b.ipynb", [SETUP, "n = 3", FIT])
    a_out = folder.nbconvert(a, "a-1.ipynb")
    assert folder.ran() == ["fit"]
    assert folder.nbconvert(b, "b-1.ipynb") == a_out
    assert folder.ran() == []
