"""Ctrl-C during a save: no partial entry, the previous one intact, the store usable.

Guarantee (DESIGN.md, "Notebook semantics" and "Storage"): *Ctrl-C likewise
leaves no partial entry*. A ``KeyboardInterrupt`` raised while a value's
blobs are written (first byte, half-way, on its second blob) or while its
index record is written:

- propagates (``StepStore.save``, the call form) or ends the cell with the
  interrupt (``%%step``: ``run_cell`` reports it in ``error_in_exec``);
- leaves the previous entry intact and loadable, byte for byte;
- leaves no temporary file in ``blobs/tmp``, and after ``gc(min_age=0)``
  ``verify()`` reports the store clean.

A kernel survives Ctrl-C, so the store must stay usable after one: an
interrupt that lands just after diskcache has begun its write transaction
must not leave that transaction open (it would fail every later save in the
kernel and lock other kernels out); that is a known bug, pinned down by a
deterministic xfail test.

The last test sends real SIGINTs to a child process that, like a kernel,
survives each interrupt and goes on: at random moments of 30 saves, each
followed by a check that the key holds the previous or the new value,
complete; at the end the store must still save and load and be clean after
``gc``. Until the bug above is fixed, the child ignores SIGINT while the
index record is written (diskcache's transaction), else the test would fail
at random (about one run in 40 under load).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import diskcache
import faults
import pytest
from faults import (
    WF,
    WRITE_MOMENTS,
    clean_after_gc,
    fail_blob_writes,
    fail_index_writes,
    same,
    value,
)

import awaitly_nb
from awaitly_nb.config import get_session
from awaitly_nb.storage.local import LocalStore

# The shared fixtures, by name, so pytest finds them in this module.
session = faults.session
shell = faults.shell

pytestmark = pytest.mark.timeout(300)


def interrupt(monkeypatch: pytest.MonkeyPatch, moment: str, index: Any) -> None:
    """Ctrl-C at ``moment``: in a blob write (``WRITE_MOMENTS``) or the index record's."""
    if moment == "index-write":
        fail_index_writes(monkeypatch, index, KeyboardInterrupt)
    else:
        fail_blob_writes(monkeypatch, moment, KeyboardInterrupt)


ALL_MOMENTS = [*WRITE_MOMENTS, "index-write"]


@pytest.mark.parametrize("moment", ALL_MOMENTS)
def test_step_store_save_interrupted_keeps_the_previous_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, moment: str
) -> None:
    store = LocalStore(tmp_path / "store")
    store.save(WF, "k", {"n": 1}, value(1.0))
    with monkeypatch.context() as patch:
        interrupt(patch, moment, store.index)
        with pytest.raises(KeyboardInterrupt):
            store.save(WF, "k", {"n": 2}, value(2.0))

    assert same(store.load(WF, "k"), value(1.0))
    assert store.manifest(WF, "k").extra["n"] == 1
    clean_after_gc(store)
    store.save(WF, "k", {"n": 3}, value(3.0))  # the store still works
    assert same(store.load(WF, "k"), value(3.0))
    clean_after_gc(store)
    store.close()


@pytest.mark.parametrize("moment", ALL_MOMENTS)
def test_call_form_interrupted_during_save_keeps_the_previous_entry(
    session: Path, monkeypatch: pytest.MonkeyPatch, moment: str
) -> None:
    runs: list[float] = []

    def compute(fill: float) -> Callable[[], Any]:
        return lambda: runs.append(fill) or value(fill)

    awaitly_nb.step(compute(1.0), key="k")
    with monkeypatch.context() as patch:
        interrupt(patch, moment, get_session().store.index)
        with pytest.raises(KeyboardInterrupt):
            awaitly_nb.step(compute(2.0), key="k", force=True)

    assert same(awaitly_nb.step(compute(3.0), key="k", pin=True), value(1.0))
    assert runs == [1.0, 2.0]
    clean_after_gc(get_session().store)


def test_call_form_interrupted_in_its_body_keeps_the_previous_entry(session: Path) -> None:
    awaitly_nb.step(lambda: value(1.0), key="k")

    def interrupted() -> Any:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        awaitly_nb.step(interrupted, key="k", force=True)
    assert same(awaitly_nb.step(lambda: value(3.0), key="k", pin=True), value(1.0))
    clean_after_gc(get_session().store)


@pytest.mark.parametrize("moment", ["half-way", "second-blob", "index-write", "in-the-body"])
def test_step_cell_interrupted_keeps_the_previous_entry(
    shell: Any, monkeypatch: pytest.MonkeyPatch, moment: str
) -> None:
    shell.user_ns["make"] = value
    assert shell.run_cell("%%step key=k\nv = make(1.0)").success
    body = "v = make(2.0)" + ("\nraise KeyboardInterrupt" if moment == "in-the-body" else "")
    with monkeypatch.context() as patch:
        if moment != "in-the-body":
            interrupt(patch, moment, get_session().store.index)
        result = shell.run_cell(f"%%step key=k --force\n{body}")
    assert isinstance(result.error_in_exec, KeyboardInterrupt)

    del shell.user_ns["v"]  # a restart
    assert shell.run_cell("%%step key=k --pin\nv = make(3.0)").success
    assert same(shell.user_ns["v"], value(1.0))
    clean_after_gc(get_session().store)


