"""Who is asking: the owner of the custom voices a request may use, and whether it holds an admin key.

A custom voice belongs to the API key that made it. The store never holds a key: the owner is a keyed
hash of it (HMAC-SHA256 under a secret the voice store makes once and every replica reads), so all
replicas compute the same owner and a leaked store names no key. Without keys (auth off) there is one
caller, the anonymous owner `""`. Admin keys (`BARK_ADMIN_API_KEYS`) are API keys that may also
publish voices to every key.

The HTTP edge's middleware already refused invalid keys on the routes it protects; `Callers.of` checks
again (constant time), because some routes that read the caller (the voice list) stay open to probes.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bark_common.api_keys import UNAUTHORIZED_MESSAGE, key_is_valid, load_api_keys, presented_key
from bark_common.errors import Unauthorized, Unavailable
from model_server.config import Settings

#: The one owner when the server runs without keys.
ANONYMOUS = ""


@dataclass(frozen=True)
class Caller:
    owner: str = ANONYMOUS
    admin: bool = False
    #: False for a request without a key on an open route, or while the voice store that holds the
    #: owner hash's secret has not been reached yet: such a caller owns nothing and may add nothing.
    identified: bool = True


#: The caller of a server without keys (and the default where no caller is given, e.g. tests).
ANONYMOUS_CALLER = Caller()


def owner_hash(secret: bytes, key: str) -> str:
    """The owner recorded for a key: a keyed hash, never the key."""
    return hmac.new(secret, key.encode(), hashlib.sha256).hexdigest()[:32]


class Callers:
    """Turns a request's headers into a Caller (keys from settings; the secret from the voice store)."""

    def __init__(self, keys: tuple[str, ...], admin_keys: tuple[str, ...], secret: Callable[[], bytes]):
        self.admin_keys = admin_keys
        #: Admin keys are API keys too.
        self.keys = tuple(dict.fromkeys(keys + admin_keys))
        self._secret = secret

    @classmethod
    def from_settings(cls, settings: Settings, secret: Callable[[], bytes]) -> Callers:
        return cls(
            load_api_keys(settings.api_keys, settings.api_keys_file),
            load_api_keys(settings.admin_api_keys, settings.admin_api_keys_file),
            secret,
        )

    @property
    def auth_on(self) -> bool:
        return bool(self.keys)

    def of(self, headers: Mapping[str, str], required: bool = True) -> Caller:
        """The caller behind `headers` (lower-case names). Without a key: a 401 when `required`, else an
        anonymous caller that owns nothing. A key that is not ours is always a 401."""
        if not self.keys:
            return Caller()
        key = presented_key(dict(headers))
        if key is None and not required:
            return Caller(owner="-", identified=False)  # no voice has this owner: hashes are hex
        if not key_is_valid(key, self.keys):
            raise Unauthorized(UNAUTHORIZED_MESSAGE)
        assert key is not None
        admin = key_is_valid(key, self.admin_keys)
        try:
            secret = self._secret()
        except Unavailable:  # the voice store has been unreachable since the start: presets still work
            return Caller(owner="-", admin=admin, identified=False)
        return Caller(owner=owner_hash(secret, key), admin=admin)
