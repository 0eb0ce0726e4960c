"""Standard Webhooks signatures: what we send verifies with the documented `verify`, nothing else does."""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

import pytest

from tests.serving import REPO_ROOT
from webhook_sidecar.signing import (
    InvalidSignature,
    generate_secret,
    secret_key,
    sign,
    signature_headers,
    verify,
)

BODY = b'{"specversion": "1.0", "id": "job-1", "data": {"audio": "UklGRg=="}}'
NOW = 1_700_000_000


def test_signature_is_hmac_sha256_of_id_timestamp_body_in_base64() -> None:
    raw_key = b"0123456789abcdef0123456789abcdef"
    secret = "whsec_" + base64.b64encode(raw_key).decode()
    expected = hmac.new(raw_key, b"job-1.1700000000." + BODY, hashlib.sha256).digest()
    assert sign(secret, "job-1", NOW, BODY) == "v1," + base64.b64encode(expected).decode()


def test_raw_string_secrets_are_used_as_their_utf8_bytes() -> None:
    assert secret_key("plain secret") == b"plain secret"
    assert secret_key("whsec_" + base64.b64encode(b"key").decode()) == b"key"


def test_generated_secrets_are_random_whsec_keys_of_32_bytes() -> None:
    first, second = generate_secret(), generate_secret()
    assert first != second
    assert len(secret_key(first)) == 32


@pytest.mark.parametrize("secret", [generate_secret(), "a raw secret"])
def test_signed_delivery_verifies(secret: str) -> None:
    headers = signature_headers(secret, "job-1", BODY, timestamp=NOW)
    verify(secret, headers, BODY, now=NOW + 10)


def test_header_names_are_case_insensitive_for_verify() -> None:
    headers = {key.upper(): value for key, value in signature_headers("s", "job-1", BODY, NOW).items()}
    verify("s", headers, BODY, now=NOW)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda h, b: (h, b.replace(b"UklGRg==", b"UklGRh==")),
        lambda h, b: ({**h, "webhook-id": "job-2"}, b),
        lambda h, b: ({**h, "webhook-timestamp": str(NOW + 1)}, b),
        lambda h, b: ({k: v for k, v in h.items() if k != "webhook-signature"}, b),
    ],
    ids=["body", "id", "timestamp", "missing-signature"],
)
def test_tampered_delivery_fails(tamper) -> None:  # type: ignore[no-untyped-def]
    headers, body = tamper(signature_headers("secret", "job-1", BODY, NOW), BODY)
    with pytest.raises(InvalidSignature):
        verify("secret", headers, body, now=NOW)


def test_another_secret_fails() -> None:
    headers = signature_headers("secret", "job-1", BODY, NOW)
    with pytest.raises(InvalidSignature, match="no matching signature"):
        verify("other", headers, BODY, now=NOW)


def test_old_or_future_timestamps_fail_as_replays() -> None:
    headers = signature_headers("secret", "job-1", BODY, NOW)
    with pytest.raises(InvalidSignature, match="tolerance"):
        verify("secret", headers, BODY, now=NOW + 301)
    with pytest.raises(InvalidSignature, match="tolerance"):
        verify("secret", headers, BODY, now=NOW - 301)


def test_any_of_several_signatures_may_match_for_secret_rotation() -> None:
    headers = signature_headers("new", "job-1", BODY, NOW)
    headers["webhook-signature"] = sign("old", "job-1", NOW, BODY) + " " + headers["webhook-signature"]
    verify("new", headers, BODY, now=NOW)
    verify("old", headers, BODY, now=NOW)


def test_the_documented_receiver_snippet_verifies_our_signatures() -> None:
    """docs/WEBHOOKS.md's standard-library `verify` accepts what we send and refuses a tampered body."""
    docs = (REPO_ROOT / "docs" / "WEBHOOKS.md").read_text()
    snippet = docs.split("Standard library only:", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(snippet, namespace)
    documented_verify = namespace["verify"]
    for secret in (generate_secret(), "a raw secret"):
        headers = signature_headers(secret, "job-1", BODY)
        documented_verify(secret, headers, BODY)
        with pytest.raises(ValueError):
            documented_verify(secret, headers, BODY + b" ")
