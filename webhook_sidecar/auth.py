"""API keys on the job routes: `Authorization: Bearer <key>` or `x-api-key: <key>`.

Compared with `hmac.compare_digest` against every configured key, so the time taken says nothing
about how much of a key was right. Keys are never logged; a caller is known by a short hash of its key.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

ANONYMOUS = "-"


def presented_key(headers: Mapping[str, str]) -> str | None:
    authorization = headers.get("authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return headers.get("x-api-key") or None


def matching_key(presented: str | None, keys: tuple[str, ...]) -> str | None:
    """The configured key equal to `presented`, checking all of them in constant time each."""
    if presented is None:
        return None
    found = None
    for key in keys:
        if hmac.compare_digest(presented.encode(), key.encode()):
            found = key
    return found


def principal(key: str | None) -> str:
    """Who is calling, for scoping idempotency keys: a hash prefix of the key, never the key."""
    return hashlib.sha256(key.encode()).hexdigest()[:16] if key else ANONYMOUS
