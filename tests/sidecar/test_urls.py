"""Webhook URL safety: http(s) only; loopback, private, link-local and metadata refused unless allowed."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webhook_sidecar.urls import Allowlist, UnresolvableHost, UnsafeUrl, blocked_reason, check_webhook_url

NOTHING = Allowlist()


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/x", "file:///etc/passwd", "gopher://x", "javascript:alert(1)", "example.com/hook"],
)
def test_only_http_and_https_are_accepted(url: str) -> None:
    with pytest.raises(UnsafeUrl, match="http:// or https://"):
        check_webhook_url(url, NOTHING)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:9000/hook", "loopback"),
        ("http://localhost/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://10.1.2.3/hook", "private"),
        ("http://192.168.0.10/hook", "private"),
        ("http://172.16.5.4/hook", "private"),
        ("http://[fd12::1]/hook", "private"),
        ("http://169.254.10.1/hook", "link-local"),
        ("http://0.0.0.0/hook", "unspecified"),
        ("http://[::ffff:127.0.0.1]/hook", "loopback"),
        ("http://100.64.0.1/hook", "not a public address"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[fd00:ec2::254]/", "metadata"),
    ],
)
def test_internal_addresses_are_refused(url: str, reason: str) -> None:
    with pytest.raises(UnsafeUrl, match=reason):
        check_webhook_url(url, NOTHING)


def test_public_addresses_are_allowed() -> None:
    target = check_webhook_url("https://93.184.216.34:8443/hook?x=1", NOTHING)
    assert (target.scheme, target.host, target.port) == ("https", "93.184.216.34", 8443)
    assert target.addresses == (ipaddress.ip_address("93.184.216.34"),)


def test_allowlisted_hosts_and_networks_may_be_private() -> None:
    allow = Allowlist.parse(" 127.0.0.1 , receiver.ns.svc , 10.0.0.0/8")
    assert check_webhook_url("http://127.0.0.1:9/hook", allow).addresses == (ipaddress.ip_address("127.0.0.1"),)
    assert check_webhook_url("http://10.9.8.7/hook", allow).port == 80
    with pytest.raises(UnsafeUrl, match="private"):
        check_webhook_url("http://192.168.1.1/hook", allow)


def test_metadata_stays_refused_even_inside_an_allowlisted_network() -> None:
    allow = Allowlist.parse("169.254.0.0/16")
    assert check_webhook_url("http://169.254.1.1/", allow).port == 80
    with pytest.raises(UnsafeUrl, match="metadata"):
        check_webhook_url("http://169.254.169.254/", allow)


def fake_dns(answers: dict[str, list[str]]) -> Any:
    real = socket.getaddrinfo

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in answers:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in answers[host]]
        return real(host, port, *args, **kwargs)

    return getaddrinfo


def test_a_name_resolving_to_any_private_address_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", fake_dns({"mixed.test": ["93.184.216.34", "10.0.0.5"]}))
    with pytest.raises(UnsafeUrl, match=r"mixed\.test resolves to 10\.0\.0\.5, a private address"):
        check_webhook_url("https://mixed.test/hook", NOTHING)


def test_an_allowlisted_name_may_resolve_privately(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", fake_dns({"receiver.ns.svc": ["10.0.0.5"]}))
    target = check_webhook_url("http://receiver.ns.svc/hook", Allowlist.parse("receiver.ns.svc"))
    assert target.addresses == (ipaddress.ip_address("10.0.0.5"),)


def test_unresolvable_hosts_are_refused_with_their_own_error() -> None:
    with pytest.raises(UnresolvableHost, match="cannot resolve"):
        check_webhook_url("http://no-such-host.invalid/hook", NOTHING)


@given(st.ip_addresses(v=4, network="10.0.0.0/8") | st.ip_addresses(v=4, network="127.0.0.0/8"))
def test_every_private_or_loopback_ipv4_is_blocked(address: ipaddress.IPv4Address) -> None:
    assert blocked_reason(address) is not None
