"""Concurrency: several kernels may share one store (DESIGN.md, "Storage").

Two real processes ("two kernels") save and restore steps in the same store
at the same time, released together by a start signal, each doing well over
1,000 operations: saves of keys both of them write, saves of their own keys,
and loads of either. Every value checks itself (its key, writer and counter
determine the content of its array, and it carries the SHA-256 of that
array), so the children assert on every load that the value is complete and
belongs to its key, and exit non-zero (with a report on stderr) otherwise.
Proven, once through :class:`StepStore` and once through the notebook call
form ``awaitly_nb.step(fn, key=...)`` on one ``AWAITLY_NB_DIR``:

- no load ever returns a partial, damaged or foreign value;
- no entry is lost: each process's own keys hold, during the run and at the
  end, exactly the last value it saved (checked by the child and again by
  the parent after both have finished);
- the shared keys end holding a complete value written by one of them;
- after ``gc(min_age=0)``, ``verify()`` reports the store clean.

A last test holds the index's write lock from another connection (a kernel
stuck in a transaction) and checks that a save is refused with a clear
error / warning instead of an unrelated exception.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from awaitly_testing import close_session_stores

import awaitly_nb
from awaitly_nb import CacheWarning, StorageError
from awaitly_nb.config import get_session
from awaitly_nb.storage.local import LocalStore

pytestmark = pytest.mark.timeout(600)

OPS = 1_200
SHARED_KEYS = 6
OWN_KEYS = 12

# Shared by both children: how a value is made from (key, writer, counter), and checked.
VALUES = r"""
import hashlib, zlib
import numpy as np

def fill_of(key, writer, counter):
    return zlib.crc32(f"{key}|{writer}|{counter}".encode())

def make(key, writer, counter):
    length = 20_000 if counter % 3 == 0 else 64  # 160 KB out of band (a blob) or inline
    data = np.full(length, fill_of(key, writer, counter), dtype=np.int64)
    return {"key": key, "writer": writer, "counter": counter, "data": data,
            "sha256": hashlib.sha256(data.tobytes()).hexdigest()}

def check(key, value):
    assert isinstance(value, dict), f"{key}: loaded a {type(value).__name__}"
    assert value["key"] == key, f"{key}: loaded the value of {value['key']}"
    data = value["data"]
    assert hashlib.sha256(data.tobytes()).hexdigest() == value["sha256"], f"{key}: damaged data"
    expected = fill_of(key, value["writer"], value["counter"])
    assert data.size in (64, 20_000) and bool((data == expected).all()), f"{key}: wrong content"
"""

STORE_CHILD = (
    VALUES
    + r"""
import json, random, sys
from awaitly_nb.storage.local import LocalStore

directory, writer, ops, seed, shared, own = sys.argv[1:7]
ops, shared, own = int(ops), int(shared), int(own)
store = LocalStore(directory)
rng = random.Random(int(seed))
shared_keys = [f"shared:{i}" for i in range(shared)]
own_keys = [f"own:{writer}:{i}" for i in range(own)]
last = {}
counts = {"save": 0, "load": 0, "hit": 0}
print("ready", flush=True)
sys.stdin.readline()
for counter in range(ops):
    roll = rng.random()
    if roll < 0.25:
        key = rng.choice(shared_keys)
        store.save("wf", key, {"counter": counter}, make(key, writer, counter))
        counts["save"] += 1
    elif roll < 0.5:
        key = rng.choice(own_keys)
        store.save("wf", key, {"counter": counter}, make(key, writer, counter))
        last[key] = counter
        counts["save"] += 1
    else:
        key = rng.choice(shared_keys + own_keys)
        counts["load"] += 1
        try:
            value = store.load("wf", key)
        except KeyError:
            assert key not in last, f"{key}: lost (saved at {last.get(key)})"
            continue
        counts["hit"] += 1
        check(key, value)
        if key in last:
            assert value["counter"] == last[key], f"{key}: {value['counter']} != {last[key]}"
