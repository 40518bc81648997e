"""Bundles: one portable file holding saved steps, to send to a teammate.

A bundle is an uncompressed tar file:

- ``blobs/<name>``: the blob files the steps need (big buffers, long streams);
- ``awaitly-bundle.json``: the manifest, written last: format version, the
  package, Python and cloudpickle versions, creator, creation time, every
  step's manifest and record (its small pickle stream inline, base64) and the
  SHA-256 of every blob and inline stream;
- ``awaitly-bundle.sig``: with a team key, the HMAC-SHA256 of the manifest.

Import checks the signature (or an explicit ``trust``), then every checksum,
staging the blobs beside the store; only when everything matches does it move
them into place and write the index records. Nothing is unpickled on import.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import io
import json
import os
import socket
import tarfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import xxhash

from awaitly_nb.errors import (
    AwaitlyError,
    CacheWarning,
    InvalidKeyError,
    StateFormatError,
    StorageError,
    TrustError,
    warn,
)
from awaitly_nb.progress import Progress
from awaitly_nb.storage.base import StepStore
from awaitly_nb.storage.codec import versions
from awaitly_nb.storage.manifest import StepManifest, ValueRecord
from awaitly_nb.storage.names import check_name
from awaitly_nb.storage.signing import sign, signature_matches

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_VERSION",
    "BundleCheck",
    "BundleReport",
    "export_bundle",
    "import_bundle",
    "verify_bundle",
]

BUNDLE_FORMAT = "awaitly_nb/bundle"
BUNDLE_VERSION = 1
MANIFEST = "awaitly-bundle.json"
SIGNATURE = "awaitly-bundle.sig"
_CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class BundleReport:
    """What an export or import did."""

    path: Path
    steps: list[tuple[str, str]] = field(default_factory=list)
    blobs: int = 0
    bytes: int = 0
    signed: bool = False


def _creator() -> str:
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


class _HashingReader(io.RawIOBase):
    """Reads a file while computing its SHA-256 (what tarfile.addfile reads from)."""

    def __init__(self, f: IO[bytes], progress: Progress | None) -> None:
        self._f, self._progress = f, progress
        self.sha256 = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        self.sha256.update(data)
        if self._progress is not None and data:
            self._progress(len(data))
        return data


def export_bundle(
    store: StepStore,
    path: str | os.PathLike[str],
    *,
    workflow: str | None = None,
    keys: Iterable[str] | None = None,
    key: bytes | None = None,
    progress: Progress | None = None,
) -> BundleReport:
    """Write the chosen steps of ``store`` (all, one workflow, some keys) to a bundle file.

    Raises:
        AwaitlyError: a requested key is not saved, or a blob is missing.
    """
    path = Path(path)
    wanted = None if keys is None else set(keys)
    entries = [
        (entry.manifest.workflow, entry.manifest.key, entry)
        for entry in store.entries(workflow)
        if wanted is None or entry.manifest.key in wanted
    ]
    if wanted is not None:
        missing = wanted - {k for _, k, _ in entries}
        if missing:
            where = f" in workflow {workflow!r}" if workflow else ""
            raise AwaitlyError(f"no saved step{where} for: {', '.join(sorted(missing))}")
    blob_sizes: dict[str, int] = {}
    for _, _, entry in entries:
        for ref in entry.record.blobs():
            blob_sizes[ref.name] = ref.size
    manifest: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "versions": versions(),
        "creator": _creator(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "steps": [
            {
                "workflow": wf,
                "key": k,
                "manifest": entry.manifest.to_dict(),
                "record": entry.record.to_json(),
            }
            for wf, k, entry in entries
        ],
        "blobs": {},
    }
    if not entries:
        raise AwaitlyError(
            "no saved steps to export" + (f" in workflow {workflow!r}" if workflow else "")
        )
    tmp = path.with_name(path.name + ".partial")
    try:
        try:
            tar = tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT)  # noqa: SIM115
        except OSError as exc:
            raise StorageError(f"cannot write the bundle {path}: {exc}") from exc
        with tar:
            for name, size in sorted(blob_sizes.items()):
                try:
                    f = open(store.blobs.ensure(name, size), "rb")  # noqa: SIM115 - closed below
                except FileNotFoundError:
                    raise AwaitlyError(
                        f"blob {name} is missing from the store; run verify"
                    ) from None
                with f:
                    if os.fstat(f.fileno()).st_size != size:
                        raise AwaitlyError(f"blob {name} has the wrong size; run verify")
                    info = tarfile.TarInfo(f"blobs/{name}")
                    info.size, info.mtime = size, int(time.time())
                    reader = _HashingReader(f, progress)
                    tar.addfile(info, reader)
                manifest["blobs"][name] = {"size": size, "sha256": reader.sha256.hexdigest()}
            text = json.dumps(manifest, sort_keys=True, ensure_ascii=False).encode()
            _add_bytes(tar, MANIFEST, text)
            if key is not None:
                _add_bytes(tar, SIGNATURE, sign(text, key).encode())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return BundleReport(
        path,
        [(wf, k) for wf, k, _ in entries],
        len(blob_sizes),
        sum(blob_sizes.values()),
        key is not None,
    )


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), int(time.time())
    tar.addfile(info, io.BytesIO(data))


def _open_bundle(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:")
    except FileNotFoundError:
        raise AwaitlyError(f"no bundle at {path}") from None
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise StateFormatError(f"{path} is not a readable awaitly_nb bundle: {exc}") from exc


def _member_bytes(tar: tarfile.TarFile, name: str, path: Path) -> bytes | None:
    try:
        member = tar.getmember(name)
    except KeyError:
        return None
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise StateFormatError(f"bundle {path} is truncated or damaged: {exc}") from exc
    f = tar.extractfile(member)
    if f is None:
        raise StateFormatError(f"bundle {path} is damaged: {name} is not a file")
    try:
        return f.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise StateFormatError(f"bundle {path} is truncated or damaged: {exc}") from exc


def _read_manifest(
    tar: tarfile.TarFile, path: Path, key: bytes | None, trust: bool
) -> tuple[dict[str, Any], bool]:
    text = _member_bytes(tar, MANIFEST, path)
    if text is None:
        raise StateFormatError(
            f"{path} has no {MANIFEST}: not an awaitly_nb bundle, or it was cut short"
        )
    signature_bytes = _member_bytes(tar, SIGNATURE, path)
    signature = signature_bytes.decode("ascii", "replace") if signature_bytes else None
    signed = key is not None and signature_matches(text, signature, key)
    if not signed and not trust:
        if key is None:
            why = "no team key is configured (set AWAITLY_NB_KEY or pass a key file)"
        elif signature is None:
            why = "it is not signed"
        else:
            why = "it is signed with another key (or was changed after signing)"
        raise TrustError(
            f"refusing to import {path}: {why}. Importing runs code from the bundle when "
            "its steps are restored; if you trust its author, pass trust=True "
            "(awaitly-nb import --trust)"
        )
    try:
        manifest = json.loads(text)
    except ValueError as exc:
        raise StateFormatError(f"bundle {path} is damaged: manifest is not JSON ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise StateFormatError(f"{path} is not an awaitly_nb bundle")
    if manifest.get("version") != BUNDLE_VERSION:
        raise StateFormatError(
            f"bundle format version {manifest.get('version')!r} is not supported; this "
            f"awaitly_nb reads version {BUNDLE_VERSION}"
        )
    if not isinstance(manifest.get("steps"), list) or not isinstance(manifest.get("blobs"), dict):
        raise StateFormatError(f"bundle {path} is damaged: manifest lacks steps or blobs")
    return manifest, signed


def _checked_steps(manifest: dict[str, Any], path: Path) -> list[tuple[StepManifest, ValueRecord]]:
    steps = []
    blobs = manifest["blobs"]
    for i, step in enumerate(manifest["steps"]):
        if not isinstance(step, dict):
            raise StateFormatError(f"bundle {path} is damaged: step {i} is not an object")
        wf, k, m, r = (
            step.get("workflow"),
            step.get("key"),
            step.get("manifest"),
            step.get("record"),
        )
        try:  # the same rule as the store's, checked before anything lands
            wf, k = check_name(wf, "workflow"), check_name(k)
        except InvalidKeyError as exc:
            raise StateFormatError(
                f"bundle {path} is damaged: step {i} has a bad key ({exc})"
            ) from None
        if not isinstance(m, dict) or not isinstance(r, dict):
            raise StateFormatError(f"bundle {path} is damaged: step {k!r} lacks its record")
        where = f"bundle {path} is damaged: step {k!r}"
        record = ValueRecord.from_json(r, where)
        step_manifest = StepManifest.from_dict({**m, "workflow": wf, "key": k}, where)
        for ref in record.blobs():
            spec = blobs.get(ref.name)
            if not isinstance(spec, dict) or spec.get("size") != ref.size:
                raise StateFormatError(f"{where} needs blob {ref.name}, not in the bundle")
        steps.append((step_manifest, record))
    return steps


def _warn_versions(manifest: dict[str, Any], path: Path) -> None:
    theirs, ours = manifest.get("versions"), versions()
    if not isinstance(theirs, dict):
        return
    for name in ("python", "cloudpickle", "awaitly_nb"):
        other = theirs.get(name)
        mine = ours[name]
        if name == "python":
            other = ".".join(str(other).split(".")[:2])
            mine = ".".join(mine.split(".")[:2])
        if other != mine:
            warn(
                f"bundle {path} was written with {name} {theirs.get(name)}, this is "
                f"{ours[name]}: steps that cannot be loaded here will run again",
                CacheWarning,
            )


def _receive(
    tar: tarfile.TarFile,
    name: str,
    spec: dict[str, Any],
    store: StepStore,
    path: Path,
    progress: Progress | None,
) -> Path:
    """Copy one blob member into a staged file, checking size, SHA-256 and name."""
    try:
        member = tar.getmember(f"blobs/{name}")
    except KeyError:
        raise StateFormatError(f"bundle {path} is damaged: blob {name} is missing") from None
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise StateFormatError(f"bundle {path} is truncated or damaged: {exc}") from exc
    source = tar.extractfile(member)
    if source is None or member.size != spec.get("size"):
        raise StateFormatError(f"bundle {path} is damaged: blob {name} has the wrong size")
    fd, staged = store.blobs.stage()
    sha, xxh, seen = hashlib.sha256(), xxhash.xxh3_128(), 0
    try:
        with os.fdopen(fd, "wb") as out:
            while True:
                chunk = source.read(_CHUNK)
                if not chunk:
                    break
                sha.update(chunk)
                xxh.update(chunk)
                out.write(chunk)
                seen += len(chunk)
                if progress is not None:
                    progress(len(chunk))
    except (tarfile.TarError, EOFError, OSError) as exc:
        staged.unlink(missing_ok=True)
        raise StateFormatError(f"bundle {path} is truncated or damaged: {exc}") from exc
    if seen != spec.get("size") or sha.hexdigest() != spec.get("sha256") or xxh.hexdigest() != name:
        staged.unlink(missing_ok=True)
        raise StateFormatError(f"bundle {path} is damaged: blob {name} does not match its checksum")
    return staged


def import_bundle(
    store: StepStore,
    path: str | os.PathLike[str],
    *,
    trust: bool = False,
    key: bytes | None = None,
    progress: Progress | None = None,
) -> BundleReport:
    """Import a bundle into ``store``; all or nothing.

    Raises:
        TrustError: not signed with ``key`` and ``trust`` is false.
        StateFormatError: the bundle is truncated, tampered with or damaged;
            nothing was imported.
    """
    path = Path(path)
    staged: list[tuple[Path, str]] = []
    try:
        with _open_bundle(path) as tar:
            manifest, signed = _read_manifest(tar, path, key, trust)
            steps = _checked_steps(manifest, path)
            _warn_versions(manifest, path)
            for name, spec in sorted(manifest["blobs"].items()):
                if not isinstance(spec, dict):
                    raise StateFormatError(f"bundle {path} is damaged: blob {name} has no size")
                staged.append((_receive(tar, name, spec, store, path, progress), name))
    except BaseException as exc:
        for file, _ in staged:
            file.unlink(missing_ok=True)
        if isinstance(exc, Exception) and not isinstance(exc, AwaitlyError):
            # tarfile reading garbage can raise almost anything
            raise StateFormatError(
                f"bundle {path} is damaged: {type(exc).__name__}: {exc}"
            ) from exc
        raise
    for file, name in staged:
        store.blobs.adopt(file, name)
    for step_manifest, record in steps:
        store.put_record(step_manifest, record)
    sizes = [int(spec["size"]) for spec in manifest["blobs"].values()]
    done = [(m.workflow, m.key) for m, _ in steps]
    return BundleReport(path, done, len(sizes), sum(sizes), signed)


@dataclass(frozen=True)
class BundleCheck:
    """What :func:`verify_bundle` found: integrity problems, and whether the team key signed it."""

    problems: list[str]
    signed: bool
    signature: str = ""
    """What the signature check found, in words (``"it is not signed"``...)."""


def verify_bundle(path: str | os.PathLike[str], *, key: bytes | None = None) -> BundleCheck:
    """Check a bundle without importing it: every checksum, and its signature."""
    path = Path(path)
    problems: list[str] = []
    signed, signature = False, ""
    try:
        with _open_bundle(path) as tar:
            manifest, signed = _read_manifest(tar, path, key, trust=True)
            if key is not None and not signed:
                signature = (
                    "it is signed with another key, or was changed after signing"
                    if _member_bytes(tar, SIGNATURE, path)
                    else "it is not signed"
                )
            _checked_steps(manifest, path)
            for name, spec in manifest["blobs"].items():
                try:
                    info = tar.getmember(f"blobs/{name}")
                except KeyError:
                    problems.append(f"blob {name} is missing")
                    continue
                source = tar.extractfile(info)
                if source is None or info.size != spec.get("size"):
                    problems.append(f"blob {name} has the wrong size")
                    continue
                sha, xxh = hashlib.sha256(), xxhash.xxh3_128()
                while chunk := source.read(_CHUNK):
                    sha.update(chunk)
                    xxh.update(chunk)
                if sha.hexdigest() != spec.get("sha256") or xxh.hexdigest() != name:
                    problems.append(f"blob {name} does not match its checksum")
    except AwaitlyError as exc:
        problems.append(str(exc))
    except Exception as exc:  # tarfile reading garbage can raise almost anything
        problems.append(f"bundle {path} is damaged: {type(exc).__name__}: {exc}")
    return BundleCheck(problems, signed, signature)