def test_an_interrupt_just_after_the_index_transaction_began_leaves_the_store_usable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path / "store")
    store.save(WF, "k", {"n": 1}, value(1.0))
    real_sql = diskcache.Cache._sql
    fired: list[str] = []

    def sql(self: Any) -> Any:
        execute = real_sql.fget(self)

        def run(statement: str, *args: Any) -> Any:
            result = execute(statement, *args)
            if statement == "BEGIN IMMEDIATE" and not fired:
                fired.append(statement)
                raise KeyboardInterrupt  # Ctrl-C, handled as BEGIN returns
            return result

        return run

    try:
        with monkeypatch.context() as patch:
            patch.setattr(diskcache.Cache, "_sql", property(sql))
            with pytest.raises(KeyboardInterrupt):
                store.save(WF, "k", {"n": 2}, value(2.0))
        assert fired
        assert same(store.load(WF, "k"), value(1.0))

        store.save(WF, "k", {"n": 3}, value(3.0))  # the same kernel saves again
        assert same(store.load(WF, "k"), value(3.0))
        other = LocalStore(tmp_path / "store")  # and another kernel is not locked out
        other.index._timeout = 2.0  # diskcache's sqlite busy timeout (60 s by default)
        other.save(WF, "other", {}, "value")
        other.close()
        clean_after_gc(store)
    finally:
        store.close()  # closing the connection ends any transaction left open


# --- real SIGINTs to a process that survives them, like a kernel ------------------------------

KERNEL_CHILD = r"""
import signal, sys, time
import numpy as np
from awaitly_nb.storage.local import LocalStore

armed = False

def on_sigint(signum, frame):
    if armed:
        raise KeyboardInterrupt

signal.signal(signal.SIGINT, on_sigint)
store = LocalStore(sys.argv[1])
trials = int(sys.argv[2])
index_set = store.index.set

def shielded_set(*args, **kwargs):
    # Until the open-transaction bug is fixed (see the xfail test): no Ctrl-C in here.
    global armed
    was, armed = armed, False
    try:
        return index_set(*args, **kwargs)
    finally:
        armed = was


def make(fill):
    return {"fill": fill, "parts": [np.full(1_000_000, fill + i) for i in range(3)]}

def check(allowed):
    found = store.load("wf", "k")
    assert found["fill"] in allowed, (found["fill"], allowed)
    for i, part in enumerate(found["parts"]):
        assert np.array_equal(part, np.full(1_000_000, found["fill"] + i)), "partial value"
    return found["fill"]

store.save("wf", "k", {}, make(0.0))
previous = 0.0
outcomes = {"interrupted": 0, "done": 0}
for trial in range(1, trials + 1):
    value = make(float(trial))
    print("saving", flush=True)
    started = time.perf_counter()
    try:
        armed = True
        store.save("wf", "k", {}, value)
        armed = False
        outcome = "done"
    except KeyboardInterrupt:
        armed = False
        outcome = "interrupted"
    took = time.perf_counter() - started
    outcomes[outcome] += 1
    previous = check({previous, float(trial)})
    print("checked", outcome, took, flush=True)
    sys.stdin.readline()  # the parent's go-ahead: no signal of this trial is still coming
store.save("wf", "after", {}, make(-1.0))  # no transaction was left open
assert store.load("wf", "after")["fill"] == -1.0
store.gc(min_age=0)
problems = store.verify()
assert problems == [], problems
print("ok", outcomes, flush=True)
"""


def test_real_sigints_during_saves_never_leave_a_partial_entry(tmp_path: Path) -> None:
    trials = 30
    child = subprocess.Popen(
        [sys.executable, "-c", KERNEL_CHILD, str(tmp_path / "store"), str(trials)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    assert child.stdin is not None and child.stdout is not None
    rng = random.Random(1234)
    window = 0.05
    interrupted = 0
    try:
        for _ in range(trials):
            line = child.stdout.readline()
            assert line.startswith("saving"), line + child.communicate()[1]
            time.sleep(rng.uniform(0, window))
            os.kill(child.pid, signal.SIGINT)
            line = child.stdout.readline()
            assert line.startswith("checked"), line + child.communicate()[1]
            _, outcome, took = line.split()
            interrupted += outcome == "interrupted"
            if outcome == "done":  # spread the next kills over a real save's duration
                window = 1.2 * float(took)
            child.stdin.write("\n")
            child.stdin.flush()
        out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, err
    assert out.startswith("ok"), out + err
    assert interrupted > 0, "no SIGINT landed during a save: the test proved nothing"
    store = LocalStore(tmp_path / "store")
    assert store.verify() == []
    store.close()