for key, counter in last.items():
    value = store.load("wf", key)
    check(key, value)
    assert value["counter"] == counter, f"{key}: ended with {value['counter']}, saved {counter}"
print(json.dumps({"last": last, "counts": counts}), flush=True)
"""
)

CALL_CHILD = (
    VALUES
    + r"""
import json, random, sys, warnings
import awaitly_nb
from awaitly_nb import CacheWarning

warnings.simplefilter("error", CacheWarning)  # an unreadable or unsaved entry fails the child


class Probe:
    # Whether the step's function ran. Not a list the function appends to: a replay
    # sets such a global as the run left it (a call's in-place changes are replayed).

    def __init__(self):
        self.ran = False

    def __call__(self):
        self.ran = True

    def __bool__(self):
        return self.ran

    def __reduce__(self):  # the same digest before and after: not an in-place change
        return (Probe, ())
writer, ops, seed, shared, own = sys.argv[1:6]
ops, shared, own = int(ops), int(shared), int(own)
awaitly_nb.configure(workflow="wf")  # the store: $AWAITLY_NB_DIR
rng = random.Random(int(seed))
shared_keys = [f"shared:{i}" for i in range(shared)]
own_keys = [f"own:{writer}:{i}" for i in range(own)]
last = {}
counts = {"save": 0, "load": 0, "hit": 0}
print("ready", flush=True)
sys.stdin.readline()
for counter in range(ops):
    roll = rng.random()
    if roll < 0.5:
        key = rng.choice(shared_keys if roll < 0.25 else own_keys)
        value = awaitly_nb.step(lambda: make(key, writer, counter), key=key, force=True)
        check(key, value)
        assert value["counter"] == counter
        counts["save"] += 1
        if key in own_keys:
            last[key] = counter
    else:
        key = rng.choice(shared_keys + own_keys)
        ran = Probe()
        value = awaitly_nb.step(lambda: ran() or make(key, writer, counter), key=key, pin=True)
        counts["load"] += 1
        check(key, value)
        if key in last:
            assert not ran, f"{key}: lost (saved at {last[key]}), it ran again"
            assert value["counter"] == last[key], f"{key}: {value['counter']} != {last[key]}"
        elif key in own_keys:
            assert ran, f"{key}: never saved by its writer, yet restored"
            last[key] = counter  # a miss saves it
        counts["hit"] += not ran
def lost():
    raise AssertionError("an own key was lost: it ran again")

for key, counter in last.items():
    value = awaitly_nb.step(lost, key=key, pin=True)
    check(key, value)
    assert value["counter"] == counter, f"{key}: ended with {value['counter']}, saved {counter}"
print(json.dumps({"last": last, "counts": counts}), flush=True)
"""
)


def fill_of(key: str, writer: str, counter: int) -> int:
    return zlib.crc32(f"{key}|{writer}|{counter}".encode())


def check(key: str, value: Any) -> None:
    """The parent's copy of the children's self-check."""
    assert isinstance(value, dict)
    assert value["key"] == key
    data = value["data"]
    assert hashlib.sha256(data.tobytes()).hexdigest() == value["sha256"]
    assert np.array_equal(data, np.full(data.size, fill_of(key, value["writer"], value["counter"])))


def run_two(
    args_a: list[str], args_b: list[str], env: dict[str, str] | None, cwd: Path
) -> list[dict[str, Any]]:
    """Start both children, release them together, return their reports."""
    children = [
        subprocess.Popen(
            [sys.executable, "-c", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=cwd,
        )
        for args in (args_a, args_b)
    ]
    for child in children:
        assert child.stdout is not None
        line = child.stdout.readline()
        if line.strip() != "ready":
            for other in children:
                other.kill()
            pytest.fail(f"a child did not start: {line!r} {child.communicate()[1]}")
    for child in children:  # the start signal, as close together as possible
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    reports = []
    for name, child in zip("ab", children, strict=True):
        out, err = child.communicate(timeout=500)
        assert child.returncode == 0, f"child {name} failed (exit {child.returncode}):\n{err}"
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports


def check_store(directory: Path, workflow: str, reports: list[dict[str, Any]]) -> None:
    """Every process's own keys hold its last value; shared keys hold a complete value."""
    store = LocalStore(directory)
    try:
        for report in reports:
            assert report["counts"]["save"] + report["counts"]["load"] >= 1_000
            assert report["last"], "a child saved none of its own keys"
            for key, counter in report["last"].items():
                value = store.load(workflow, key)
                if isinstance(value, dict) and "value" in value and "key" not in value:
                    value = value["value"]  # the call form saves {"value": ...}
                check(key, value)
                assert value["counter"] == counter, f"{key} lost its last value"
        for i in range(SHARED_KEYS):  # each child saves ~300 times to these: all are saved
            key = f"shared:{i}"
            assert store.entry(workflow, key) is not None, f"{key} was never saved"
            value = store.load(workflow, key)
            if "key" not in value:
                value = value["value"]
            check(key, value)
            assert value["writer"] in ("a", "b")
        store.gc(min_age=0)
        assert store.verify() == []
    finally:
        store.close()


