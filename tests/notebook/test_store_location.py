"""Where steps are saved (configure, AWAITLY_NB_DIR, ./.awaitly) and under which workflow."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

import awaitly_nb
from awaitly_nb.config import get_session
from awaitly_nb.storage.local import LocalStore

CELL = "%%step key=where\nx = 1\nmark()"


def _keys(directory: Path, workflow: str | None = None) -> list[tuple[str, str]]:
    store = LocalStore(directory)
    try:
        return [(m.workflow, m.key) for m in store.manifests(workflow)]
    finally:
        store.close()


def test_configure_sets_the_directory_and_workflow(
    ip: Any, run: Any, marks: Any, tmp_path: Path
) -> None:
    awaitly_nb.configure(dir=tmp_path / "a", workflow="wf-a")
    assert run(CELL).result.success
    awaitly_nb.configure(dir=tmp_path / "b", workflow="wf-b")
    assert run(CELL).result.success  # another store: a miss

    assert marks.count() == 2
    assert _keys(tmp_path / "a") == [("wf-a", "where")]
    assert _keys(tmp_path / "b") == [("wf-b", "where")]

    awaitly_nb.configure(dir=tmp_path / "a", workflow="wf-a")
    assert run(CELL).result.success
    assert marks.count() == 2


def test_workflows_in_one_store_are_separate(ip: Any, run: Any, marks: Any, tmp_path: Path) -> None:
    awaitly_nb.configure(workflow="one")
    assert run(CELL).result.success
    awaitly_nb.configure(workflow="two")
    assert run(CELL).result.success

    assert marks.count() == 2
    assert sorted(_keys(tmp_path / "store")) == [("one", "where"), ("two", "where")]


def test_awaitly_nb_dir_is_honoured(
    ip: Any, run: Any, marks: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWAITLY_NB_DIR", str(tmp_path / "from-env"))
    awaitly_nb.configure(dir=None)

    assert run(CELL).result.success

    assert get_session().resolved_directory() == tmp_path / "from-env"
    assert _keys(tmp_path / "from-env") == [("test", "where")]
    assert not (tmp_path / "store").exists()


def test_configured_dir_wins_over_the_environment(
    ip: Any, run: Any, marks: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWAITLY_NB_DIR", str(tmp_path / "from-env"))
    awaitly_nb.configure(dir=tmp_path / "configured")

    assert run(CELL).result.success

    assert _keys(tmp_path / "configured") == [("test", "where")]
    assert not (tmp_path / "from-env").exists()


def test_default_is_dot_awaitly_in_the_working_directory(
    ip: Any, run: Any, marks: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    awaitly_nb.configure(dir=None)

    assert run(CELL).result.success

    assert _keys(tmp_path / ".awaitly") == [("test", "where")]


def test_workflow_from_jpy_session_name(
    ip: Any, run: Any, marks: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JPY_SESSION_NAME", "/x/y/analysis.ipynb")
    awaitly_nb.configure(workflow=None)

    assert run(CELL).result.success

    assert get_session().workflow_id() == "analysis.ipynb"
    assert _keys(tmp_path / "store") == [("analysis.ipynb", "where")]


def test_workflow_from_vscode_notebook_file(
    ip: Any, run: Any, marks: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    awaitly_nb.configure(workflow=None)
    ip.user_ns["__vsc_ipynb_file__"] = "/home/me/project/report.ipynb"

    assert run(CELL).result.success

    assert get_session().workflow_id() == "report.ipynb"
    assert _keys(tmp_path / "store") == [("report.ipynb", "where")]


def test_workflow_defaults_to_default(
    ip: Any, run: Any, marks: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    awaitly_nb.configure(workflow=None)
    # In a kernel, __main__ is ipykernel_launcher: not a notebook name.
    monkeypatch.setattr(
        sys.modules["__main__"],
        "__file__",
        "/venv/lib/python3/site-packages/ipykernel_launcher.py",
        raising=False,
    )

    assert run(CELL).result.success

    assert get_session().workflow_id() == "default"
    assert _keys(tmp_path / "store") == [("default", "where")]


def test_configured_workflow_wins_over_the_notebook_name(
    ip: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JPY_SESSION_NAME", "/x/y/analysis.ipynb")
    ip.user_ns["__vsc_ipynb_file__"] = "/home/me/report.ipynb"

    assert get_session().workflow_id() == "test"


def test_changing_the_working_directory_does_not_move_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWAITLY_NB_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    awaitly_nb.configure(dir=None, workflow="cwd")
    try:
        awaitly_nb.step(lambda: 1, key="first")
        (tmp_path / "sub").mkdir()
        monkeypatch.chdir(tmp_path / "sub")  # as a cell running os.chdir would
        awaitly_nb.step(lambda: 2, key="second")
        assert not (tmp_path / "sub" / ".awaitly").exists()
        assert {m.key for m in get_session().engine.steps()} == {"first", "second"}
    finally:
        awaitly_nb.configure(dir=None, workflow=None)
