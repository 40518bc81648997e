"""Crash safety: a save killed with SIGKILL at any moment never leaves a half entry.

Guarantee (DESIGN.md, "Storage"): *writes are atomic: blobs first, manifest
last. A crash mid-save leaves the previous entry intact and no half entry
visible.* A real child process saves a large step (several out-of-band numpy
buffers, so several blob files and one index record) over a key that already
holds an entry with other content, and the parent kills it with SIGKILL after
a seeded random delay spread over the save's own duration (measured once at
the start). After every kill the store is opened afresh, as a restarted
kernel would, and:

- the key loads, hash-checked, as either the previous value or the new one,
  every buffer complete and equal to what was written, its manifest matching;
- ``gc(min_age=0)`` removes the leftovers (temporary files, blobs of the save
  that did not land) and then ``verify()`` reports the store clean.

Every trial kills a real process. The kills are classified (before the first
blob, torn between the first blob and the record, after the record) and the
test insists that some landed mid-save, so it cannot pass vacuously.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from awaitly_nb.storage.local import LocalStore
from awaitly_nb.storage.manifest import StepManifest

pytestmark = pytest.mark.timeout(600)

WORKFLOW, KEY = "wf", "big"
PARTS = 4
PART_LEN = 1_500_000  # float64: 12 MB per buffer, 48 MB per value (hash-checked on load)
MIN_TRIALS, MAX_TRIALS = 50, 120

# The child imports only numpy and the store, builds the value, says "saving",
# saves once and then waits (on stdin) to be killed.
STORE_CHILD = r"""
import sys, time
import numpy as np
from awaitly_nb.storage.local import LocalStore

directory, fill, parts, length = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
value = {"fill": fill, "parts": [np.full(length, fill + i) for i in range(parts)]}
store = LocalStore(directory)
print("saving", flush=True)
started = time.perf_counter()
store.save("wf", "big", {"fill": fill}, value)
print("saved", time.perf_counter() - started, flush=True)
sys.stdin.read()
"""

# The same through the notebook call form, awaitly_nb.step(fn, key=...).
CALL_CHILD = r"""
import sys, time
import numpy as np
import awaitly_nb

directory, fill, parts, length = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
value = {"fill": fill, "parts": [np.full(length, fill + i) for i in range(parts)]}
awaitly_nb.configure(dir=directory, workflow="wf")
print("saving", flush=True)
started = time.perf_counter()
awaitly_nb.step(lambda: value, key="big", force=True)
print("saved", time.perf_counter() - started, flush=True)
sys.stdin.read()
"""


def start(script: str, directory: Path, fill: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, str(directory), repr(fill), str(PARTS), str(PART_LEN)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=directory.parent,  # not the repository: the installed package is what runs
    )


def wait_for(child: subprocess.Popen[str], word: str) -> str:
    assert child.stdout is not None
    line = child.stdout.readline()
    if not line.startswith(word):
        child.kill()
        _, err = child.communicate()
        pytest.fail(f"child said {line!r} instead of {word!r}; stderr:\n{err}")
    return line


def save_unkilled(script: str, directory: Path, fill: float) -> float:
    """Let a child save to the end; return how long its save took."""
    child = start(script, directory, fill)
    wait_for(child, "saving")
    seconds = float(wait_for(child, "saved").split()[1])
    child.communicate(input="")  # closing stdin lets it exit
    assert child.returncode == 0
    return seconds


def tmp_files(directory: Path) -> list[Path]:
    tmp = directory / "blobs" / "tmp"
    return sorted(tmp.iterdir()) if tmp.exists() else []


def check_value(value: Any, manifest: StepManifest, allowed: set[float]) -> float:
    """The fill of a complete value; fails on any partial, mixed or foreign content."""
    if manifest.kind == "call":  # the call form saves {"value": value}
        value = value["value"]
    else:
        assert manifest.extra["fill"] == value["fill"], "the manifest belongs to another value"
    assert isinstance(value, dict), type(value)
    fill = value["fill"]
    assert fill in allowed, f"loaded fill {fill}, expected one of {sorted(allowed)}"
    assert len(value["parts"]) == PARTS
    for i, part in enumerate(value["parts"]):
        assert part.shape == (PART_LEN,)
        assert np.array_equal(part, np.full(PART_LEN, fill + i)), f"buffer {i} is not complete"
    return float(fill)


def run_trials(script: str, directory: Path, seed: int, trials: tuple[int, int]) -> dict[str, int]:
    """Kill ``trials`` saves at random moments; check the store after each. Return the tally."""
    save_unkilled(script, directory, 1.0)  # the first previous entry
    window = 1.3 * save_unkilled(script, directory, 2.0)  # measured: kills spread over the save
    previous = 2.0
    rng = random.Random(seed)
    tally = {"before": 0, "torn": 0, "after": 0}
    minimum, maximum = trials
    trial = 0
    while trial < minimum or (tally["torn"] == 0 and trial < maximum):
        trial += 1
        fill = 10.0 * (trial + 1)
        child = start(script, directory, fill)
        wait_for(child, "saving")
        time.sleep(rng.uniform(0, window))
        os.kill(child.pid, signal.SIGKILL)
        child.communicate()
        assert child.returncode == -signal.SIGKILL, f"trial {trial}: the child was not killed"

        store = LocalStore(directory)  # a restarted kernel
        try:
            entry = store.entry(WORKFLOW, KEY)
            assert entry is not None, f"trial {trial}: the previous entry is gone"
            loaded = check_value(entry.load(), entry.manifest, {previous, fill})
            leftovers = bool(tmp_files(directory)) or bool(store.verify())
            if loaded == fill:
                tally["after"] += 1
            elif leftovers:
                tally["torn"] += 1
            else:
                tally["before"] += 1
            store.gc(min_age=0)
            assert store.verify() == [], f"trial {trial}: the store is not clean after gc"
            assert tmp_files(directory) == []
            assert set(store.blobs.names()) == store.referenced_blobs()
            previous = loaded
        finally:
            store.close()
    return tally


def test_sigkill_mid_save_leaves_the_previous_entry_or_the_new_one(tmp_path: Path) -> None:
    tally = run_trials(STORE_CHILD, tmp_path / "store", seed=20240611, trials=(50, 120))
    assert sum(tally.values()) >= MIN_TRIALS
    assert tally["torn"] > 0, f"no kill landed mid-save, the test proved nothing: {tally}"


def test_sigkill_mid_save_through_the_call_form(tmp_path: Path) -> None:
    tally = run_trials(CALL_CHILD, tmp_path / "store", seed=7, trials=(20, 60))
    assert tally["torn"] > 0, f"no kill landed mid-save, the test proved nothing: {tally}"
