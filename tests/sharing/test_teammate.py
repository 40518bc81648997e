"""A teammate picks up where you left off: run, export, import elsewhere, replay.

Kernel A runs ``notebooks/demo.ipynb`` against store A (about 7 s of sleeps),
and its steps are exported with the team key. A fresh store B imports the
bundle, and kernel B runs the same notebook against it: every step replays
with the same outputs (text, table HTML, plot PNG) and nothing runs again --
no step of store B is saved anew.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nbformat
import pytest
from click.testing import CliRunner
from nbclient import NotebookClient

from awaitly_nb.cli import main
from awaitly_nb.storage.local import LocalStore

pytestmark = pytest.mark.timeout(300)

DEMO = Path(__file__).resolve().parents[2] / "notebooks" / "demo.ipynb"
KEYS = {"load:v1", "summary:v1", "plot:v1", "fit:v1", "r2:v1"}


def run_demo(store: Path, cwd: Path) -> nbformat.NotebookNode:
    """Run the demo notebook in a new kernel whose store is ``store``."""
    cwd.mkdir(exist_ok=True)
    nb = nbformat.read(DEMO, as_version=4)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("AWAITLY_NB_KEY", "AWAITLY_NB_DIR", "JPY_SESSION_NAME")
    }
    client = NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    )
    client.execute(env={**env, "AWAITLY_NB_DIR": str(store)})
    return nb


def visible(cell: nbformat.NotebookNode) -> list[dict[str, Any]]:
    """What a reader sees, without awaitly_nb's notes; adjacent stream chunks merged."""
    shown: list[dict[str, Any]] = []
    for out in cell.outputs:
        if "awaitly_nb" in out.get("metadata", {}):
            continue
        if out.output_type == "stream":
            if shown and shown[-1].get("stream") == out.name:
                shown[-1]["text"] += out.text
            else:
                shown.append({"stream": out.name, "text": out.text})
        elif out.output_type == "error":
            shown.append({"error": out.ename, "value": out.evalue})
        else:
            shown.append({"type": out.output_type, "data": dict(out.data)})
    return shown


def notes(cell: nbformat.NotebookNode) -> list[str]:
    return [
        out.data["text/plain"] for out in cell.outputs if "awaitly_nb" in out.get("metadata", {})
    ]


def saved(directory: Path) -> dict[tuple[str, str], float]:
    """``saved_at`` of every step in a store, by (workflow, key)."""
    store = LocalStore(directory)
    try:
        return {(m.workflow, m.key): m.saved_at for m in store.manifests()}
    finally:
        store.close()


def cell_starting(nb: nbformat.NotebookNode, prefix: str) -> nbformat.NotebookNode:
    (cell,) = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith(prefix)]
    return cell


def test_a_teammate_replays_the_demo_from_a_bundle_without_recomputing(tmp_path: Path) -> None:
    store_a, store_b = tmp_path / "alice-store", tmp_path / "bob-store"
    bundle = tmp_path / "demo.awnb"
    team_key = tmp_path / "team.key"
    team_key.write_text("our-team-secret\n")
    runner = CliRunner()

    # Kernel A computes everything and saves it.
    first = run_demo(store_a, tmp_path / "alice")
    saved_a = saved(store_a)
    assert {key for _, key in saved_a} == KEYS
    for prefix in ("%%step", "with step("):
        cells = [c for c in first.cells if c.source.startswith(prefix)]
        assert cells, f"the demo has no {prefix!r} cell"
        for cell in cells:
            assert not any("restored" in n for n in notes(cell)), cell.source

    exported = runner.invoke(
        main, ["--dir", str(store_a), "export", str(bundle), "--key-file", str(team_key)]
    )
    assert exported.exit_code == 0, exported.output
    assert "exported 5 step(s)" in exported.stdout and "(signed)" in exported.stdout

    # A fresh store takes the bundle; signed with the team key, so no --trust.
    assert not store_b.exists()
    imported = runner.invoke(
        main, ["--dir", str(store_b), "import", str(bundle), "--key-file", str(team_key)]
    )
    assert imported.exit_code == 0, imported.output
    assert "signed with the team key" in imported.stdout
    after_import = saved(store_b)
    assert after_import == saved_a

    # Kernel B replays every step.
    second = run_demo(store_b, tmp_path / "bob")
    assert saved(store_b) == after_import  # nothing was saved again: nothing ran

    code_a = [c for c in first.cells if c.cell_type == "code"]
    code_b = [c for c in second.cells if c.cell_type == "code"]
    assert [c.source for c in code_a] == [c.source for c in code_b]
    assert code_a[-1].source.strip() == "%steps"  # lists saved times: differs, skipped
    for a, b in zip(code_a[:-1], code_b[:-1], strict=True):
        assert visible(a) == visible(b), a.source
        if a.source.startswith(("%%step", "with step(")):
            assert any(n.startswith("[awaitly_nb] restored") for n in notes(b)), b.source

    # The replayed outputs are the real ones: text, the table's HTML, the plot's PNG.
    (load,) = visible(cell_starting(second, "%%step key=load:v1"))
    assert load == {"stream": "stdout", "text": "loaded 200,000 rows\n"}
    (summary,) = visible(cell_starting(second, "%%step key=summary:v1"))
    assert summary["type"] == "execute_result" and "<table" in summary["data"]["text/html"]
    plot = visible(cell_starting(second, "%%step key=plot:v1"))
    pngs = [o["data"]["image/png"] for o in plot if o.get("type") == "display_data"]
    assert len(pngs) == 1 and len(pngs[0]) > 1000
    (fit,) = visible(cell_starting(second, "with step("))
    assert fit["text"].startswith("coefficients:")
    (r2,) = visible(cell_starting(second, "def r_squared"))
    assert r2["text"].startswith("R^2 = ")
