"""API keys, as the model server and the webhook sidecar both check them (one definition).

Keys come from a comma-separated setting and/or a mounted Secret file (one key per line); a caller
presents one as `Authorization: Bearer <key>` or `x-api-key: <key>`; keys are compared in constant
time and never logged.
"""

from __future__ import annotations

import hmac
from pathlib import Path

UNAUTHORIZED_MESSAGE = "missing or invalid API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'"


def load_api_keys(inline: str | None, file: Path | None) -> tuple[str, ...]:
    """Keys from the setting (separated by commas or newlines: a Secret's lines in an env variable)
    and the key file; blank lines and '#' comments skipped."""
    keys = [key.strip() for key in (inline or "").replace("\n", ",").split(",")]
    if file is not None:
        keys += [line.strip() for line in file.read_text().splitlines() if not line.strip().startswith("#")]
    return tuple(dict.fromkeys(key for key in keys if key))


def presented_key(headers: dict[str, str]) -> str | None:
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("x-api-key") or None


def key_is_valid(candidate: str | None, keys: tuple[str, ...]) -> bool:
    """Constant-time in the key's content: every configured key is compared, no early exit."""
    if candidate is None:
        return False
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(candidate.encode(), key.encode())
    return matched
