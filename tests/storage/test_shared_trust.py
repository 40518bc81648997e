"""Signed shared stores: write access to the team's Redis or bucket must not be enough to
run code in a teammate's kernel (issue 14). Real redis-server and fsspec stores."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pickle
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xxhash
from test_shared import KEY

import awaitly_nb
from awaitly_nb.config import get_session
from awaitly_nb.errors import CacheWarning, TrustError
from awaitly_nb.storage.shared import adapter_for_url, open_shared_store


class _Evil:
    """A pickle that creates ``path`` when it is loaded (what an intruder would upload)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> Any:
        return (os.system, (f"touch {self.path}",))


@pytest.fixture(autouse=True)
def _team_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AWAITLY_NB_KEY", KEY.decode())
    monkeypatch.delenv("AWAITLY_NB_TRUST_UNSIGNED", raising=False)
    yield
    awaitly_nb.configure(dir=None, workflow=None, store=None, key=None, trust_unsigned=None)


def _record(url: str, workflow: str, key: str) -> tuple[Any, str, dict[str, Any]]:
    adapter = adapter_for_url(url)
    name = "step:" + json.dumps([workflow, key])
    return adapter, name, json.loads(adapter.get(name))


def _plant(url: str, workflow: str, key: str, canary: Path, *, sign_with: bytes | None) -> None:
    """Replace a step's pickle with one that creates ``canary``, recomputing every plain
    hash as an intruder can; sign it with ``sign_with`` (None: drop the signature)."""
    from awaitly_nb.storage.shared import SharedStore
    from awaitly_nb.storage.signing import key_id, sign

    adapter, name, data = _record(url, workflow, key)
    stream = pickle.dumps({"value": _Evil(canary)}, protocol=5)
    value = data["value"]
    value.update(
        stream_b64=base64.b64encode(stream).decode(),
        stream_sha256=hashlib.sha256(stream).hexdigest(),
        stream_xxh3=xxhash.xxh3_128_hexdigest(stream),
        buffers=[],
    )
    value.pop("stream_ref", None)
    data.pop("signature", None)
    data.pop("key_id", None)
    if sign_with is not None:
        data["key_id"] = key_id(sign_with)
        data["signature"] = sign(SharedStore._signed(workflow, key, data), sign_with)
    adapter.set(name, json.dumps(data))


@pytest.mark.parametrize("forged", ["unsigned", "other key", "old signature"])
def test_a_planted_pickle_never_runs_and_the_step_runs_here(
    shared_url: str,
    tmp_path: Path,
    forged: str,
) -> None:
    canary = tmp_path / "canary"
    awaitly_nb.configure(dir=tmp_path / "alice", store=shared_url, workflow="team")
    assert awaitly_nb.step(lambda: {"weights": 1}, key="model:v1") == {"weights": 1}
    _, _, saved = _record(shared_url, "team", "model:v1")
    _plant(shared_url, "team", "model:v1", canary, sign_with=None if forged == "unsigned" else b"x")
    if forged == "old signature":  # the signature alice made, over her own record
        adapter, name, data = _record(shared_url, "team", "model:v1")
        data["signature"], data["key_id"] = saved["signature"], saved["key_id"]
        adapter.set(name, json.dumps(data))

    awaitly_nb.configure(dir=tmp_path / "bob")  # a teammate: nothing cached locally
    with pytest.warns(CacheWarning) as caught:
        value = awaitly_nb.step(lambda: {"weights": 2}, key="model:v1", pin=True)
    assert any("'model:v1' of 'team' is refused" in str(w.message) for w in caught)
    assert not canary.exists()  # nothing was unpickled
    assert value == {"weights": 2}  # it ran here...
    awaitly_nb.configure(dir=tmp_path / "carol")
    if forged != "other key":  # unsigned, or changed after signing: replaced
        again = awaitly_nb.step(lambda: {"weights": 3}, key="model:v1", pin=True)
        assert again == {"weights": 2}  # ...and its signed result replaced the planted one
    else:
        # ...but a record signed with another key is not saved over (that key may be the
        # team's, and this kernel's the mistyped one): it stays refused until forgotten
        assert any("left as it is" in str(w.message) for w in caught)
        with pytest.warns(CacheWarning):  # refused, and not saved over
            assert awaitly_nb.step(lambda: {"weights": 3}, key="model:v1") == {"weights": 3}
        assert get_session().engine.forget("model:v1")
        awaitly_nb.step(lambda: {"weights": 4}, key="model:v1")
        awaitly_nb.configure(dir=tmp_path / "dave")
        assert awaitly_nb.step(lambda: {"weights": 5}, key="model:v1", pin=True) == {"weights": 4}
    assert not canary.exists()


