"""The step engine's rules, without IPython: hit, miss, stale, pin, force, unreadable, lineage.

Every front end (``%%step``, ``with step``, ``step(fn)``) goes through these
same calls: ``lookup`` → (``begin`` → run → ``fail`` | ``finish``).
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from awaitly_nb.core.engine import Decision, StepEngine, StepSpec, decide
from awaitly_nb.core.events import Event
from awaitly_nb.core.payload import StepPayload
from awaitly_nb.errors import CacheWarning, StorageError
from awaitly_nb.storage.base import StepStore
from awaitly_nb.storage.manifest import StepManifest
from awaitly_nb.storage.memory import MemoryStore

WF = "analysis.ipynb"


class Harness:
    """An engine over one memory store, recording every event type it emits."""

    def __init__(self, store: StepStore) -> None:
        self.store = store
        self.engine = StepEngine(lambda: self.store, lambda: WF)
        self.events: list[Event] = []
        self.engine.listeners.append(self.events.append)

    def types(self) -> list[str]:
        return [e.type for e in self.events]

    def run(
        self,
        spec: StepSpec,
        body: Callable[[], StepPayload],
        *,
        optional: set[str] | None = None,
    ) -> Decision:
        """What a front end does: look up; on anything but a hit, run and save."""
        decision = self.engine.lookup(spec)
        if decision.hit:
            return decision
        run = self.engine.begin(decision)
        try:
            payload = body()
        except BaseException as exc:
            self.engine.fail(run, exc)
            raise
        self.engine.finish(run, payload, optional=optional or set())
        return decision


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(MemoryStore(tmp_path))


def cell(key: str = "k", code: str = "code-1", **options: Any) -> StepSpec:
    return StepSpec(key, "cell", code=code, **options)


def variables(**values: Any) -> Callable[[], StepPayload]:
    return lambda: StepPayload(variables=values)


# --- the rule itself (a pure function) ------------------------------------------------------


def test_decide_each_status_with_its_reason() -> None:
    saved = StepManifest(WF, "k", kind="cell", fingerprint="c1", code="c1")
    assert decide(cell(code="c1"), None, {}) == ("miss", "")
    assert decide(cell(code="c1"), saved, {}) == ("hit", "")
    assert decide(cell(code="c2"), saved, {}) == ("stale", "code changed")
    assert decide(cell(code="c2", pin=True), saved, {}) == ("hit", "")
    assert decide(cell(code="c1", force=True), saved, {}) == ("forced", "--force")
    assert decide(StepSpec("k", "block", code="c1"), saved, {}) == ("hit", "")  # same shape
    status, reason = decide(StepSpec("k", "call", code="c1"), saved, {})
    assert status == "stale" and "saved by a cell step, this is a call step" in reason
    assert decide(StepSpec("k", "cell", code=None), saved, {}) == ("hit", "")  # code unknown


def test_decide_names_the_recomputed_input() -> None:
    spec = cell(code="c1", reads=frozenset({"raw"}))
    saved = StepManifest(WF, "k", fingerprint="old", code="c1", inputs={"raw": "load@1.000000"})
    status, reason = decide(spec, saved, {"raw": "load@2.000000"})
    assert status == "stale"
    assert reason == "raw was recomputed (by 'load')"


# --- lookup, run, save ----------------------------------------------------------------------


def test_a_miss_runs_saves_and_then_hits_with_the_payload(h: Harness) -> None:
    first = h.run(cell(), variables(x=1))
    assert first.status == "miss"
    assert h.types() == ["step_cache_miss", "step_start", "step_success", "step_complete"]
    manifest = h.store.manifest(WF, "k")
    assert manifest is not None
    assert (manifest.kind, manifest.code, manifest.variables) == ("cell", "code-1", ("x",))
    assert manifest.types == {"x": "int"}

    h.events.clear()
    second = h.run(cell(), lambda: pytest.fail("a hit must not run the body"))
    assert second.hit and second.payload is not None
    assert second.payload.variables == {"x": 1}
    assert h.types() == ["step_cache_hit"]


def test_changed_code_is_stale_and_the_rerun_replaces_the_entry(h: Harness) -> None:
    h.run(cell(code="v1"), variables(x=1))
    again = h.run(cell(code="v2"), variables(x=2))
    assert again.status == "stale"
    assert again.reason == "code changed"
    assert h.store.load(WF, "k")["variables"] == {"x": 2}
    assert h.run(cell(code="v2"), variables(x=3)).hit


def test_pin_trusts_the_key_and_force_runs_again(h: Harness) -> None:
    h.run(cell(code="v1"), variables(x=1))
    assert h.run(cell(code="v2", pin=True), variables(x=2)).hit
    forced = h.run(cell(code="v1", force=True), variables(x=3))
    assert forced.status == "forced"
    assert h.store.load(WF, "k")["variables"] == {"x": 3}


def test_a_call_step_saves_a_value_and_a_cell_with_its_key_is_stale(h: Harness) -> None:
    call = StepSpec("k", "call", code="f")
    h.run(call, lambda: StepPayload(value=[1, 2]))
    hit = h.run(call, lambda: pytest.fail("hit"))
    assert hit.payload is not None and hit.payload.value == [1, 2]
    assert h.run(cell(), variables(x=1)).status == "stale"


def test_a_failure_is_reported_and_never_saved(h: Harness) -> None:
    def boom() -> StepPayload:
        raise ValueError("no")

    with pytest.raises(ValueError):
        h.run(cell(), boom)
    assert h.types() == ["step_cache_miss", "step_start", "step_error"]
    assert h.store.manifest(WF, "k") is None
    assert h.engine.status()[0].state == "failed"


def test_an_unsaveable_variable_is_a_warning_naming_it_and_nothing_is_saved(h: Harness) -> None:
    with pytest.warns(CacheWarning, match=r"cannot be saved: lock \(lock\)"):
        h.run(cell(), variables(x=1, lock=threading.Lock()))
    assert h.store.manifest(WF, "k") is None
    assert "step_complete" not in h.types()
    (row,) = h.engine.status()
    assert row.state == "failed" and "not saved" in (row.error or "")


def test_an_unsaveable_optional_variable_is_left_out(h: Harness) -> None:
    h.run(cell(), variables(x=1, conn=threading.Lock()), optional={"conn"})
    assert h.store.load(WF, "k")["variables"] == {"x": 1}
    assert h.store.load(WF, "k")["skipped"] == ["conn"]


def test_a_store_that_refuses_the_save_is_a_warning_and_the_step_stays_unsaved(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any) -> None:
        raise StorageError("disk full")

    monkeypatch.setattr(h.store, "write", refuse)
    with pytest.warns(CacheWarning, match="could not be saved: disk full"):
        h.run(cell(), variables(x=1))
    assert h.store.manifest(WF, "k") is None


def test_an_unreadable_entry_runs_again_with_a_warning(h: Harness) -> None:
    h.run(cell(), variables(x=1))
    record = h.store.read(WF, "k")
    record["value"]["stream_xxh3"] = "0" * 32
    h.store.write(WF, "k", record)
    with pytest.warns(CacheWarning, match="cannot be restored and runs again"):
        again = h.run(cell(), variables(x=2))
    assert again.status == "unreadable"
    assert h.run(cell(), variables(x=3)).hit


def test_an_unknown_manifest_format_is_a_miss_with_a_warning_naming_it(h: Harness) -> None:
    h.run(cell(), variables(x=1))
    record = h.store.read(WF, "k")
    record["manifest"]["format"] = 99
    h.store.write(WF, "k", record)
    with pytest.warns(CacheWarning, match="manifest format 99"):
        assert h.run(cell(), variables(x=2)).status == "miss"
    assert h.store.load(WF, "k")["variables"] == {"x": 2}


def test_an_unreachable_store_is_a_miss_with_a_warning(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(*args: Any) -> None:
        raise StorageError("connection refused")

    monkeypatch.setattr(h.store, "read", down)
    with pytest.warns(CacheWarning, match="cannot be read, so step 'k' runs"):
        assert h.engine.lookup(cell()).status == "miss"


# --- lineage ----------------------------------------------------------------------------------


def test_a_reader_is_stale_once_its_producer_ran_again(h: Harness) -> None:
    h.run(cell("raw", code="load"), variables(raw=[1, 2]))
    reader = cell("clean", code="dropna", reads=frozenset({"raw", "len"}))
    h.run(reader, variables(clean=[1]))
    assert h.store.manifest(WF, "clean").inputs.keys() == {"raw"}  # type: ignore[union-attr]
    assert h.run(reader, variables(clean=[0])).hit

    h.run(cell("raw", code="load", force=True), variables(raw=[3]))
    stale = h.run(reader, variables(clean=[3]))
    assert stale.status == "stale"
    assert stale.reason == "raw was recomputed (by 'raw')"


def test_a_step_that_rebinds_its_own_input_stays_a_hit_in_the_same_kernel(h: Harness) -> None:
    h.run(cell("load", code="load"), variables(df=[1, None]))
    dropna = cell("dropna", code="df = df.dropna()", reads=frozenset({"df"}))
    h.run(dropna, variables(df=[1]))
    # Run again in the same kernel: df now comes from "dropna" itself, yet it is still a hit.
    assert h.run(dropna, lambda: pytest.fail("hit")).hit


def test_a_restored_step_makes_its_variables_inputs_of_later_steps(tmp_path: Path) -> None:
    first = Harness(MemoryStore(tmp_path))
    first.run(cell("raw", code="load"), variables(raw=[1]))
    first.run(cell("clean", code="c", reads=frozenset({"raw"})), variables(clean=[1]))

    restarted = Harness(first.store)  # a new kernel on the same store
    assert restarted.run(cell("raw", code="load"), variables(raw=[9])).hit
    assert restarted.run(cell("clean", code="c", reads=frozenset({"raw"})), variables()).hit


def test_an_unsaved_rerun_makes_readers_stale(h: Harness) -> None:
    h.run(cell("raw", code="load"), variables(raw=[1]))
    reader = cell("clean", code="c", reads=frozenset({"raw"}))
    h.run(reader, variables(clean=[1]))
    with pytest.warns(CacheWarning):
        h.run(cell("raw", code="load", force=True), variables(raw=threading.Lock()))
    assert h.run(reader, variables(clean=[2])).status == "stale"


# --- the rest of the workflow's steps ---------------------------------------------------------


def test_forget_and_clear_update_the_status(h: Harness) -> None:
    h.run(cell("a"), variables(a=1))
    h.run(cell("b"), variables(b=2))
    changed: list[int] = []
    h.engine.on_change.append(lambda: changed.append(1))
    assert [m.key for m in h.engine.steps()] == ["a", "b"]
    assert h.engine.forget("a") is True
    assert {r.key: r.state for r in h.engine.status()} == {"b": "complete", "a": "not run yet"}
    assert h.engine.clear() == 1
    assert h.engine.steps() == [] and len(changed) == 2


def test_the_engine_and_the_store_protocol_import_no_ipython() -> None:
    code = (
        "import sys, awaitly_nb.core.engine, awaitly_nb.storage.local, awaitly_nb.config\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('IPython', 'ipywidgets')]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- inputs by value ------------------------------------------------------------------------


def reading(key: str, namespace: dict[str, Any], *names: str, code: str = "c") -> StepSpec:
    return StepSpec(key, "cell", code=code, reads=frozenset(names), values=namespace)


def test_a_changed_value_read_from_any_cell_makes_the_step_stale_and_says_how(
    h: Harness,
) -> None:
    ns: dict[str, Any] = {"raw": list(range(10)), "t": 5}
    h.run(reading("clean", ns, "raw", "t"), variables(clean=[6, 7, 8, 9]))
    assert h.run(reading("clean", ns, "raw", "t"), variables()).hit  # unchanged: restored

    ns["t"] = 6  # a plain cell edited
    stale = h.run(reading("clean", ns, "raw", "t"), variables(clean=[7, 8, 9]))
    assert stale.status == "stale" and stale.reason == "t changed (5 → 6)"
    ns["raw"].append(10)  # changed in place by a plain cell
    stale = h.run(reading("clean", ns, "raw", "t"), variables(clean=[7, 8, 9, 10]))
    assert stale.reason == (
        "raw changed ([0, 1, 2, 3, 4, 5, 6, 7, 8, 9] → [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10])"
    )
    assert h.run(reading("clean", ns, "raw", "t"), variables()).hit


def test_equal_values_restore_whoever_produced_them(tmp_path: Path) -> None:
    first = Harness(MemoryStore(tmp_path))
    ns: dict[str, Any] = {"raw": [1, 2]}
    first.run(reading("raw", {}, code="load"), variables(raw=[1, 2]))
    first.run(reading("total", ns, "raw"), variables(total=3))
    # Upstream forced to run again but producing the same value: nothing downstream changed.
    first.run(StepSpec("raw", "cell", code="load", force=True), variables(raw=[1, 2]))
    assert first.run(reading("total", ns, "raw"), variables()).hit


def test_a_fixed_helper_function_makes_its_callers_stale_even_through_another(
    h: Harness,
) -> None:
    ns: dict[str, Any] = {}
    helpers = (
        "SCALE = 2\n"
        "def scale(x):\n    return x * SCALE\n"
        "def normalize(x):\n    return scale(x) + 1\n"
    )
    exec(helpers, ns)
    ns["__name__"] = "__main__"
    for name in ("scale", "normalize"):
        ns[name].__module__ = "__main__"
    h.run(reading("out", ns, "normalize"), variables(out=5))
    assert h.run(reading("out", ns, "normalize"), variables()).hit
    ns["SCALE"] = 3  # a global the helper's helper reads
    stale = h.run(reading("out", ns, "normalize"), variables(out=7))
    assert stale.status == "stale" and stale.reason == "normalize() changed"


def test_using_a_module_never_makes_a_step_stale(h: Harness) -> None:
    import json

    ns: dict[str, Any] = {"json": json, "rows": [1]}
    h.run(reading("dump", ns, "json", "rows"), variables(text="[1]"))
    manifest = h.store.manifest(WF, "dump")
    assert manifest is not None and set(manifest.inputs) == {"json", "rows"}
    h.run(reading("other", ns, "json"), variables(x=1))  # another step "uses" json
    assert h.run(reading("dump", ns, "json", "rows"), variables()).hit


def test_a_value_that_cannot_be_fingerprinted_falls_back_to_lineage_and_is_named(
    h: Harness,
) -> None:
    ns: dict[str, Any] = {"lock": threading.Lock(), "n": 1}
    first = h.run(reading("k", ns, "lock", "n"), variables(x=1))
    assert first.unchecked == ("lock",)
    again = h.run(reading("k", ns, "lock", "n"), variables())
    assert again.hit and again.unchecked == ("lock",)
    manifest = h.store.manifest(WF, "k")
    assert manifest is not None and manifest.inputs["lock"].startswith("unchecked:lock|")


def test_an_input_missing_from_the_namespace_is_named(h: Harness) -> None:
    ns: dict[str, Any] = {"raw": [1]}
    h.run(reading("k", ns, "raw"), variables(x=1))
    stale = h.engine.lookup(reading("k", {}, "raw"))
    assert stale.status == "stale"
    assert stale.reason == "raw is not defined now and no saved step makes it"


def test_a_missing_input_is_vouched_for_by_the_valid_step_that_saved_it(h: Harness) -> None:
    ns: dict[str, Any] = {"n": 3}
    h.run(reading("make", ns, "n"), variables(raw=[0, 1, 2]))
    h.run(reading("use", {**ns, "raw": [0, 1, 2]}, "raw"), variables(total=3))
    h.engine.reset()  # a new kernel: raw is not defined
    trusted = h.engine.lookup(reading("use", {"n": 3}, "raw"))
    assert trusted.hit and trusted.trusted == {"raw": "make"}
    # The step that made raw read n = 3; with n = 4 now it would make another raw.
    stale = h.engine.lookup(reading("use", {"n": 4}, "raw"))
    assert stale.status == "stale" and not stale.trusted
    assert (
        stale.reason
        == "raw is not defined now; step 'make' makes it, but its input n changed since"
    )


def test_the_status_says_why_a_step_ran_again(h: Harness) -> None:
    ns: dict[str, Any] = {"t": 5}
    h.run(reading("clean", ns, "t"), variables(x=1))
    ns["t"] = 6
    h.run(reading("clean", ns, "t"), variables(x=2))
    (row,) = h.engine.status()
    assert (row.state, row.why) == ("complete", "t changed (5 → 6)")
    stale_events = [e for e in h.events if e.type == "step_cache_miss" and e.reason == "stale"]
    assert [e.detail for e in stale_events] == ["t changed (5 → 6)"]


def test_variants_replay_an_earlier_parameter_instead_of_computing_it_again(h: Harness) -> None:
    ns: dict[str, Any] = {"n": 3}
    h.run(reading("model", ns, "n"), variables(fit=3))
    ns["n"] = 4
    assert h.run(reading("model", ns, "n"), variables(fit=4)).status == "stale"
    ns["n"] = 3
    back = h.run(reading("model", ns, "n"), lambda: pytest.fail("n=3 was computed before"))
    assert back.hit and back.payload is not None and back.payload.variables == {"fit": 3}
    assert [m.key for m in h.engine.steps()] == ["model"]  # listed once
    assert len(h.store.variant_keys(WF, "model")) == 2


def test_saving_finds_a_steps_variants_without_listing_the_store(h: Harness) -> None:
    listed: list[str | None] = []
    record_keys = h.store.record_keys
    h.store.record_keys = lambda workflow=None: listed.append(workflow) or record_keys(workflow)  # type: ignore[method-assign]
    ns: dict[str, Any] = {}
    for n in range(6):
        ns["n"] = n
        for key in ("a", "b", "c"):
            h.run(reading(key, ns, "n"), variables(fit=n))
    assert listed == []  # each save read the step's own record, not every key
    assert len(h.store.variant_keys(WF, "a")) == h.engine.variants == 4
    ns["n"] = 5  # the newest variants are the ones kept
    assert h.run(reading("a", ns, "n"), lambda: pytest.fail("kept")).hit
    ns["n"] = 2
    assert h.run(reading("a", ns, "n"), lambda: pytest.fail("kept")).hit
    ns["n"] = 1
    assert h.run(reading("a", ns, "n"), variables(fit=1)).status == "stale"


def test_a_record_saved_without_its_variant_list_is_searched_once(h: Harness) -> None:
    ns: dict[str, Any] = {}
    for n in range(3):
        ns["n"] = n
        h.run(reading("model", ns, "n"), variables(fit=n))
    raw = h.store.read(WF, "model")
    del raw["variants"]  # as written before the list existed, or imported
    h.store.write(WF, "model", raw)
    for n in range(3, 6):
        ns["n"] = n
        h.run(reading("model", ns, "n"), variables(fit=n))
    assert len(h.store.variant_keys(WF, "model")) == 4
    assert len(h.store.read(WF, "model")["variants"]) == 4


def test_variants_are_capped_forgotten_with_their_key_and_keep_their_blobs(h: Harness) -> None:
    import numpy as np

    ns: dict[str, Any] = {}
    for n in range(6):
        ns["n"] = n
        h.run(reading("model", ns, "n"), variables(weights=np.full(20_000, float(n))))
    assert len(h.store.variant_keys(WF, "model")) == h.engine.variants == 4
    h.store.gc(min_age=0)
    ns["n"] = 3  # a kept variant: its blob survived gc
    back = h.run(reading("model", ns, "n"), lambda: pytest.fail("kept"))
    assert back.hit and back.payload is not None
    assert float(back.payload.variables["weights"][0]) == 3.0
    ns["n"] = 0  # the oldest: dropped
    assert h.run(reading("model", ns, "n"), variables(weights=np.zeros(1))).status == "stale"
    assert h.engine.forget("model")
    assert h.store.variant_keys(WF, "model") == [] and h.store.step_keys() == []


def test_a_step_that_failed_in_this_session_vouches_for_nothing(h: Harness) -> None:
    ns: dict[str, Any] = {"n": 3}
    h.run(reading("make", ns, "n"), variables(raw=[0, 1, 2]))
    h.run(reading("use", {**ns, "raw": [0, 1, 2]}, "raw"), variables(total=3))
    h.engine.reset()  # a new kernel, where 'make' now raises (a plain run stops there)
    run = h.engine.begin(h.engine.lookup(reading("make", {**ns, "n": 4}, "n")))
    h.engine.fail(run, NameError("n"))
    stale = h.engine.lookup(reading("use", ns, "raw"))
    assert stale.status == "stale" and not stale.trusted
    assert "failed when it ran in this kernel" in stale.reason
