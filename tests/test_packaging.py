"""What people who install awaitly_nb get: the sdist (with the whole test suite), the
metadata PyPI shows, and a README that renders there."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("build")
    out = tmp_path_factory.mktemp("sdist")
    built = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (path,) = out.glob("*.tar.gz")
    return path


def test_the_sdist_carries_the_whole_test_suite_and_nothing_generated(sdist: Path) -> None:
    with tarfile.open(sdist) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    tracked = subprocess.run(
        ["git", "ls-files", "tests", "examples", "benchmarks", "notebooks/demo.ipynb"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert set(tracked) <= names, sorted(set(tracked) - names)[:5]
    assert {"LICENSE", "CHANGES.md", "pyproject.toml", "README.md"} <= names
    assert not [n for n in names if "__pycache__" in n or "/.awaitly/" in f"/{n}"]


def test_the_metadata_says_license_pythons_and_status(sdist: Path) -> None:
    with tarfile.open(sdist) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("/PKG-INFO"))
        extracted = tar.extractfile(member)
        assert extracted is not None
        info = extracted.read().decode()
    assert "License-Expression: MIT" in info and "License-File: LICENSE" in info
    for minor in ("10", "11", "12", "13"):
        assert f"Classifier: Programming Language :: Python :: 3.{minor}" in info
    assert "Classifier: Development Status :: 3 - Alpha" in info
    assert "Requires-Python: >=3.10" in info


def test_the_readme_has_no_link_that_breaks_on_pypi() -> None:
    text = (ROOT / "README.md").read_text()
    relative = re.findall(r"\]\((?!https?://|#)([^)]+)\)", text)
    assert relative == []