def test_a_swapped_blob_is_refused_before_anything_is_unpickled(
    redis_db: str,
    tmp_path: Path,
) -> None:
    canary = tmp_path / "canary"
    awaitly_nb.configure(dir=tmp_path / "alice", store=redis_db, workflow="team")
    awaitly_nb.step(lambda: np.arange(100_000.0), key="big")
    adapter, name, data = _record(redis_db, "team", "big")
    # The intruder uploads a pickle as a blob of its own and points the record at it.
    evil = pickle.dumps({"value": _Evil(canary)}, protocol=5)
    blob = xxhash.xxh3_128_hexdigest(evil)
    adapter.set(f"blob:{blob}:0", evil)
    adapter.set(f"blob:{blob}:meta", json.dumps({"size": len(evil), "parts": 1, "uploaded_at": 0}))
    data["value"].update(stream_ref=[blob, len(evil)], stream_xxh3=blob, buffers=[])
    data["value"].pop("stream_b64", None)
    data["sha256"]["blobs"] = {blob: hashlib.sha256(evil).hexdigest()}
    adapter.set(name, json.dumps(data))

    awaitly_nb.configure(dir=tmp_path / "bob")
    with pytest.warns(CacheWarning, match="signature does not match"):
        value = awaitly_nb.step(lambda: np.zeros(3), key="big", pin=True)
    assert not canary.exists()
    np.testing.assert_array_equal(value, np.zeros(3))


def test_verify_reports_forged_records_and_never_unpickles(
    shared_url: str,
    tmp_path: Path,
) -> None:
    from click.testing import CliRunner

    from awaitly_nb.cli import main

    canary = tmp_path / "canary"
    awaitly_nb.configure(dir=tmp_path / "alice", store=shared_url, workflow="team")
    awaitly_nb.step(lambda: 1, key="good")
    awaitly_nb.step(lambda: 2, key="bad")
    _plant(shared_url, "team", "bad", canary, sign_with=b"not the team key")
    store = open_shared_store(shared_url, tmp_path / "checker", key=KEY)
    problems = store.verify()
    assert len(problems) == 1 and "team / bad" in problems[0] and "signature" in problems[0]
    verified = CliRunner().invoke(main, ["--store", shared_url, "verify"])
    assert verified.exit_code != 0 and "team / bad" in verified.output
    assert not canary.exists()


def test_a_shared_store_needs_a_key_unless_unsigned_use_is_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"memory://awaitly-trust-{tmp_path.name}"
    monkeypatch.delenv("AWAITLY_NB_KEY")
    with pytest.raises(TrustError, match=r"needs a team key.*AWAITLY_NB_KEY"):
        awaitly_nb.configure(dir=tmp_path / "a", store=url, workflow="w")  # said at once
    with pytest.raises(TrustError, match=r"needs a team key"):
        awaitly_nb.step(lambda: 1, key="k")  # and again if one goes on
    monkeypatch.setenv("AWAITLY_NB_TRUST_UNSIGNED", "1")
    awaitly_nb.configure(dir=tmp_path / "a")
    assert awaitly_nb.step(lambda: 1, key="k") == 1  # saved unsigned, at the user's word
    awaitly_nb.configure(key="team-key", trust_unsigned=False)  # a teammate with the key
    with pytest.warns(CacheWarning, match="not signed"):
        assert awaitly_nb.step(lambda: 2, key="k", pin=True) == 2


def test_gc_with_another_key_frees_no_blob_a_record_names(
    shared_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    awaitly_nb.configure(dir=tmp_path / "alice", store=shared_url, workflow="team")
    awaitly_nb.step(lambda: np.arange(50_000.0), key="big")
    team = open_shared_store(shared_url, tmp_path / "check", key=KEY)
    (blob,) = team.referenced_blobs()

    stranger = open_shared_store(shared_url, tmp_path / "mistyped", key=b"WRONG")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CacheWarning)  # its records are refused: fine
        report = stranger.gc(min_age=0)
    assert report.blobs == 0
    assert blob in set(team.blobs.names())
    awaitly_nb.configure(dir=tmp_path / "bob")
    np.testing.assert_array_equal(
        awaitly_nb.step(lambda: np.zeros(1), key="big", pin=True), np.arange(50_000.0)
    )
