"""Fixtures for the in-process IPython tier: a shell with ``%load_ext awaitly_nb``.

``shell.run_cell`` never raises, so tests assert on ``result.success`` and
``result.error_in_exec``. "The body did not run" is proven with :class:`Marks`,
a side effect that lives outside the (restored) namespace: every ``mark()`` a
cell calls appends a line to a file in ``tmp_path``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from awaitly_testing import ipython_shell
from IPython.core.displaypub import DisplayPublisher
from IPython.core.interactiveshell import ExecutionResult
from IPython.utils.capture import CapturedIO, capture_output

import awaitly_nb
from awaitly_nb.config import get_session


class Marks:
    """``mark()`` in a cell appends a line to a file; ``count()`` says how many ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, tag: str = "ran") -> None:
        with self.path.open("a") as f:
            f.write(f"{tag}\n")

    def count(self, tag: str | None = None) -> int:
        if not self.path.exists():
            return 0
        lines = self.path.read_text().splitlines()
        return len(lines) if tag is None else lines.count(tag)


@pytest.fixture
def ip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The shell, with the extension loaded, a fresh store and workflow "test".

    Display formatters are all active, as in a kernel (a terminal shell only
    computes text/plain). Variables the test creates are removed afterwards.
    """
    shell = ipython_shell()  # whichever test module started it first
    monkeypatch.chdir(tmp_path)  # a stray default store lands in tmp_path, never the repo
    for var in ("AWAITLY_NB_DIR", "JPY_SESSION_NAME"):
        monkeypatch.delenv(var, raising=False)
    awaitly_nb.configure(dir=tmp_path / "store", workflow="test")
    active = list(shell.display_formatter.active_types)
    shell.display_formatter.active_types = list(shell.display_formatter.format_types)
    baseline = set(shell.user_ns)
    try:
        yield shell
    finally:
        awaitly_nb.configure(dir=None, workflow=None)
        shell.display_formatter.active_types = active
        for name in set(shell.user_ns) - baseline:
            del shell.user_ns[name]


@pytest.fixture
def marks(ip: Any, tmp_path: Path) -> Marks:
    """``mark`` in the user namespace (not a cell variable: never saved or restored)."""
    found = Marks(tmp_path / "marks.txt")
    ip.user_ns["mark"] = found
    return found


@pytest.fixture
def restart(ip: Any, marks: Marks) -> Callable[[], None]:
    """Simulate a kernel restart: forget every variable created since the test began,
    and what the session saw (lineage, the status of steps)."""
    baseline = set(ip.user_ns)

    def restart() -> None:
        for name in set(ip.user_ns) - baseline:
            del ip.user_ns[name]
        get_session().engine.reset()

    return restart


@dataclass
class Ran:
    """One cell run under ``capture_output``."""

    result: ExecutionResult
    captured: CapturedIO

    @property
    def error(self) -> BaseException | None:
        """The error raised before or during execution (``run_cell`` never raises)."""
        return self.result.error_before_exec or self.result.error_in_exec

    @property
    def stdout(self) -> str:
        return self.captured.stdout

    @property
    def stderr(self) -> str:
        return self.captured.stderr

    @property
    def notes(self) -> list[str]:
        """The text of the awaitly_nb notes the cell showed."""
        return [
            o.data["text/plain"]
            for o in self.captured.outputs
            if "awaitly_nb" in (o.metadata or {})
        ]

    @property
    def displays(self) -> list[dict[str, Any]]:
        """The MIME bundles the cell displayed, awaitly_nb notes left out."""
        return [o.data for o in self.captured.outputs if "awaitly_nb" not in (o.metadata or {})]


@pytest.fixture
def run(ip: Any) -> Callable[..., Ran]:
    """``run(code)`` runs a cell under ``capture_output``."""

    def run(code: str, *, store_history: bool = False) -> Ran:
        with capture_output() as captured:
            result = ip.run_cell(code, store_history=store_history)
        return Ran(result, captured)

    return run


@pytest.fixture
def saved(ip: Any) -> Callable[[], dict[str, dict[str, Any]]]:
    """``saved()``: the manifests of the current workflow's saved steps, by key."""

    def saved() -> dict[str, dict[str, Any]]:
        return {m.key: m for m in get_session().engine.steps()}

    return saved


# --- an ordered transcript of everything a cell shows -------------------------------------


class _Stream:
    def __init__(self, transcript: Transcript, name: str) -> None:
        self._transcript = transcript
        self._name = name

    def write(self, text: str) -> int:
        self._transcript._stream(self._name, text)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:
        return "utf-8"


class _Publisher(DisplayPublisher):
    transcript: Any = None

    def publish(  # type: ignore[override]
        self,
        data: dict[str, Any],
        metadata: dict[str, Any] | None = None,
        source: Any = None,
        *,
        transient: Any = None,
        update: bool = False,
        **kwargs: Any,
    ) -> None:
        self.transcript.events.append(("display", dict(data), dict(metadata or {})))

    def clear_output(self, wait: bool = False) -> None:
        self.transcript.events.append(("clear",))


class Transcript:
    """What a cell shows, in order: stream chunks (merged) and displays, as a front end sees them.

    Unlike ``capture_output`` it keeps the order between streams and displays,
    and it can be inspected while the cell is still running.
    """

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.events: list[tuple[Any, ...]] = []

    def _stream(self, name: str, text: str) -> None:
        if not text:
            return
        if self.events and self.events[-1][0] == name:
            self.events[-1] = (name, self.events[-1][1] + text)
        else:
            self.events.append((name, text))

    def __enter__(self) -> Transcript:
        self._saved = (sys.stdout, sys.stderr, self.shell.display_pub)
        sys.stdout, sys.stderr = _Stream(self, "stdout"), _Stream(self, "stderr")  # type: ignore[assignment]
        publisher = _Publisher(shell=self.shell)
        publisher.transcript = self
        self.shell.display_pub = publisher
        return self

    def __exit__(self, *exc: object) -> None:
        sys.stdout, sys.stderr, self.shell.display_pub = self._saved

    def without_notes(self) -> list[tuple[Any, ...]]:
        return [e for e in self.events if not (e[0] == "display" and "awaitly_nb" in e[2])]

    def notes(self) -> list[str]:
        return [
            e[1]["text/plain"] for e in self.events if e[0] == "display" and "awaitly_nb" in e[2]
        ]


@pytest.fixture
def execute_results(ip: Any, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The format dicts the displayhook sends (a kernel's execute_result messages)."""
    sent: list[dict[str, Any]] = []
    original = ip.displayhook.write_format_data

    def write_format_data(format_dict: dict[str, Any], md_dict: Any = None) -> None:
        sent.append(dict(format_dict))
        original(format_dict, md_dict)

    monkeypatch.setattr(ip.displayhook, "write_format_data", write_format_data)
    return sent


@pytest.fixture
def transcript(ip: Any) -> Callable[[], Transcript]:
    """``with transcript() as t:`` records what cells show, in order."""
    return lambda: Transcript(ip)


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in ``tmp_path`` (the notebook's folder, where every file read counts)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
