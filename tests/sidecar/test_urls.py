"""Webhook URL safety: http(s) only; loopback, private, link-local and metadata refused unless allowed."""

from __future__ import annotations

import ipaddress
import re
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


@pytest.mark.parametrize(
    ("address", "form", "inner"),
    [
        ("2002:0a00:0001::1", "6to4", "10.0.0.1"),
        ("2002:7f00:0001::", "6to4", "127.0.0.1"),
        ("2002:a9fe:a9fe::1", "6to4", "169.254.169.254"),
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "Teredo", "10.0.0.1"),  # client 10.0.0.1, obfuscated
        ("64:ff9b::a00:1", "NAT64", "10.0.0.1"),
        ("64:ff9b::c0a8:101", "NAT64", "192.168.1.1"),
        ("64:ff9b:1::7f00:1", "NAT64", "127.0.0.1"),
    ],
)
def test_ipv6_forms_that_embed_a_private_ipv4_are_refused(address: str, form: str, inner: str) -> None:
    with pytest.raises(UnsafeUrl, match=rf"a {form} address embedding {re.escape(inner)}"):
        check_webhook_url(f"http://[{address}]:8080/hook", NOTHING)


def test_an_embedded_metadata_address_stays_refused_even_when_allowlisted() -> None:
    allow_all = Allowlist.parse("::/0")
    with pytest.raises(UnsafeUrl, match="metadata"):
        check_webhook_url("http://[2002:a9fe:a9fe::1]/hook", allow_all)


def test_embedding_a_public_ipv4_is_judged_like_any_ipv6_address() -> None:
    assert check_webhook_url("http://[2002:0808:0808::1]/hook", NOTHING).addresses == (
        ipaddress.ip_address("2002:808:808::1"),
    )


def test_ports_outside_the_allow_list_are_refused_and_any_port_is_the_default() -> None:
    only_tls = Allowlist.parse("", "443, 8443")
    assert check_webhook_url("https://93.184.216.34/hook", only_tls).port == 443
    assert check_webhook_url("https://93.184.216.34:8443/hook", only_tls).port == 8443
    with pytest.raises(UnsafeUrl, match=r"port 6379 is not allowed \(SIDECAR_WEBHOOK_PORTS: 443, 8443\)"):
        check_webhook_url("http://93.184.216.34:6379/hook", only_tls)
    assert check_webhook_url("http://93.184.216.34:6379/hook", NOTHING).port == 6379
