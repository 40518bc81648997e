"""Team keys: bundles and shared-store records signed with HMAC-SHA256 are trusted by
whoever holds the same key.

Loading a saved step unpickles it, and unpickling runs code; so an import or a
shared store accepts what someone else saved only if it is signed with the team
key, or if the user says they trust it.
"""

from __future__ import annotations

import os
from pathlib import Path

from awaitly_nb.errors import AwaitlyError

__all__ = ["ENV_KEY", "key_id", "load_key", "sign", "signature_matches"]

ENV_KEY = "AWAITLY_NB_KEY"


def load_key(key_file: str | os.PathLike[str] | None = None) -> bytes | None:
    """The team key: from ``key_file`` if given, else ``$AWAITLY_NB_KEY``, else None.

    Raises:
        AwaitlyError: the key file cannot be read or is empty.
    """
    if key_file is not None:
        try:
            key = Path(key_file).read_bytes().strip()
        except OSError as exc:
            raise AwaitlyError(f"cannot read the key file {key_file}: {exc}") from exc
        if not key:
            raise AwaitlyError(f"the key file {key_file} is empty")
        return key
    env = os.environ.get(ENV_KEY, "").strip()
    return env.encode() if env else None


def sign(data: bytes, key: bytes) -> str:
    """The HMAC-SHA256 of ``data`` under ``key``, hex.

    >>> sign(b"manifest", b"team-key") == sign(b"manifest", b"team-key")
    True
    """
    import hashlib
    import hmac

    return hmac.new(key, data, hashlib.sha256).hexdigest()


def key_id(key: bytes) -> str:
    """A short name for a key that tells keys apart and reveals nothing of it.

    >>> key_id(b"team") == key_id(b"team") != key_id(b"teem")
    True
    """
    return sign(b"awaitly_nb key id", key)[:16]


def signature_matches(data: bytes, signature: str | None, key: bytes) -> bool:
    """True if ``signature`` is ``data`` signed with ``key`` (compared in constant time)."""
    if signature is None:
        return False
    expected = sign(data, key).encode("ascii")
    import hmac

    return hmac.compare_digest(expected, signature.encode("utf-8", "replace"))
