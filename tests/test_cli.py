"""The ``awaitly-nb`` command: ls, show, forget, clear, gc, export, import, verify.

Driven in-process with click's CliRunner against ``--dir`` stores made by the
session (as ``%%step`` makes them); one run of the installed console script
proves the entry point. Exit codes: 0 ok; 1 problems or key not found; 2 bad
usage; 3 untrusted bundle; 4 damaged bundle.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from awaitly_testing import flip_byte
from click.testing import CliRunner, Result

import awaitly_nb
from awaitly_nb import progress as progress_module
from awaitly_nb.cli import main
from awaitly_nb.core.payload import StepPayload
from awaitly_nb.storage.local import LocalStore
from awaitly_nb.storage.manifest import StepManifest

COMMANDS = ["ls", "show", "forget", "clear", "gc", "export", "import", "verify"]
TEAM_KEY = "team-secret-1"
OTHER_KEY = "someone-elses-key"


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for var in ("AWAITLY_NB_KEY", "AWAITLY_NB_DIR", "JPY_SESSION_NAME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)  # the default store (./.awaitly) lands in tmp_path
    yield
    awaitly_nb.configure(dir=None, workflow=None)


def cli(*args: Any, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], input=input, env=env)


def array() -> np.ndarray:
    return np.random.default_rng(1).standard_normal(100_000)  # 800 KB: a blob


def save_cell(
    directory: Path, workflow: str, key: str, variables: dict[str, Any], duration_ms: float
) -> None:
    """Save a step the way ``%%step`` does: its manifest fields and its payload."""
    store = LocalStore(directory)
    try:
        store.save(
            workflow,
            key,
            StepManifest(
                workflow,
                key,
                kind="cell",
                fingerprint="code-v1",
                code="code-v1",
                variables=tuple(sorted(variables)),
                types={n: type(v).__qualname__ for n, v in variables.items()},
                nbytes={n: getattr(v, "nbytes", 0) for n, v in variables.items()},
                duration_ms=duration_ms,
            ),
            StepPayload(variables=variables).to_saved(),
        )
    finally:
        store.close()


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """Two notebooks; ``summary:v1`` is saved in both."""
    directory = tmp_path / "store"
    save_cell(directory, "prep.ipynb", "load:v1", {"arr": array(), "rows": 100_000}, 2500.0)
    save_cell(directory, "prep.ipynb", "summary:v1", {"total": 42}, 1200.0)
    save_cell(directory, "report.ipynb", "summary:v1", {"text": "hello"}, 800.0)
    save_cell(directory, "report.ipynb", "scale:v1", {"doubled": array() * 2}, 300.0)
    return directory


def keys_in(directory: Path) -> set[tuple[str, str]]:
    found = LocalStore(directory)
    try:
        return {(m.workflow, m.key) for m in found.manifests()}
    finally:
        found.close()


def load(directory: Path, workflow: str, key: str) -> dict[str, Any]:
    found = LocalStore(directory)
    try:
        return found.load(workflow, key)["variables"]  # type: ignore[no-any-return]
    finally:
        found.close()


def blob_files(directory: Path) -> list[Path]:
    blobs = directory / "blobs"
    if not blobs.exists():
        return []
    return sorted(
        f for sub in blobs.iterdir() if sub.is_dir() and len(sub.name) == 2 for f in sub.iterdir()
    )


def assert_nothing_imported(directory: Path) -> None:
    assert keys_in(directory) == set()
    assert blob_files(directory) == []
    tmp = directory / "blobs" / "tmp"
    assert not tmp.exists() or list(tmp.iterdir()) == []


def key_file(tmp_path: Path, key: str, name: str = "team.key") -> Path:
    path = tmp_path / name
    path.write_text(key + "\n")
    return path


# --- help, version, usage --------------------------------------------------------------------


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_every_command_has_help_with_the_exit_codes(command: str | None) -> None:
    result = cli(*([command] if command else []), "--help")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Usage:")
    assert "Exit codes" in result.stdout
    assert "3 bundle not trusted" in " ".join(result.stdout.split())
    if command is None:
        for name in COMMANDS:
            assert name in result.stdout


def test_version() -> None:
    result = cli("--version")
    assert result.exit_code == 0
    assert awaitly_nb.__version__ in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["frobnicate"],
        ["show"],
        ["forget"],
        ["export"],
        ["import"],
        ["import", "no-such-bundle.awnb"],
        ["ls", "--no-such-option"],
        ["gc", "--min-age", "soon"],
    ],
    ids=lambda a: " ".join(a),
)
def test_bad_usage_exits_2(store: Path, args: list[str]) -> None:
    result = cli("--dir", store, *args)
    assert result.exit_code == 2, result.output
    assert "Usage:" in result.stderr or "Error:" in result.stderr
    assert result.stdout == ""


# --- ls and show -----------------------------------------------------------------------------


def test_ls_prints_a_table_of_every_saved_step(store: Path) -> None:
    result = cli("--dir", store, "ls")
    assert result.exit_code == 0, result.output
    header, rule, *rows = result.stdout.splitlines()
    assert header.split() == ["workflow", "key", "kind", "saved", "at", "took", "size", "variables"]
    assert set(rule) == {"-", " "}
    assert len(rows) == 4
    by_key = {(r.split()[0], r.split()[1]): r for r in rows}
    assert set(by_key) == keys_in(store)
    load_row = by_key[("prep.ipynb", "load:v1")]
    assert "2.5 s" in load_row
    assert load_row.rstrip().endswith("arr, rows")
    assert "cell" in load_row
    # Columns line up: every row starts its key where the header does.
    column = header.index("key")
    assert all(r[column - 2 : column] == "  " for r in rows)


def test_ls_filters_by_workflow_and_says_when_empty(store: Path, tmp_path: Path) -> None:
    result = cli("--dir", store, "ls", "--workflow", "report.ipynb")
    assert result.exit_code == 0
    keys = {line.split()[1] for line in result.stdout.splitlines()[2:]}
    assert keys == {"summary:v1", "scale:v1"}

    missing = cli("--dir", tmp_path / "typo", "ls")
    assert missing.exit_code == 1
    assert "no awaitly_nb store" in missing.stderr
    assert not (tmp_path / "typo").exists()  # a typo in --dir creates nothing

    empty_store = tmp_path / "empty"
    LocalStore(empty_store).close()
    empty = cli("--dir", empty_store, "ls")
    assert empty.exit_code == 0
    assert empty.stdout.strip() == "no saved steps"


def test_the_store_defaults_to_awaitly_nb_dir(store: Path) -> None:
    result = cli("ls", env={"AWAITLY_NB_DIR": str(store)})
    assert result.exit_code == 0
    assert "load:v1" in result.stdout


def test_show_prints_the_manifest_variables_and_sizes(store: Path) -> None:
    result = cli("--dir", store, "show", "load:v1")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    fields = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip() for line in lines[:8]}
    assert fields["key"] == "load:v1"
    assert fields["workflow"] == "prep.ipynb"
    assert fields["kind"] == "cell"
    assert fields["took"] == "2.5 s"
    assert "on disk" in fields["size"]
    assert "python" in fields["written by"] and "cloudpickle" in fields["written by"]
    assert "variables: 2" in result.stdout
    arr = next(line for line in lines if line.strip().startswith("arr "))
    assert "ndarray" in arr and "781.2 KB" in arr  # 100,000 float64s
    rows = next(line for line in lines if line.strip().startswith("rows "))
    assert "int" in rows


def test_show_json_is_the_stored_manifest(store: Path) -> None:
    result = cli("--dir", store, "show", "scale:v1", "--json")
    assert result.exit_code == 0
    shown = json.loads(result.stdout)
    found = LocalStore(store)
    try:
        manifest = found.manifest("report.ipynb", "scale:v1")
    finally:
        found.close()
    assert shown == json.loads(json.dumps(manifest.to_dict(), default=str))
    assert shown["variables"] == ["doubled"]


def test_show_a_key_saved_in_several_workflows_asks_for_one(store: Path) -> None:
    ambiguous = cli("--dir", store, "show", "summary:v1")
    assert ambiguous.exit_code == 2
    assert "--workflow" in ambiguous.stderr
    chosen = cli("--dir", store, "show", "summary:v1", "--workflow", "report.ipynb")
    assert chosen.exit_code == 0
    assert "text" in chosen.stdout and "total" not in chosen.stdout


def test_show_an_unknown_key_exits_1(store: Path) -> None:
    result = cli("--dir", store, "show", "nope:v1")
    assert result.exit_code == 1
    assert result.stderr.startswith("error:") and "nope:v1" in result.stderr
    wrong_workflow = cli("--dir", store, "show", "load:v1", "--workflow", "report.ipynb")
    assert wrong_workflow.exit_code == 1


# --- forget, gc, clear -----------------------------------------------------------------------


def test_forget_one_step_then_gc_frees_only_its_blobs(store: Path) -> None:
    blobs_before = blob_files(store)
    result = cli("--dir", store, "forget", "load:v1")
    assert result.exit_code == 0, result.output
    assert "load:v1" in result.stdout
    assert ("prep.ipynb", "load:v1") not in keys_in(store)
    assert len(keys_in(store)) == 3

    # Young blobs are kept by default (a save may be in progress) ...
    kept = cli("--dir", store, "gc")
    assert kept.exit_code == 0
    assert kept.stdout.startswith("removed 0 blob(s)")
    assert blob_files(store) == blobs_before
    # ... and go with --min-age 0; the other steps' blobs stay and still load.
    freed = cli("--dir", store, "gc", "--min-age", "0")
    assert freed.exit_code == 0
    assert freed.stdout.startswith("removed 1 blob(s)")
    assert len(blob_files(store)) == len(blobs_before) - 1
    np.testing.assert_array_equal(load(store, "report.ipynb", "scale:v1")["doubled"], array() * 2)
    assert cli("--dir", store, "verify").exit_code == 0


def test_forget_an_unknown_or_ambiguous_key(store: Path) -> None:
    assert cli("--dir", store, "forget", "nope:v1").exit_code == 1
    assert cli("--dir", store, "forget", "summary:v1").exit_code == 2
    assert len(keys_in(store)) == 4
    result = cli("--dir", store, "forget", "summary:v1", "--workflow", "prep.ipynb")
    assert result.exit_code == 0
    assert keys_in(store) == {
        ("prep.ipynb", "load:v1"),
        ("report.ipynb", "summary:v1"),
        ("report.ipynb", "scale:v1"),
    }


def test_clear_asks_first(store: Path) -> None:
    declined = cli("--dir", store, "clear", input="n\n")
    assert declined.exit_code != 0
    assert len(keys_in(store)) == 4

    accepted = cli("--dir", store, "clear", input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert "forgot 4 step(s)" in accepted.stdout
    assert keys_in(store) == set()
    assert blob_files(store) == []


def test_clear_one_workflow_keeps_the_others_and_their_blobs(store: Path) -> None:
    result = cli("--dir", store, "clear", "--workflow", "prep.ipynb", "--yes")
    assert result.exit_code == 0, result.output
    assert "forgot 2 step(s)" in result.stdout
    assert keys_in(store) == {("report.ipynb", "summary:v1"), ("report.ipynb", "scale:v1")}
    assert len(blob_files(store)) == 1  # prep's array went, report's stayed
    np.testing.assert_array_equal(load(store, "report.ipynb", "scale:v1")["doubled"], array() * 2)


# --- verify the store ------------------------------------------------------------------------


def test_verify_the_store(store: Path) -> None:
    ok = cli("--dir", store, "verify")
    assert ok.exit_code == 0, ok.output
    assert ok.stdout.strip().endswith(": ok")

    # A forgotten step leaves an orphan blob: reported until gc.
    cli("--dir", store, "forget", "scale:v1")
    orphan = cli("--dir", store, "verify")
    assert orphan.exit_code == 1
    assert "gc" in orphan.stdout
    cli("--dir", store, "gc", "--min-age", "0")
    assert cli("--dir", store, "verify").exit_code == 0

    # A damaged blob is a problem, named by step.
    (blob,) = blob_files(store)
    flip_byte(blob, 100)
    damaged = cli("--dir", store, "verify")
    assert damaged.exit_code == 1
    assert "problem:" in damaged.stdout and "load:v1" in damaged.stdout
    assert "1 problem(s)" in damaged.stdout


# --- export, import, verify a bundle ---------------------------------------------------------


def test_export_import_round_trip_needs_trust_without_a_key(store: Path, tmp_path: Path) -> None:
    bundle, bob = tmp_path / "state.awnb", tmp_path / "bob"
    exported = cli("--dir", store, "export", bundle)
    assert exported.exit_code == 0, exported.output
    assert "exported 4 step(s), 2 blob(s)" in exported.stdout
    assert "(unsigned)" in exported.stdout

    refused = cli("--dir", bob, "import", bundle)
    assert refused.exit_code == 3
    assert refused.stderr.startswith("error:") and "--trust" in refused.stderr
    assert_nothing_imported(bob)

    imported = cli("--dir", bob, "import", bundle, "--trust")
    assert imported.exit_code == 0, imported.output
    assert "imported 4 step(s), 2 blob(s)" in imported.stdout
    assert keys_in(bob) == keys_in(store)
    np.testing.assert_array_equal(load(bob, "prep.ipynb", "load:v1")["arr"], array())
    assert load(bob, "report.ipynb", "summary:v1") == {"text": "hello"}
    assert cli("--dir", bob, "verify").exit_code == 0
    # Bob's ls shows Alice's steps.
    assert "load:v1" in cli("--dir", bob, "ls").stdout


def test_export_selects_a_workflow_and_keys(store: Path, tmp_path: Path) -> None:
    bundle, bob = tmp_path / "some.awnb", tmp_path / "bob"
    result = cli(
        "--dir", store, "export", bundle, "--workflow", "report.ipynb", "--key", "summary:v1"
    )
    assert result.exit_code == 0, result.output
    assert "exported 1 step(s), 0 blob(s)" in result.stdout
    assert cli("--dir", bob, "import", bundle, "--trust").exit_code == 0
    assert keys_in(bob) == {("report.ipynb", "summary:v1")}

    both = tmp_path / "both.awnb"
    result = cli("--dir", store, "export", both, "--key", "load:v1", "--key", "scale:v1")
    assert result.exit_code == 0
    assert "exported 2 step(s), 2 blob(s)" in result.stdout


def test_export_an_unknown_key_exits_1_and_writes_nothing(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    result = cli("--dir", store, "export", out / "x.awnb", "--key", "nope:v1")
    assert result.exit_code == 1
    assert result.stderr.startswith("error:") and "nope:v1" in result.stderr
    assert list(out.iterdir()) == []


def test_export_into_a_missing_directory_is_a_clean_error(store: Path, tmp_path: Path) -> None:
    result = cli("--dir", store, "export", tmp_path / "no-such-dir" / "state.awnb")
    assert result.exit_code in (1, 2)
    assert isinstance(result.exception, SystemExit)  # handled, not a traceback
    assert "error" in result.stderr.lower()


def test_a_team_key_file_signs_and_verifies(store: Path, tmp_path: Path) -> None:
    team, other = key_file(tmp_path, TEAM_KEY), key_file(tmp_path, OTHER_KEY, "other.key")
    bundle, bob = tmp_path / "state.awnb", tmp_path / "bob"
    exported = cli("--dir", store, "export", bundle, "--key-file", team)
    assert exported.exit_code == 0, exported.output
    assert "(signed)" in exported.stdout
    with tarfile.open(bundle) as tar:
        assert "awaitly-bundle.sig" in tar.getnames()

    wrong = cli("--dir", bob, "import", bundle, "--key-file", other)
    assert wrong.exit_code == 3
    assert "--trust" in wrong.stderr
    assert_nothing_imported(bob)

    imported = cli("--dir", bob, "import", bundle, "--key-file", team)
    assert imported.exit_code == 0, imported.output
    assert "signed with the team key" in imported.stdout
    assert keys_in(bob) == keys_in(store)


def test_the_team_key_can_come_from_the_environment(store: Path, tmp_path: Path) -> None:
    bundle, bob = tmp_path / "state.awnb", tmp_path / "bob"
    team = {"AWAITLY_NB_KEY": TEAM_KEY}
    assert "(signed)" in cli("--dir", store, "export", bundle, env=team).stdout
    assert cli("--dir", bob, "import", bundle).exit_code == 3  # no key here
    assert cli("--dir", bob, "import", bundle, env={"AWAITLY_NB_KEY": OTHER_KEY}).exit_code == 3
    assert_nothing_imported(bob)
    assert cli("--dir", bob, "import", bundle, env=team).exit_code == 0
    assert keys_in(bob) == keys_in(store)


@pytest.mark.parametrize("damage", ["flipped byte", "truncated"])
def test_importing_a_damaged_bundle_exits_4_and_imports_nothing(
    store: Path, tmp_path: Path, damage: str
) -> None:
    bundle, bob = tmp_path / "state.awnb", tmp_path / "bob"
    assert cli("--dir", store, "export", bundle).exit_code == 0
    with tarfile.open(bundle) as tar:
        biggest = max(tar.getmembers(), key=lambda m: m.size)
    if damage == "flipped byte":
        flip_byte(bundle, biggest.offset_data + 10)
    else:
        with bundle.open("r+b") as f:
            f.truncate(biggest.offset_data + biggest.size // 2)
    result = cli("--dir", bob, "import", bundle, "--trust")
    assert result.exit_code == 4, result.output
    assert result.stderr.startswith("error:")
    assert "damaged" in result.stderr or "truncated" in result.stderr
    assert_nothing_imported(bob)


def test_verify_a_bundle(store: Path, tmp_path: Path) -> None:
    team = key_file(tmp_path, TEAM_KEY)
    bundle = tmp_path / "state.awnb"
    assert cli("--dir", store, "export", bundle, "--key-file", team).exit_code == 0

    signed = cli("verify", bundle, "--key-file", team)
    assert signed.exit_code == 0, signed.output
    assert signed.stdout.splitlines() == ["signed with the team key", f"{bundle}: ok"]
    unchecked = cli("verify", bundle)  # no key here: only the checksums can be checked
    assert unchecked.exit_code == 0
    assert unchecked.stdout.splitlines()[0].startswith("signature not checked: no team key")
    other = cli("verify", bundle, "--key-file", key_file(tmp_path, "another key", "other.key"))
    assert other.exit_code == 3, other.output
    assert "signed with another key, or was changed after signing" in other.stdout

    # The manifest changed after signing (a step's key renamed): refused, exit 3.
    altered = tmp_path / "altered.awnb"
    with tarfile.open(bundle) as source, tarfile.open(altered, "w") as target:
        for member in source.getmembers():
            data = source.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == "awaitly-bundle.json":
                data = data.replace(b'"key"', b'"key" ', 1)
                member.size = len(data)
            target.addfile(member, io.BytesIO(data))
    tampered = cli("verify", altered, "--key-file", team)
    assert tampered.exit_code == 3, tampered.output
    assert tampered.stdout.splitlines()[-1] == f"{altered}: not signed with the team key"

    with tarfile.open(bundle) as tar:
        biggest = max(tar.getmembers(), key=lambda m: m.size)
    flip_byte(bundle, biggest.offset_data + 10)
    damaged = cli("verify", bundle, "--key-file", team)
    assert damaged.exit_code == 1
    assert "problem:" in damaged.stdout and "checksum" in damaged.stdout
    assert "1 problem(s)" in damaged.stdout


# --- progress bars ---------------------------------------------------------------------------


@pytest.fixture
def arrays_only(tmp_path: Path) -> Path:
    """A store whose blobs are all array buffers."""
    directory = tmp_path / "arrays"
    save_cell(directory, "nb", "a", {"a": array()}, 10.0)
    save_cell(directory, "nb", "b", {"b": array() + 1}, 10.0)
    return directory


def test_progress_forces_a_bar_on_stderr(arrays_only: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "state.awnb"
    exported = cli("--dir", arrays_only, "export", bundle, "--progress")
    assert exported.exit_code == 0, exported.output
    assert "export:" in exported.stderr and "100%" in exported.stderr
    assert "export:" not in exported.stdout and "%|" not in exported.stdout

    imported = cli("--dir", tmp_path / "bob", "import", bundle, "--trust", "--progress")
    assert imported.exit_code == 0, imported.output
    assert "import:" in imported.stderr and "%|" in imported.stderr
    assert "%|" not in imported.stdout


def test_small_bundles_show_no_bar_unless_asked(arrays_only: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "state.awnb"
    assert cli("--dir", arrays_only, "export", bundle).stderr == ""
    assert cli("--dir", tmp_path / "bob", "import", bundle, "--trust").stderr == ""
    assert cli("--dir", arrays_only, "export", bundle, "--no-progress").stderr == ""


def test_big_bundles_show_a_bar_by_default(
    arrays_only: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(progress_module, "PROGRESS_MIN_BYTES", 1024)  # "big" = over 1 KB here
    bundle = tmp_path / "state.awnb"
    exported = cli("--dir", arrays_only, "export", bundle)
    assert exported.exit_code == 0
    assert "export:" in exported.stderr and "%|" in exported.stderr
    imported = cli("--dir", tmp_path / "bob", "import", bundle, "--trust")
    assert imported.exit_code == 0
    assert "import:" in imported.stderr
    quiet = cli("--dir", arrays_only, "export", bundle, "--no-progress")
    assert quiet.stderr == ""


def test_the_export_bar_reaches_100_percent_with_long_pickle_streams(tmp_path: Path) -> None:
    directory = tmp_path / "streams"
    save_cell(directory, "nb", "text", {"text": "lorem ipsum " * 20_000}, 10.0)
    save_cell(directory, "nb", "a", {"a": array()}, 10.0)
    result = cli("--dir", directory, "export", tmp_path / "s.awnb", "--progress")
    assert result.exit_code == 0
    assert "100%" in result.stderr


# --- the installed command -------------------------------------------------------------------


def test_the_console_script_is_installed_and_runs(store: Path) -> None:
    script = Path(sys.executable).with_name("awaitly-nb")
    command = str(script) if script.exists() else shutil.which("awaitly-nb")
    assert command, "the awaitly-nb console script is not installed"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWAITLY_NB_")}
    done = subprocess.run(
        [command, "--dir", str(store), "ls", "--workflow", "prep.ipynb"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "load:v1" in done.stdout and "summary:v1" in done.stdout
    assert "scale:v1" not in done.stdout


def test_ls_shows_when_each_step_was_saved(store: Path) -> None:
    found = LocalStore(store)
    try:
        manifests = {(m.workflow, m.key): m for m in found.manifests()}
    finally:
        found.close()
    rows = cli("--dir", store, "ls").stdout.splitlines()[2:]
    assert sorted((row.split()[0], row.split()[1]) for row in rows) == sorted(manifests)
    for row in rows:
        saved_at = manifests[(row.split()[0], row.split()[1])].saved_at
        assert time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(saved_at)) in row


def test_a_refused_import_leaves_no_store_behind(store: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "state.awnb"
    assert cli("--dir", store, "export", bundle).exit_code == 0  # unsigned
    fresh = tmp_path / "new-store"
    refused = cli("--dir", fresh, "import", bundle)
    assert refused.exit_code == 3, refused.output
    assert not fresh.exists()  # no empty index/ and blobs/ folders
