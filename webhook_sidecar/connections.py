"""Webhook connections, one pool per receiver hostname.

Deliveries connect to the address the SSRF check pinned (urls.py) and name the host in `Host` and TLS
SNI. httpx pools connections by the URL's origin, which is then that address: with one client, a
connection verified for `a.example` would be reused for `b.example` when both resolve to one IP (a
shared ingress, a CDN), carrying one tenant's signed payload on a session verified for another's name.
So each (scheme, hostname, port) gets a client of its own, and a pool never holds another name's
connections. The least recently used clients are closed past `max_hosts`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import OrderedDict

import httpx

from .urls import Target


class WebhookClients:
    """httpx clients for webhook receivers, one per (scheme, hostname, port)."""

    def __init__(self, verify: ssl.SSLContext | bool = True, max_hosts: int = 256) -> None:
        self.verify = verify
        self.max_hosts = max_hosts
        self._clients: OrderedDict[tuple[str, str, int], httpx.AsyncClient] = OrderedDict()
        self._closing: set[asyncio.Task[None]] = set()

    def for_target(self, target: Target) -> httpx.AsyncClient:
        key = (target.scheme, target.host.lower().rstrip("."), target.port)
        client = self._clients.get(key)
        if client is None:
            # Env proxies are ignored: webhooks go to the address we checked. Redirects are not followed.
            client = httpx.AsyncClient(trust_env=False, follow_redirects=False, verify=self.verify)
            self._clients[key] = client
            while len(self._clients) > self.max_hosts:
                _, evicted = self._clients.popitem(last=False)
                task = asyncio.ensure_future(evicted.aclose())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
        else:
            self._clients.move_to_end(key)
        return client

    def __len__(self) -> int:
        return len(self._clients)

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), OrderedDict()
        await asyncio.gather(*(client.aclose() for client in clients), *self._closing, return_exceptions=True)
