"""Shared stores: a team's steps in Redis or any fsspec file system.

A :class:`SharedStore` keeps its step records and blobs behind a key/value adapter
(:class:`~awaitly_nb.storage.adapters.RedisAdapter`,
:class:`~awaitly_nb.storage.adapters.FsspecAdapter`, or any object with
``get/set/delete/exists/keys``). Blobs are cached in a local folder, which is
read through: a blob is downloaded once, checked against its hash, and then
memory-mapped from the local copy like any other.

Remote layout (adapter keys): ``step:["<workflow>", "<key>"]`` holds a step's
manifest and record as JSON; ``blob:<name>:meta`` holds a blob's size, part
count, part size and upload time; ``blob:<name>:<i>`` its bytes, in parts of
8 MB (64 MB before 0.3; the meta says which). Parts move on several threads at
once, in a bounded window: a big blob is never held whole in memory, and is
hashed and written to the local cache in order as its parts arrive.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import xxhash

from awaitly_nb.errors import CacheWarning, StateFormatError, StorageError, TrustError, reason, warn
from awaitly_nb.progress import progress_bar
from awaitly_nb.storage.adapters import FsspecAdapter, KeyValueAdapter, RedisAdapter
from awaitly_nb.storage.base import StepStore
from awaitly_nb.storage.blobs import BlobStore, GcReport
from awaitly_nb.storage.manifest import ValueRecord
from awaitly_nb.storage.signing import ENV_KEY, key_id, sign, signature_matches

__all__ = ["ReadThroughBlobs", "SharedStore", "adapter_for_url", "open_shared_store"]

PART = 8 * 1024 * 1024
"""Blobs are uploaded in parts of this size (the last one shorter)."""
_OLD_PART = 64 * 1024 * 1024  # a meta without "part" was written with this size
WORKERS = 8
"""Parts moving at once, per blob (and parts held in memory at most, plus one)."""
_STEP = "step:"


def _in_order(move: Callable[[int], bytes], count: int, workers: int) -> Iterator[bytes]:
    """``move(0)``, ``move(1)``, ... ``move(count - 1)``'s results, in order, with up to
    ``workers`` of them running at once on threads (a window: later parts wait)."""
    if count <= 1 or workers <= 1:
        for i in range(count):
            yield move(i)
        return
    pool = ThreadPoolExecutor(max_workers=min(workers, count), thread_name_prefix="awaitly-blob")
    window: collections.deque[Future[bytes]] = collections.deque()
    try:
        for i in range(count):
            window.append(pool.submit(move, i))
            if len(window) >= workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()
    finally:
        # An error or an interrupt: parts not started are dropped, running ones end
        # on their own (their results unused); the caller is not kept waiting.
        pool.shutdown(wait=False, cancel_futures=True)


def adapter_for_url(url: str, options: Mapping[str, Any] | None = None) -> KeyValueAdapter:
    """``redis://``, ``rediss://`` and ``unix://`` URLs get a Redis adapter; others fsspec.

    ``options`` go to the driver: redis-py's ``from_url`` (password, TLS files,
    timeouts) or the fsspec file system (``storage_options``: endpoint, credentials).
    """
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisAdapter(url, **(options or {}))
    if "://" not in url:
        raise ValueError(
            f"a shared store is a URL (redis://host:6379/0, s3://bucket/path, file:///path, "
            f"memory://name); for a local folder use configure(dir={url!r})"
        )
    return FsspecAdapter(url, **(options or {}))


RETRY_AFTER = 30.0
"""Seconds a store that did not connect or answer is left alone: meanwhile every call
fails at once (each step runs here with its warning) instead of waiting again."""


def _unreachable(exc: BaseException) -> bool:
    """A failure to connect or to hear back (any driver's timeout or connection error),
    as opposed to a refusal (no permission, a damaged key)."""
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True
    names = " ".join(kind.__name__ for kind in type(exc).__mro__)
    return "Timeout" in names or "Connect" in names


class _Remote:
    """An adapter whose failures (a server down, a refused write) are StorageErrors;
    after a server did not connect or answer, calls fail at once for ``RETRY_AFTER``."""

    def __init__(self, adapter: Any) -> None:
        self.adapter = adapter
        self.down: tuple[float, str] | None = None  # since when, and why

    def __getattr__(self, op: str) -> Any:
        method = getattr(self.adapter, op)

        def call(*args: Any) -> Any:
            down = self.down
            if down is not None:
                since = time.monotonic() - down[0]
                if since < RETRY_AFTER:
                    raise StorageError(
                        f"the shared store did not answer {since:.0f} s ago ({down[1]}); "
                        f"it is asked again in {RETRY_AFTER - since:.0f} s"
                    )
                self.down = None
            try:
                return method(*args)
            except Exception as exc:
                if _unreachable(exc):
                    self.down = (time.monotonic(), reason(exc))
                raise StorageError(f"the shared store refused {op}: {reason(exc)}") from exc

        return call


class ReadThroughBlobs(BlobStore):
    """Blobs kept behind an adapter, with a local folder as a read-through cache."""

    def __init__(self, directory: str | os.PathLike[str], adapter: Any) -> None:
        super().__init__(directory)
        self.remote = adapter if isinstance(adapter, _Remote) else _Remote(adapter)
        self.expected: dict[str, str] = {}
        """SHA-256 of blobs named by signed records: a download must match it."""
        self.signing = False
        """Whether records are signed: uploads then take each blob's SHA-256 on the way."""
        self.fresh = False
        """Download even blobs cached locally (``verify`` checks the store, not the cache)."""

    @staticmethod
    def _meta_key(name: str) -> str:
        return f"blob:{name}:meta"

    def _meta(self, name: str) -> dict[str, Any] | None:
        """A blob's meta (size, parts, part size) in the shared store; None if absent.

        Raises:
            StateFormatError: it is there but damaged.
        """
        raw = self.remote.get(self._meta_key(name))
        if raw is None:
            return None
        try:
            meta = json.loads(raw)
            size, parts = int(meta["size"]), int(meta["parts"])
            part = int(meta.get("part", _OLD_PART))
        except (ValueError, KeyError, TypeError) as exc:
            raise StateFormatError(
                f"blob {name}: its record in the shared store is damaged"
            ) from exc
        if size < 0 or part <= 0 or parts != max(1, -(-size // part)):
            raise StateFormatError(f"blob {name}: its record in the shared store is damaged")
        return {"size": size, "parts": parts, "part": part}

    @property
    def _workers(self) -> int:
        """Threads per transfer: only for adapters that say they are thread-safe."""
        return WORKERS if getattr(self.remote.adapter, "concurrent", False) else 1

    def _upload(self, name: str, *, again: bool = False) -> None:
        """Upload a local blob unless the store has it (``again``: in any case)."""
        path = self.path(name)
        size = path.stat().st_size
        try:
            meta = None if again else self._meta(name)
        except StateFormatError:
            meta = None  # damaged: upload again
        if meta is None or meta["size"] != size:
            parts = max(1, -(-size // PART))
            sha = hashlib.sha256() if self.signing else None
            fd = os.open(path, os.O_RDONLY)
            try:

                def send(i: int) -> bytes:
                    data = os.pread(fd, PART, i * PART)
                    self.remote.set(f"blob:{name}:{i}", data)
                    return data

                with progress_bar(size, f"upload {name[:8]}", transient=True) as bar:
                    for data in _in_order(send, parts, self._workers):
                        if sha is not None:
                            sha.update(data)
                        if bar is not None:
                            bar(len(data))
            finally:
                os.close(fd)
            if sha is not None:
                self.expected[name] = sha.hexdigest()
            meta = {"size": size, "parts": parts, "part": PART}
        # Written last (and again when the blob is reused): its time keeps gc away.
        self.remote.set(self._meta_key(name), json.dumps({**meta, "uploaded_at": time.time()}))

    def put(self, data: memoryview) -> str:
        name = super().put(data)
        self._upload(name)
        return name

    def adopt(self, staged: Path, name: str) -> None:
        super().adopt(staged, name)
        self._upload(name, again=True)  # an import: its checked bytes repair a damaged blob

    def ensure(self, name: str, size: int) -> Path:
        """Download the blob into the local cache unless it is there; return its path.

        Parts are fetched on several threads; each is hashed (xxh3, which names
        the blob, and SHA-256 when a signed record named the blob) and written
        to a staged file in order as it arrives. Only a blob that matches both
        is moved into the cache.
        """
        path = self.path(name)
        try:
            if path.stat().st_size == size and not self.fresh:
                return path
        except FileNotFoundError:
            pass
        meta = self._meta(name)
        if meta is None:
            raise StateFormatError(f"blob {name} is missing from the shared store")
        if meta["size"] != size:
            raise StateFormatError(f"blob {name} in the shared store is damaged")
        part, parts = meta["part"], meta["parts"]
        expected = self.expected.get(name)

        def fetch(i: int) -> bytes:
            chunk = self.remote.get(f"blob:{name}:{i}")
            if chunk is None or len(chunk) != min(part, size - i * part):
                self._forget_damaged(name)
                what = "incomplete" if chunk is None else "damaged"
                raise StateFormatError(f"blob {name} in the shared store is {what}")
            return bytes(chunk)

        fd, staged = self.stage()
        digest, sha = xxhash.xxh3_128(), hashlib.sha256() if expected is not None else None
        try:
            with (
                os.fdopen(fd, "wb", buffering=0) as out,
                progress_bar(size, f"download {name[:8]}", transient=True) as bar,
            ):
                for chunk in _in_order(fetch, parts, self._workers):
                    digest.update(chunk)
                    if sha is not None:
                        sha.update(chunk)
                    out.write(chunk)
                    if bar is not None:
                        bar(len(chunk))
            if digest.hexdigest() != name:
                self._forget_damaged(name)
                raise StateFormatError(f"blob {name} in the shared store is damaged")
            if sha is not None and sha.hexdigest() != expected:
                raise StateFormatError(
                    f"blob {name} in the shared store is not the one its signed record names"
                )
            super().adopt(staged, name)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        return path

    def _forget_damaged(self, name: str) -> None:
        """A blob whose bytes do not match its name is of no use to anyone: drop its meta
        so that the next save of it uploads it again (best effort: a reader may not
        be allowed to write)."""
        with contextlib.suppress(StorageError):
            self.remote.delete(self._meta_key(name))

    def open(self, name: str, size: int, *, map: bool = True) -> Any:
        self.ensure(name, size)
        return super().open(name, size, map=map)

    def names(self) -> Iterator[str]:
        for key in self.remote.keys("blob:*:meta"):
            yield key[len("blob:") : -len(":meta")]

    def delete(self, name: str) -> bool:
        try:
            meta = self._meta(name)
        except StateFormatError:
            meta = {"parts": 1}  # damaged: its other parts are left for nobody
        if meta is None:
            return super().delete(name)
        parts = meta["parts"]
        self.remote.delete(self._meta_key(name))  # first: an incomplete blob is never listed
        for i in range(parts):
            self.remote.delete(f"blob:{name}:{i}")
        super().delete(name)
        return True

    def collect(self, keep: set[str], *, min_age: float) -> GcReport:
        now, count, freed = time.time(), 0, 0
        for name in list(self.names()):
            if name in keep:
                continue
            raw = self.remote.get(self._meta_key(name))
            try:
                meta = json.loads(raw) if raw is not None else {}
            except ValueError:
                meta = {}
            if now - float(meta.get("uploaded_at", 0.0)) >= min_age and self.delete(name):
                count, freed = count + 1, freed + int(meta.get("size", 0))
        local = super().collect(keep, min_age=min_age)  # the local cache, by its own file times
        return GcReport(count + local.blobs, freed + local.bytes, local.temporaries)


class SharedStore(StepStore):
    """Steps shared through a key/value adapter; blobs cached in a local folder.

    With a team ``key`` every record it writes is signed: an HMAC-SHA256 over the
    record (manifest and value record, whose inline pickle stream is in it) and
    the SHA-256 of every blob it names. A record read is used only if its
    signature matches, and a blob downloaded only if its SHA-256 is the signed
    one: checked before anything is unpickled, since unpickling runs code. A
    record that fails is treated as not saved (a :class:`CacheWarning` names
    it): the step runs here and its signed result replaces the record. Without
    a key, records are read unchecked, which :func:`open_shared_store` allows
    only when asked to (``trust_unsigned``).
    """

    blobs: ReadThroughBlobs

    def __init__(
        self,
        adapter: KeyValueAdapter,
        cache_dir: str | os.PathLike[str],
        *,
        key: bytes | None = None,
    ) -> None:
        self.adapter = adapter
        self.remote = _Remote(adapter)
        self.directory = Path(cache_dir)
        self.blobs = ReadThroughBlobs(self.directory / "blobs", self.remote)  # one breaker
        self.blobs.signing = key is not None
        self.key = key

    @staticmethod
    def _name(workflow: str, key: str) -> str:
        return _STEP + json.dumps([workflow, key], ensure_ascii=False)

    @staticmethod
    def _signed(workflow: str, key: str, data: dict[str, Any]) -> bytes:
        """What the signature covers: where the record is filed and all it says."""
        body = {k: v for k, v in data.items() if k != "signature"}
        return json.dumps(
            {"workflow": workflow, "key": key, **body}, sort_keys=True, ensure_ascii=False
        ).encode()

    def read(self, workflow: str, key: str) -> Any:
        raw = self.remote.get(self._name(workflow, key))
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            if self.key is not None:
                why = self._refused(workflow, key, data)
                if why is not None:
                    then = (
                        "The step runs here and the record is left as it is (if your key "
                        f"is the wrong one, fix ${ENV_KEY})"
                        if self._other_key(data)
                        else "The step runs here and its signed result replaces it"
                    )
                    warn(f"shared step {key!r} of {workflow!r} is refused: {why}. {then}")
                    return None
            record = ValueRecord.from_json(data["value"], f"shared step {key!r}")
        except (ValueError, KeyError, TypeError, StateFormatError):
            return None  # a damaged record is a miss; verify reports it
        if self.key is not None:
            self.blobs.expected.update(data["sha256"]["blobs"])
        found = {"manifest": data["manifest"], "value": record.to_dict()}
        if isinstance(data.get("variants"), list):
            found["variants"] = data["variants"]
        return found

    def _refused(self, workflow: str, key: str, data: Any) -> str | None:
        """Why a record may not be used with this store's key (None: it may)."""
        assert self.key is not None
        if not isinstance(data, dict) or not isinstance(data.get("signature"), str):
            return "it is not signed (saved without a team key)"
        if not signature_matches(self._signed(workflow, key, data), data["signature"], self.key):
            if self._other_key(data):
                return (
                    f"its signature is by another team key (key id {data['key_id']}; "
                    f"yours is {key_id(self.key)})"
                )
            return (
                f"its signature does not match the team key (${ENV_KEY}): it was changed "
                "after it was signed"
            )
        hashes = data.get("sha256")
        if not isinstance(hashes, dict) or not isinstance(hashes.get("blobs"), dict):
            return "it names no blob hashes"
        return None

    def write(self, workflow: str, key: str, record: dict[str, Any]) -> None:
        if self.key is not None:
            self._keep_others(workflow, key)
        value = ValueRecord.from_dict(record["value"])
        data: dict[str, Any] = {"manifest": record["manifest"], "value": value.to_json()}
        if isinstance(record.get("variants"), list):
            data["variants"] = record["variants"]
        if self.key is not None:
            data["sha256"] = {"blobs": {ref.name: self._sha256(ref.name) for ref in value.blobs()}}
            data["key_id"] = key_id(self.key)
            data["signature"] = sign(self._signed(workflow, key, data), self.key)
        self.remote.set(self._name(workflow, key), json.dumps(data, ensure_ascii=False))

    def _other_key(self, data: Any) -> bool:
        """Whether a record says it was signed with a key other than this store's (a
        record changed after signing keeps the key id it had: it is not one of these)."""
        return (
            self.key is not None
            and isinstance(data, dict)
            and isinstance(data.get("key_id"), str)
            and data["key_id"] != key_id(self.key)
        )

    def _keep_others(self, workflow: str, key: str) -> None:
        """Refuse to write over a record signed with another key: with a mistyped key,
        every step would otherwise replace the team's records with ones they refuse."""
        raw = self.remote.get(self._name(workflow, key))
        if raw is None:
            return
        try:
            data = json.loads(raw)
        except ValueError:
            return  # a damaged record: replaced
        if self._other_key(data) and self._refused(workflow, key, data) is not None:
            raise StorageError(
                f"the shared record of {key!r} is signed with another team key (key id "
                f"{data['key_id']}; yours is {key_id(self.key or b'')}) and is left as it "
                f"is: if your key (${ENV_KEY}) is the wrong one, fix it; to replace the "
                f"record, forget it first (awaitly-nb --store URL forget {key!r})"
            )

    def referenced_blobs(self) -> set[str]:
        """Every blob any record names, whether or not it is signed with this key: a
        process that cannot vouch for a teammate's record must not free its blobs."""
        names: set[str] = set()
        for workflow, key in self.record_keys(None):
            raw = self.remote.get(self._name(workflow, key))
            if raw is None:
                continue
            try:
                record = ValueRecord.from_json(json.loads(raw)["value"], f"shared step {key!r}")
            except (ValueError, KeyError, TypeError, StateFormatError):
                continue  # damaged: it can name no blob anyone could restore
            names.update(ref.name for ref in record.blobs())
        return names

    def _sha256(self, name: str) -> str:
        """A blob's SHA-256, from its local copy (every blob written is there)."""
        known = self.blobs.expected.get(name)
        if known is None:
            sha = hashlib.sha256()
            with open(self.blobs.path(name), "rb") as f:
                while chunk := f.read(1 << 22):
                    sha.update(chunk)
            known = self.blobs.expected[name] = sha.hexdigest()
        return known

    def remove(self, workflow: str, key: str) -> bool:
        return bool(self.remote.delete(self._name(workflow, key)))

    def verify(self) -> list[str]:
        """Check every record's signature (with a key), then every hash; unpickles nothing."""
        self.blobs.fresh = True  # the store's bytes, not this machine's cached copies
        try:
            return self._verify()
        finally:
            self.blobs.fresh = False

    def _verify(self) -> list[str]:
        refused: dict[str, str] = {}
        if self.key is not None:
            for workflow, key in self.record_keys(None):
                raw = self.remote.get(self._name(workflow, key))
                try:
                    data = json.loads(raw) if raw is not None else None
                except ValueError:
                    continue  # reported as damaged below
                why = self._refused(workflow, key, data)
                if why is not None:
                    refused[f"{workflow} / {key}: "] = why
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CacheWarning)
            others = [p for p in super().verify() if not p.startswith(tuple(refused))]
        return [f"{where}refused: {why}" for where, why in refused.items()] + others

    def record_keys(self, workflow: str | None = None) -> list[tuple[str, str]]:
        found = []
        for name in self.remote.keys(_STEP + "*"):
            try:
                wf, key = json.loads(name[len(_STEP) :])
            except (ValueError, TypeError):
                continue
            if workflow is None or wf == workflow:
                found.append((str(wf), str(key)))
        return found

    def __repr__(self) -> str:
        return f"SharedStore({self.adapter!r})"


def untrusted(url: str) -> TrustError:
    """The error for a shared store used with no key and no ``trust_unsigned``."""
    return TrustError(
        f"the shared store {url} needs a team key: loading a step unpickles it, and "
        "unpickling runs code, so a store anyone else can write to must be signed. "
        f"Set ${ENV_KEY} (or configure(key=...)) to the team's key; to use it "
        "unsigned anyway, set $AWAITLY_NB_TRUST_UNSIGNED=1 (or configure(trust_unsigned=True))"
    )


def open_shared_store(
    url: str,
    cache_dir: str | os.PathLike[str],
    *,
    key: bytes | None = None,
    trust_unsigned: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> SharedStore:
    """A step store shared through ``url``, caching blobs in ``cache_dir``.

    Args:
        storage_options: for the driver (see :func:`adapter_for_url`).
        key: the team key: records are signed with it, and only records signed
            with it are used.
        trust_unsigned: use the store without a key, reading whatever anyone with
            write access put there (unpickling runs code: only for a store no one
            else can write to).

    Raises:
        TrustError: no key, and ``trust_unsigned`` is not set.
        StorageError: the store cannot be opened.

    >>> import tempfile
    >>> url = "memory://awaitly-shared-doc"
    >>> _ = open_shared_store(url, tempfile.mkdtemp(), key=b"team").save("nb", "k", {}, {"x": 1})
    >>> open_shared_store(url, tempfile.mkdtemp(), key=b"team").load("nb", "k")
    {'x': 1}
    """
    try:
        adapter = adapter_for_url(url, storage_options)
    except ValueError:
        raise
    except Exception as exc:  # a driver missing, a server down, bad options
        raise StorageError(f"cannot open the shared store {url}: {reason(exc)}") from exc
    if key is None and not trust_unsigned:
        raise untrusted(url)
    return SharedStore(adapter, cache_dir, key=key)
