"""Standard Webhooks signatures: `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.

The same scheme as https://www.standardwebhooks.com, so receivers may use the `standardwebhooks`
library instead of `verify` below. With several secrets configured (rotation), each delivery carries one
signature per secret, space-separated, and a receiver holding any one of them verifies it. `verify` uses
only the standard library on purpose: receivers copy it (docs/WEBHOOKS.md shows it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping, Sequence

SECRET_PREFIX = "whsec_"
#: Receivers refuse timestamps further than this from their clock (replay protection).
DEFAULT_TOLERANCE_S = 300


class InvalidSignature(ValueError):
    """The delivery is not from us, was altered, or is too old/new to trust."""


def generate_secret() -> str:
    """A fresh `whsec_` secret (32 random bytes), in the format the standardwebhooks library reads."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key: base64-decoded for `whsec_...` secrets, the UTF-8 bytes of any other string."""
    if secret.startswith(SECRET_PREFIX):
        return base64.b64decode(secret[len(SECRET_PREFIX) :])
    return secret.encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature of exactly these bytes."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_headers(
    secret: str | Sequence[str], msg_id: str, body: bytes, timestamp: int | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers for one delivery attempt (the timestamp is per attempt); one
    signature per secret."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    keys = [secret] if isinstance(secret, str) else list(secret)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(key, msg_id, timestamp, body) for key in keys),
    }


def split_secrets(text: str) -> tuple[str, ...]:
    """Secrets from one setting: separated by white space or commas (a `whsec_` secret holds neither)."""
    return tuple(dict.fromkeys(part for part in text.replace(",", " ").split() if part))


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> None:
    """Raise InvalidSignature unless `body` carries a valid, fresh signature made with `secret`.

    `headers` is any mapping of the request's headers; `body` the raw bytes as received (parse JSON
    only after this passes). Several space-separated signatures are allowed (secret rotation).
    """
    lowered = {key.lower(): value for key, value in headers.items()}
    msg_id = lowered.get("webhook-id", "")
    timestamp = lowered.get("webhook-timestamp", "")
    signatures = lowered.get("webhook-signature", "")
    if not (msg_id and timestamp and signatures):
        raise InvalidSignature("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise InvalidSignature("webhook-timestamp is not an integer") from None
    current = time.time() if now is None else now
    if abs(current - sent_at) > tolerance_s:
        raise InvalidSignature("webhook-timestamp is outside the tolerance (replayed or clock skew)")
    expected = sign(secret, msg_id, sent_at, body).encode()
    for candidate in signatures.split():
        if hmac.compare_digest(candidate.encode(), expected):
            return
    raise InvalidSignature("no matching signature")
