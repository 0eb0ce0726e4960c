"""Webhook URL safety (SSRF): http(s) only, and no loopback, private, link-local or metadata targets.

A job makes the sidecar POST to a URL a client chose, from inside the cluster; unchecked, that reaches
the pod's loopback, cluster services and the cloud metadata endpoint (credentials). Every address the
host resolves to must be public, unless the operator allowlists the host or a CIDR. The check runs at
intake (a 400) and again at delivery, where the request is pinned to the checked address so DNS
cannot change between check and connect (rebinding).

IPv6 addresses that carry an IPv4 address inside them are judged by that IPv4 address too: IPv4-mapped
(`::ffff:10.0.0.1`), 6to4 (`2002:0a00:0001::`), Teredo (`2001:0::/32`, server and de-obfuscated client) and
NAT64 (`64:ff9b::/96`, `64:ff9b:1::/48`): a gateway or relay turns them into the private IPv4 target.
`SIDECAR_WEBHOOK_PORTS` optionally limits the ports a webhook may use (default: any).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Cloud instance metadata services (AWS/GCP/Azure, AWS IPv6, AWS ECS tasks, Alibaba). Refused even
#: when an allowlisted CIDR covers them: allowing a link-local receiver must not open credentials.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(text)
    for text in ("169.254.169.254", "fd00:ec2::254", "169.254.170.2", "169.254.170.23", "100.100.100.200")
)
MAX_URL_CHARS = 2048
#: NAT64 prefixes: the well-known one (RFC 6052) and the local-use one (RFC 8215); the IPv4 is the last 32 bits.
NAT64_NETWORKS = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))


class UnsafeUrl(ValueError):
    """The webhook URL may not be called (scheme, syntax or address); the message says why."""


class UnresolvableHost(UnsafeUrl):
    """DNS gave no address: refused at intake, but only a reason to retry at delivery."""


@dataclass(frozen=True)
class Allowlist:
    """Hosts (exact names or literal addresses) and networks that may be private."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()
    #: Ports a webhook may use; empty: any.
    ports: frozenset[int] = frozenset()

    @classmethod
    def parse(cls, text: str, ports: str = "") -> Allowlist:
        """`"127.0.0.1, receiver.ns.svc, 10.0.0.0/8"`: CIDRs and addresses become networks; `ports`:
        `"443, 8443"` (empty: any port)."""
        allowed_ports = frozenset(int(port) for port in ports.replace(",", " ").split())
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in (item.strip() for item in text.split(",")):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks), allowed_ports)

    def allows_host(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.hosts

    def allows_address(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks if network.version == address.version)


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (`addresses`) and what the server must see (`host`, `port`)."""

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[IPAddress, ...]


def parse_webhook_url(url: str) -> tuple[str, str, int]:
    """Syntax only (no DNS): scheme, host and port of an absolute http(s) URL, or UnsafeUrl."""
    if len(url) > MAX_URL_CHARS:
        raise UnsafeUrl(f"webhook_endpoint: longer than {MAX_URL_CHARS} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise UnsafeUrl(f"webhook_endpoint: not a valid URL ({error})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UnsafeUrl("webhook_endpoint: must be an http:// or https:// URL")
    if not parts.hostname:
        raise UnsafeUrl("webhook_endpoint: has no host")
    return scheme, parts.hostname, port or (443 if scheme == "https" else 80)


def is_metadata(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address):
        inner = [address.ipv4_mapped] if address.ipv4_mapped is not None else []
        return address in METADATA_ADDRESSES or any(
            v4 in METADATA_ADDRESSES for v4 in inner + [v4 for _, v4 in embedded_ipv4(address)]
        )
    return address in METADATA_ADDRESSES


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    """The IPv4 addresses an IPv6 address carries, each with the form that carries it."""
    found: list[tuple[str, ipaddress.IPv4Address]] = []
    if address.sixtofour is not None:
        found.append(("6to4", address.sixtofour))
    if address.teredo is not None:
        server, client = address.teredo
        found += [("Teredo", server), ("Teredo", client)]
    if any(address in network for network in NAT64_NETWORKS):
        found.append(("NAT64", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)))
    return found


def blocked_reason(address: IPAddress) -> str | None:
    """Why an address is not a public one we may call, or None when it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return blocked_reason(address.ipv4_mapped)
    if isinstance(address, ipaddress.IPv6Address):
        for form, inner in embedded_ipv4(address):
            if (reason := blocked_reason(inner)) is not None:
                return f"a {form} address embedding {inner}, {reason}"
    if is_metadata(address):
        return "a cloud metadata address"
    for reason, flag in (
        ("a loopback address", address.is_loopback),
        ("an unspecified address", address.is_unspecified),
        ("a link-local address", address.is_link_local),
        ("a multicast address", address.is_multicast),
        ("a private address", address.is_private),
        ("a reserved address", address.is_reserved),
        ("not a public address", not address.is_global),
    ):
        if flag:
            return reason
    return None


def resolve(host: str, port: int) -> tuple[IPAddress, ...]:
    """Every address `host` resolves to (a literal address resolves to itself)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise UnresolvableHost(f"webhook_endpoint: cannot resolve host {host!r} ({error})") from None
    addresses = dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos)
    return tuple(addresses)


def check_webhook_url(url: str, allowlist: Allowlist) -> Target:
    """Resolve and check `url`; every resolved address must be allowed, else UnsafeUrl."""
    scheme, host, port = parse_webhook_url(url)
    if allowlist.ports and port not in allowlist.ports:
        allowed = ", ".join(str(p) for p in sorted(allowlist.ports))
        raise UnsafeUrl(f"webhook_endpoint: port {port} is not allowed (SIDECAR_WEBHOOK_PORTS: {allowed})")
    addresses = resolve(host, port)
    host_allowed = allowlist.allows_host(host)
    for address in addresses:
        reason = blocked_reason(address)
        if reason is None:
            continue
        if is_metadata(address):
            raise UnsafeUrl(f"webhook_endpoint: {host} resolves to {address}, {reason}")
        if not (host_allowed or allowlist.allows_address(address)):
            raise UnsafeUrl(
                f"webhook_endpoint: {host} resolves to {address}, {reason} "
                "(refused; SIDECAR_WEBHOOK_ALLOWLIST can allow it)"
            )
    return Target(url=url, scheme=scheme, host=host, port=port, addresses=addresses)


async def check_webhook_url_async(url: str, allowlist: Allowlist) -> Target:
    """`check_webhook_url` off the event loop (getaddrinfo blocks)."""
    return await asyncio.to_thread(check_webhook_url, url, allowlist)
