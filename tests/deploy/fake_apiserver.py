"""A read-only stand-in for the Kubernetes API on 127.0.0.1, enough for Helm's `lookup`.

`helm template --dry-run=server` resolves `lookup` against a cluster; this answers discovery, GETs of the
Secrets it is given and the list of a namespace's Secrets (the chart's "is there a cluster" check), so
tests can check what an install or upgrade renders without a cluster.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

DISCOVERY: dict[str, Any] = {
    "/version": {"major": "1", "minor": "32", "gitVersion": "v1.32.0"},
    "/api": {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []},
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": []},
    "/api/v1": {
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [{"name": "secrets", "singularName": "secret", "namespaced": True, "kind": "Secret",
                       "verbs": ["get", "list"]}],
    },
}  # fmt: skip
NOT_FOUND = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}


@contextmanager
def fake_apiserver(secrets: list[dict[str, Any]], folder: Path) -> Iterator[Path]:
    """Serve the given Secrets; yields a kubeconfig path pointing at the server."""
    routes = dict(DISCOVERY)
    for namespace in {"default", *(s["metadata"]["namespace"] for s in secrets)}:
        items = [s for s in secrets if s["metadata"]["namespace"] == namespace]
        routes[f"/api/v1/namespaces/{namespace}/secrets"] = {
            "kind": "SecretList",
            "apiVersion": "v1",
            "metadata": {},
            "items": items,
        }
    for s in secrets:
        routes[f"/api/v1/namespaces/{s['metadata']['namespace']}/secrets/{s['metadata']['name']}"] = s

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = routes.get(self.path.split("?")[0])
            data = json.dumps(body or NOT_FOUND).encode()
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = folder / "kubeconfig"
    url = f"http://127.0.0.1:{server.server_address[1]}"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: fake\n"
        f"clusters: [{{name: fake, cluster: {{server: '{url}'}}}}]\n"
        "contexts: [{name: fake, context: {cluster: fake, namespace: default}}]\n"
        "users: [{name: fake, user: {}}]\n"
    )
    try:
        yield kubeconfig
    finally:
        server.shutdown()
        server.server_close()
