"""A script's cold start: what importing awaitly_nb and restoring a tiny step loads."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from awaitly_nb.storage.local import LocalStore

HEAVY = [
    "asyncio",
    "diskcache",
    "cloudpickle",
    "tempfile",
    "hmac",
    "tqdm",
    "ipywidgets",
    "redis",
    "fsspec",
    "awaitly_nb.sharing",
    "awaitly_nb.cli",
    "awaitly_nb.notebook.widget",
    "awaitly_nb.storage.shared",
    "awaitly_nb.core.workflow",
    "awaitly_nb.core.events",  # made only for a listener
    "awaitly_nb.core.state",  # the workflow API's records, and events' meta
    "json",
    "random",
    "pickletools",  # a step's key is encoded without it
    "typing",  # only the type checker reads the annotations (see awaitly_nb._namedtuple)
]
"""Modules a process that only restores steps does not need."""


def _run(code: str, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWAITLY_NB_")}
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, check=True
    )
    return done.stdout


def test_import_awaitly_nb_loads_none_of_its_parts_until_used() -> None:
    loaded = ast.literal_eval(_run("import sys, awaitly_nb; print(sorted(sys.modules))"))
    ours = [m for m in loaded if m.startswith("awaitly_nb.")]
    assert ours == ["awaitly_nb._version"]
    assert not [m for m in HEAVY if m in loaded]


def test_a_script_restoring_a_step_loads_only_what_a_lookup_needs(tmp_path: Path) -> None:
    step = (
        "import sys, awaitly_nb\n"
        "awaitly_nb.configure(dir=sys.argv[1], workflow='w')\n"
        "value = awaitly_nb.step(lambda: {'rows': 3}, key='tiny')\n"
        "print([value, sorted(sys.modules)])\n"
    )
    first, _ = ast.literal_eval(_run(step, str(tmp_path)))  # computes and saves
    value, loaded = ast.literal_eval(_run(step, str(tmp_path)))  # restores
    assert first == value == {"rows": 3}
    assert [m for m in HEAVY if m in loaded] == []


def test_the_light_reader_reads_what_diskcache_wrote_small_and_big(tmp_path: Path) -> None:
    writer = LocalStore(tmp_path)
    big = {f"name{i}": "x" * 50 for i in range(2_000)}  # a record over diskcache's 32 KB
    writer.save("w", "small", {}, {"a": 1})
    writer.save("w", "big", {"variables": sorted(big)}, big)
    writer.save("w", "array", {}, np.arange(10))
    writer.close()

    reader = LocalStore(tmp_path)
    assert reader.load("w", "small") == {"a": 1}
    assert reader.load("w", "big") == big
    assert list(reader.load("w", "array")) == list(range(10))
    assert reader.read("w", "nope") is None
    assert reader._cache is None  # diskcache's Cache was never opened
    reader.save("w", "small", {}, {"a": 2})  # the first write opens it
    assert reader._cache is not None
    assert reader.load("w", "small") == {"a": 2}
    assert LocalStore(tmp_path).load("w", "small") == {"a": 2}


def test_the_light_reader_finds_keys_of_an_index_made_with_another_pickle_protocol(
    tmp_path: Path,
) -> None:
    import diskcache

    from awaitly_nb.storage.local import _index_disk

    index = diskcache.Cache(
        str(tmp_path / "index"), eviction_policy="none", disk=_index_disk(), disk_pickle_protocol=4
    )
    index.close()
    writer = LocalStore(tmp_path)  # opens the index with the protocol it was made with
    writer.save("w", "old", {}, {"a": 1})
    writer.close()

    reader = LocalStore(tmp_path)
    assert reader.load("w", "old") == {"a": 1}
    assert reader.read("w", "nope") is None
    assert reader._cache is None  # found by the light reader, not diskcache's Cache


def test_a_step_key_is_encoded_as_diskcache_encodes_it() -> None:
    import pickle
    import pickletools
    import random

    from awaitly_nb.storage.local import _tuple_key

    rng = random.Random(7)
    alphabet = "ab:/ é€😀\ud800" + "xyz0123456789"
    for _ in range(3000):
        key = tuple(
            "".join(rng.choice(alphabet) for _ in range(rng.choice([0, 1, 3, 60, 255, 256, 300])))
            for _ in range(3)
        )
        _tuple_key.cache_clear()
        assert _tuple_key(key, 5) == pickletools.optimize(pickle.dumps(key, 5)), key
