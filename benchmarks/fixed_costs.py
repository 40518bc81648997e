"""The costs every process and every save pays, each against its baseline in the same run.

1. **Import**: ``python -c "import awaitly_nb"`` and ``python -c "from awaitly_nb
   import step"`` (what a lookup needs) against ``python -c pass``; the largest
   entries of ``-X importtime`` for the latter.
2. **The first lookup** of a tiny step in a new process (a hit on a local
   store), timed inside the process, and the next one; and the whole process of
   a script that restores that step against ``python -c "import pickle;
   pickle.load(open(...))"`` plus the import of (1).
3. **Saving a big array** (1 GiB by default) with ``LocalStore.save`` against a
   raw ``os.write`` of the same bytes to a new file in the same folder, each in
   its own process, with the process's peak memory against the array's size.

Every figure is a median of ``--repeat`` runs, with its spread (min-max).
Usage::

    python benchmarks/fixed_costs.py                 # all three, 1 GiB save
    python benchmarks/fixed_costs.py --save-mb 256   # a smaller save
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

MB = 1024 * 1024


def interleaved(commands: dict[str, list[str]], repeat: int) -> dict[str, list[float]]:
    """Wall times of each ``python args``, run in turn ``repeat`` times (after one warm-up
    round), so that a slow spell of the machine weighs on all of them alike."""
    for args in commands.values():
        subprocess.run([sys.executable, *args], check=True, capture_output=True)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeat):
        for name, args in commands.items():
            start = time.perf_counter()
            subprocess.run([sys.executable, *args], check=True, capture_output=True)
            times[name].append(time.perf_counter() - start)
    return times


def ms(times: list[float]) -> str:
    return (
        f"{statistics.median(times) * 1e3:7.1f} ms"
        f" (spread {min(times) * 1e3:.1f}-{max(times) * 1e3:.1f})"
    )


def ratio(times: list[float], base: float) -> str:
    return f"{statistics.median(times) / base:.2f}x"


def imports(repeat: int) -> float:
    """Section 1; returns the median extra cost of what a lookup imports (seconds)."""
    times = interleaved(
        {
            "bare": ["-c", "pass"],
            "package": ["-c", "import awaitly_nb"],
            "lookup": ["-c", "from awaitly_nb import step"],
        },
        repeat,
    )
    bare, package, lookup = times["bare"], times["package"], times["lookup"]
    base = statistics.median(bare)
    print(f"1. import, {repeat} new processes each, in turn (target: at most 40 ms over bare)")
    print(f"  python -c pass                    {ms(bare)}")
    for name, times in (("import awaitly_nb", package), ("from awaitly_nb import step", lookup)):
        extra = (statistics.median(times) - base) * 1e3
        print(f"  {name:<33} {ms(times)}  +{extra:.1f} ms over the bare process")
    trace = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "from awaitly_nb import step"],
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    rows = []
    for line in trace.splitlines()[1:]:
        _, self_us, _total, name = (part.strip() for part in line.replace("|", ":").split(":"))
        rows.append((int(self_us), name))
    print("  largest self times under -X importtime (us, the tool's own overhead included):")
    for self_us, name in sorted(rows, reverse=True)[:8]:
        print(f"    {self_us:6d}  {name}")
    return statistics.median(lookup) - base


SAVE_STEP = """
import awaitly_nb, sys
awaitly_nb.configure(dir=sys.argv[1], workflow="bench")
awaitly_nb.step(lambda: {"rows": 3, "name": "tiny"}, key="tiny")
"""

LOOKUP = """
import sys, time, json
start = time.perf_counter()
import awaitly_nb
from awaitly_nb import step
imported = time.perf_counter()
awaitly_nb.configure(dir=sys.argv[1], workflow="bench")
configured = time.perf_counter()
first = step(lambda: {"rows": 3, "name": "tiny"}, key="tiny")
looked = time.perf_counter()
second = step(lambda: {"rows": 3, "name": "tiny"}, key="tiny")
again = time.perf_counter()
assert first == second == {"rows": 3, "name": "tiny"}
print(json.dumps([imported - start, configured - imported, looked - configured, again - looked]))
"""

RESTORE = """
import sys, awaitly_nb
awaitly_nb.configure(dir=sys.argv[1], workflow="bench")
awaitly_nb.step(lambda: {"rows": 3, "name": "tiny"}, key="tiny")
"""


def lookups(repeat: int, work: Path, imported: float) -> None:
    """Section 2."""
    store = work / "store"
    subprocess.run([sys.executable, "-c", SAVE_STEP, str(store)], check=True)
    pickled = work / "tiny.pkl"
    pickled.write_bytes(__import__("pickle").dumps({"rows": 3, "name": "tiny"}))

    figures = []
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, "-c", LOOKUP, str(store)], capture_output=True, text=True, check=True
        ).stdout
        figures.append(json.loads(out))
    columns = list(zip(*figures, strict=True))
    print(f"2. a tiny step restored in a new process, {repeat} processes (target: first <= 1 ms)")
    for name, times in zip(
        ("import", "configure", "first lookup (a hit)", "next lookup"), columns, strict=True
    ):
        print(f"  {name:<33} {ms(list(times))}")

    times = interleaved(
        {
            "whole": ["-c", RESTORE, str(store)],
            "unpickle": ["-c", f"import pickle; pickle.load(open({str(pickled)!r}, 'rb'))"],
        },
        repeat,
    )
    whole, unpickle = times["whole"], times["unpickle"]
    base = statistics.median(unpickle) + imported
    print("  the whole process (target: within 1.5x of pickle.load plus the import above)")
    print(f"  python -c 'pickle.load(...)'      {ms(unpickle)}")
    print(f"    plus the import: {base * 1e3:.1f} ms (the baseline)")
    print(f"  script restoring the step         {ms(whole)}  {ratio(whole, base)}")


SAVE = """
import os, resource, sys, time, json
import numpy as np
from awaitly_nb.storage.local import LocalStore
how, folder, nbytes = sys.argv[1], sys.argv[2], int(sys.argv[3])
array = np.random.default_rng(0).random(nbytes // 8)
store = LocalStore(os.path.join(folder, "store"))
store.save("bench", "warm-up", {}, {"tiny": 1})  # imports and index opening: not timed
os.sync()  # earlier runs' dirty pages would throttle this one's writes
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
start = time.perf_counter()
if how == "raw":
    fd = os.open(os.path.join(folder, "raw.bin"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    view = memoryview(array).cast("B")
    while view:
        view = view[os.write(fd, view):]
    os.close(fd)
else:
    if how == "serial":  # the earlier way: hash each 4 MB slice, then write it
        import awaitly_nb.storage.blobs as blobs
        blobs._HASH_BESIDE = sys.maxsize
    store.save("bench", "big", {}, array)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps([seconds, before, peak]))
"""


def saves(repeat: int, work: Path, nbytes: int) -> None:
    """Section 3: raw and store saves interleaved, each in a new process and folder."""
    results: dict[str, list[list[float]]] = {"raw": [], "store": [], "serial": []}
    for i in range(repeat):
        for how in ("raw", "store", "serial"):
            folder = work / f"save-{how}-{i}"
            folder.mkdir()
            out = subprocess.run(
                [sys.executable, "-c", SAVE, how, str(folder), str(nbytes)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            results[how].append(json.loads(out))
            subprocess.run(["rm", "-rf", str(folder)], check=True)
    raw = [r[0] for r in results["raw"]]
    store = [r[0] for r in results["store"]]
    serial = [r[0] for r in results["serial"]]
    print(f"3. saving a {nbytes / MB:.0f} MB float64 array, {repeat} runs each, interleaved")
    print("   (target: within 1.1x of the raw write; peak memory within the array + 5%)")
    print(f"  raw os.write to a new file        {ms(raw)}  (the baseline)")
    print(
        f"  LocalStore.save                   {ms(store)}  {ratio(store, statistics.median(raw))}"
    )
    print(
        f"    hashing, then writing (0.1.0)   {ms(serial)}  {ratio(serial, statistics.median(raw))}"
    )
    for how in ("raw", "store"):
        grown = max(peak - before for _, before, peak in results[how])
        print(
            f"  peak memory while saving, {how:<5}   +{grown / MB:.0f} MB over the array's creation"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--save-mb", type=int, default=1024)
    parser.add_argument("--save-repeat", type=int, default=5)
    parser.add_argument(
        "--save-dir", help="where the saves write (default: the temporary folder; try /dev/shm)"
    )
    args = parser.parse_args()
    print(f"Python {sys.version.split()[0]}; medians with spreads (min-max)")
    with tempfile.TemporaryDirectory(prefix="awaitly-fixed-") as tmp:
        work = Path(tmp)
        imported = imports(args.repeat)
        lookups(args.repeat, work, imported)
        save_dir = Path(args.save_dir) if args.save_dir else work
        with tempfile.TemporaryDirectory(dir=save_dir, prefix="awaitly-save-") as folder:
            saves(args.save_repeat, Path(folder), args.save_mb * MB)
    print(
        textwrap.dedent("""\
        Notes: the import figures include Python's own startup; peak memory is the
        process's maximum resident size after the array was made, minus before it.""")
    )


if __name__ == "__main__":
    main()
