"""API keys on the job routes, with the model server's own rules (`bark_common.api_keys`, one definition).

`Authorization: Bearer <key>` or `x-api-key: <key>`, compared in constant time against every
configured key. Keys are never logged; a caller is known by a short hash of its key, which scopes
idempotency keys.

Jobs belong to their caller: a job records its creator as a keyed hash of the key (HMAC-SHA256 under a
random key the store makes once and keeps, so every replica computes the same owner and the store holds
no key), and every job route answers 404 to another key, as if the job did not exist. Admin keys
(`SIDECAR_ADMIN_API_KEYS`) see every job. With auth off there are no callers to tell apart.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from bark_common.api_keys import UNAUTHORIZED_MESSAGE, key_is_valid, presented_key
from bark_common.errors import Unauthorized

__all__ = ["UNAUTHORIZED_MESSAGE", "Caller", "authenticated_key", "owner_of", "principal"]

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


def owner_of(key: str | None, owner_key: bytes) -> str | None:
    """The owner recorded on a job created with `key`: a keyed hash, never the key (None with auth off)."""
    return hmac.new(owner_key, key.encode(), hashlib.sha256).hexdigest()[:32] if key else None


@dataclass(frozen=True)
class Caller:
    """Who is asking: the owner hash of their key (None with auth off), and whether it is an admin key."""

    owner: str | None
    admin: bool = False

    def may_see(self, job_owner: str | None) -> bool:
        """Auth off, an admin, or the job's creator."""
        return self.owner is None or self.admin or hmac.compare_digest(self.owner, job_owner or "")
