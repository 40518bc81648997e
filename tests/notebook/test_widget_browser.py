"""The status widget in a real browser: JupyterLab on 127.0.0.1, driven by Playwright.

Uses Debian's Chromium (``/usr/bin/chromium``; ``.ci/run`` installs it) and
never downloads a browser. A screenshot is kept in ``test-artifacts/``.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from awaitly_servers import free_port
from nbformat.v4 import new_code_cell, new_notebook

pytestmark = pytest.mark.timeout(300)

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

if not os.path.exists(CHROMIUM):
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM} is missing: .ci/run must install Debian's chromium")
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)

playwright = pytest.importorskip("playwright.sync_api")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A JupyterLab server on 127.0.0.1 with a token, isolated in tmp_path."""
    root = tmp_path / "root"
    root.mkdir()
    port, token = free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "AWAITLY_NB_DIR": str(tmp_path / "store"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
    }
    log = (tmp_path / "lab.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={root}",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
            "--ServerApp.allow_root=True",  # CI runs as root
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "JupyterLab did not start:\n" + (tmp_path / "lab.log").read_text()
                    ) from None
                time.sleep(0.5)
        yield f"{base}/lab/tree/%s?token={token}", root
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _open_and_run_all(page: Any, url: str) -> None:
    page.goto(url)
    page.locator(".jp-Notebook").first.wait_for(timeout=120_000)
    # The kernel must be up before Run All, or the run may be lost on a slow machine.
    page.get_by_text("| Idle").first.wait_for(timeout=120_000)
    page.locator(".jp-Notebook .jp-Cell").first.click()
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_text("Run All Cells", exact=True).click()


def _write(root: Path, name: str, cells: list[str]) -> None:
    nb = new_notebook(cells=[new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nbformat.write(nb, root / name)


def test_status_widget_shows_a_gather_running_then_complete(lab: tuple[str, Path]) -> None:
    url, root = lab
    _write(
        root,
        "gather.ipynb",
        [
            "%load_ext awaitly_nb",
            "%steps",  # shown first: it must follow the cells below as they run
            "import asyncio\nfrom awaitly_nb import step\n"
            "async def fetch(uid):\n    await asyncio.sleep(1)\n    return uid",
            'users = await step.map(fetch, range(12), key="user:{}", concurrency=3)',
        ],
    )
    state = (
        "([n, word]) => [...document.querySelectorAll('.awaitly-nb-status .awaitly-nb-step')]"
        ".filter(row => row.innerText.includes(word)).length >= n"
    )
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1200})
            _open_and_run_all(page, url % "gather.ipynb")
            page.locator(".jp-OutputArea-output .awaitly-nb-status").wait_for(timeout=180_000)
            # While the gather runs, the widget shows calls running and some complete...
            page.wait_for_function(state, arg=[1, "running"], timeout=120_000)
            page.wait_for_function(state, arg=[3, "complete"], timeout=60_000)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "status-widget-gather-live.png"), full_page=True)
            # ... and at the end every call complete, without being shown again.
            page.wait_for_function(state, arg=[12, "complete"], timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "status-widget-gather.png"), full_page=True)
        finally:
            browser.close()


def test_status_widget_shows_both_steps_complete(lab: tuple[str, Path]) -> None:
    url, root = lab
    cells = [
        "%load_ext awaitly_nb",
        "%%step key=load:1\nx = 41\nprint('loaded')",
        "%%step key=fit:1\ny = x + 1",
        "%steps",
    ]
    _write(root, "status.ipynb", cells)

    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            _open_and_run_all(page, url % "status.ipynb")

            # Scope to the output area: the cell's source also contains the keys.
            widget = page.locator(".jp-OutputArea-output .awaitly-nb-status")
            widget.wait_for(timeout=180_000)
            rows = widget.locator(".awaitly-nb-step")
            script = (
                "n => document.querySelectorAll('.awaitly-nb-status .awaitly-nb-step').length == n"
            )
            page.wait_for_function(script, arg=2, timeout=60_000)
            texts = [rows.nth(i).inner_text() for i in range(rows.count())]
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "status-widget.png"), full_page=True)
        finally:
            browser.close()

    assert len(texts) == 2
    load, fit = texts
    assert "load:1" in load and "complete" in load and "x" in load
    assert "fit:1" in fit and "complete" in fit and "y" in fit
    assert (ARTIFACTS / "status-widget.png").stat().st_size > 10_000
