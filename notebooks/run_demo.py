"""Run notebooks/demo.ipynb twice, each time in a fresh kernel, and compare cell times.

The first run computes every step and saves it; the second (a new kernel, as
after a restart) restores them. Usage::

    python notebooks/run_demo.py [--fresh] [--store DIR] [--save-executed DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent


def _seconds(cell: nbformat.NotebookNode) -> float | None:
    timing = cell.get("metadata", {}).get("execution", {})
    start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
    if not start or not end:
        return None
    parse = datetime.fromisoformat
    return (parse(end.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))).total_seconds()


def run(path: Path, store: Path) -> tuple[nbformat.NotebookNode, float]:
    """Execute the notebook in a new kernel with its store in ``store``."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    started = time.perf_counter()
    client.execute(env={**os.environ, "AWAITLY_NB_DIR": str(store)})
    return nb, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebook", type=Path, default=HERE / "demo.ipynb")
    parser.add_argument("--store", type=Path, default=HERE / ".awaitly")
    parser.add_argument("--fresh", action="store_true", help="delete the store first")
    parser.add_argument("--save-executed", type=Path, help="write the executed notebooks here")
    args = parser.parse_args()
    if args.fresh and args.store.exists():
        shutil.rmtree(args.store)

    first, first_total = run(args.notebook, args.store)
    print(f"first run  (new kernel): {first_total:6.2f} s")
    second, second_total = run(args.notebook, args.store)
    print(f"second run (new kernel): {second_total:6.2f} s\n")

    print(f"{'cell':<48} {'first':>9} {'replay':>9}")
    for a, b in zip(first.cells, second.cells, strict=True):
        if a.cell_type != "code":
            continue
        title = a.source.splitlines()[0][:46] if a.source else ""
        ta, tb = _seconds(a), _seconds(b)
        fmt = lambda t: "?" if t is None else f"{t * 1000:7.1f}ms"  # noqa: E731
        print(f"{title:<48} {fmt(ta):>9} {fmt(tb):>9}")
    if args.save_executed:
        args.save_executed.mkdir(parents=True, exist_ok=True)
        nbformat.write(first, args.save_executed / "demo.first.ipynb")
        nbformat.write(second, args.save_executed / "demo.replay.ipynb")
    sys.exit(0)


if __name__ == "__main__":
    main()