def test_two_processes_share_one_step_store(tmp_path: Path) -> None:
    directory = str(tmp_path / "store")
    args_a = [STORE_CHILD, directory, "a", str(OPS), "1", str(SHARED_KEYS), str(OWN_KEYS)]
    args_b = [STORE_CHILD, directory, "b", str(OPS), "2", str(SHARED_KEYS), str(OWN_KEYS)]
    reports = run_two(args_a, args_b, env=None, cwd=tmp_path)
    for report in reports:
        assert report["counts"]["save"] + report["counts"]["load"] == OPS
        assert report["counts"]["hit"] > 0
    check_store(Path(directory), "wf", reports)


def test_two_processes_share_one_store_through_the_call_form(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    env = {**os.environ, "AWAITLY_NB_DIR": str(directory)}
    env.pop("AWAITLY_NB_STORE", None)
    args_a = [CALL_CHILD, "a", str(OPS), "3", str(SHARED_KEYS), str(OWN_KEYS)]
    args_b = [CALL_CHILD, "b", str(OPS), "4", str(SHARED_KEYS), str(OWN_KEYS)]
    reports = run_two(args_a, args_b, env=env, cwd=tmp_path)
    for report in reports:
        assert report["counts"]["save"] + report["counts"]["load"] == OPS
        assert report["counts"]["hit"] > 0
    check_store(directory, "wf", reports)


# --- a writer that holds the index lock ----------------------------------------------------


@pytest.fixture
def locked_store(tmp_path: Path) -> Any:
    """A store whose index another connection holds in a write transaction.

    diskcache waits ``timeout`` seconds (60 by default) for the lock; the
    store's index is reopened with 0.2 s so the test does not wait a minute.
    """
    awaitly_nb.configure(dir=tmp_path / "store", workflow="wf")
    try:
        assert awaitly_nb.step(lambda: "previous", key="k") == "previous"
        store = get_session().store
        store.index._timeout = 0.2  # diskcache's own attribute: the sqlite busy timeout
        store.index.close()  # reconnects with it on next use
        other = sqlite3.connect(
            str(tmp_path / "store" / "index" / "cache.db"), isolation_level=None
        )
        other.execute("BEGIN IMMEDIATE")
        try:
            yield store
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert awaitly_nb.step(lambda: "again", key="k", pin=True) == "previous"
    finally:
        close_session_stores()
    awaitly_nb.configure(dir=None, workflow=None)


def test_a_save_blocked_by_another_writer_is_a_storage_error(locked_store: LocalStore) -> None:
    with pytest.raises(StorageError):
        locked_store.save("wf", "k", {}, "new")


def test_a_call_step_blocked_by_another_writer_warns_and_returns(locked_store: LocalStore) -> None:
    with warnings.catch_warnings(record=True) as caught:  # lets another exception through
        warnings.simplefilter("always")
        assert awaitly_nb.step(lambda: "new", key="k", force=True) == "new"
    assert [
        w for w in caught if w.category is CacheWarning and "could not be saved" in str(w.message)
    ]
