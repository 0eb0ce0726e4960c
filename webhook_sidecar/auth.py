"""API keys on the job routes, with the model server's own rules (`bark_common.api_keys`, one definition).

`Authorization: Bearer <key>` or `x-api-key: <key>`, compared in constant time against every
configured key. Keys are never logged; a caller is known by a short hash of its key, which scopes
idempotency keys.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from bark_common.api_keys import UNAUTHORIZED_MESSAGE, key_is_valid, presented_key
from bark_common.errors import Unauthorized

__all__ = ["UNAUTHORIZED_MESSAGE", "authenticated_key", "principal"]

ANONYMOUS = "-"


def authenticated_key(headers: Mapping[str, str], keys: tuple[str, ...]) -> str | None:
    """The caller's valid key; None when auth is off (no keys); Unauthorized otherwise."""
    if not keys:
        return None
    key = presented_key(dict(headers))
    if key is None or not key_is_valid(key, keys):
        raise Unauthorized(UNAUTHORIZED_MESSAGE)
    return key


def principal(key: str | None) -> str:
    """Who is calling, for scoping idempotency keys: a hash prefix of the key, never the key."""
    return hashlib.sha256(key.encode()).hexdigest()[:16] if key else ANONYMOUS
