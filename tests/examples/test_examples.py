"""Run every example script in a fresh process, as a reader would."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# One script per code section of the seed page (awaitly's "Persistence"), and
# what each must print. Listed by hand so that a deleted example fails.
SECTIONS = {
    "collect_state.py": "collected steps: ['posts:1', 'user:1']",
    "save_to_database.py": "saved 2 steps of wf-123 to workflows.db",
    "resume_from_saved_state.py": "resumed run called: nothing",
    "state_persistence_adapter.py": "async resume; functions called: none",
    "check_step_complete.py": "User already fetched",
    "crash_recovery.py": "second run called only: fetch_posts('1')",
    "async_resume_state.py": "second run (state loaded lazily) called: nothing",
    "file_cache.py": "second run called: nothing",
}
DEMO = "resume_demo.py"
DEMO_STEPS = ["load data", "clean", "fit model", "evaluate"]


def run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_section_has_an_example() -> None:
    present = {p.name for p in EXAMPLES.glob("*.py")}
    assert set(SECTIONS) | {DEMO} == present


def test_every_example_has_a_test() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted([*SECTIONS, DEMO])


@pytest.mark.parametrize("script", sorted(SECTIONS))
def test_example_runs(script: str, tmp_path: Path) -> None:
    proc = run(script, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert SECTIONS[script] in proc.stdout
    assert proc.stderr == ""


@pytest.mark.parametrize("script", sorted(SECTIONS))
def test_example_runs_again_in_the_same_directory(script: str, tmp_path: Path) -> None:
    # Files left by a first run (databases, cache folders) must not break a second.
    for _ in range(2):
        proc = run(script, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr


def step_lines(stdout: str) -> list[tuple[str, str]]:
    return re.findall(r"^(computed|restored)  (\S.*?)  ", stdout, flags=re.MULTILINE)


def test_resume_demo_restores_every_step_in_a_new_process(tmp_path: Path) -> None:
    cache_dir = str(tmp_path / "cache")

    first = run(DEMO, "--fresh", "--dir", cache_dir, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert step_lines(first.stdout) == [("computed", name) for name in DEMO_STEPS]

    second = run(DEMO, "--dir", cache_dir, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert step_lines(second.stdout) == [("restored", name) for name in DEMO_STEPS]

    model = [line for line in first.stdout.splitlines() if line.startswith("model:")]
    assert model and model == [
        line for line in second.stdout.splitlines() if line.startswith("model:")
    ]
    assert "total:" in second.stdout
    assert not (tmp_path / ".awaitly").exists()  # --dir is honoured


def test_resume_demo_fresh_recomputes(tmp_path: Path) -> None:
    cache_dir = str(tmp_path / "cache")
    for _ in range(2):
        proc = run(DEMO, "--fresh", "--dir", cache_dir, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert step_lines(proc.stdout) == [("computed", name) for name in DEMO_STEPS]
