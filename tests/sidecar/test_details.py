"""Sidecar details: download media types from the one format table, body limits while streaming, HTTPS.

The HTTPS test runs a TLS receiver under a test CA (trustme) at a name no DNS knows: the sidecar must
connect to the address it checked (pinned), and still send the name as Host and TLS SNI, and verify
the receiver's certificate against that name.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from bark_common.formats import FORMATS
from tests.serving import REPO_ROOT
from tests.sidecar.harness import FakeModel, InProcessSidecar, Receiver, job_body, wait_for
from webhook_sidecar import urls

HOOK_HOST = "hooks.example.test"


def test_downloads_carry_the_media_type_of_their_format(
    make_sidecar: Callable[..., InProcessSidecar], fake_model: FakeModel, receiver: Receiver
) -> None:
    sidecar = make_sidecar(inline_audio_max_bytes=0, concurrency=1)  # every result becomes a download
    for audio_format in FORMATS:
        prediction = {"audio": base64.b64encode(f"{audio_format} bytes".encode()).decode(), "format": audio_format}
        fake_model.script.append((200, {"predictions": [{**prediction, "sample_rate": 24000}]}, {}))
    with sidecar.client() as client:
        for audio_format in FORMATS:
            body = job_body(receiver, f"In {audio_format}.", format=audio_format)
            assert client.post("/async_predict", json=body).status_code == 202
    wait_for(lambda: len(receiver.acknowledged()) == len(FORMATS), 15, "every format delivered")
    served = {}
    with sidecar.client() as client:
        for delivery in receiver.acknowledged():
            data = delivery.event()["data"]
            download = client.get(data["audio_url"].removeprefix(sidecar.url))
            assert download.status_code == 200
            assert download.content == f"{data['format']} bytes".encode()
            served[data["format"]] = download.headers["content-type"]
    assert served == {name: info.content_type for name, info in FORMATS.items()}
    assert "application/octet-stream" not in served.values()


def _chunked_request(port: int, chunks: list[bytes], end: bool) -> bytes:
    """POST a chunked body over a raw socket (no Content-Length); returns what came back within 5 s."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"POST /async_predict HTTP/1.1\r\nHost: sidecar\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        for chunk in chunks:
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        if end:
            sock.sendall(b"0\r\n\r\n")
        try:
            return sock.recv(4096)
        except TimeoutError:
            return b"(no answer within 5 s)"


def test_a_chunked_body_is_refused_once_it_passes_the_limit_not_after_it_ends(
    make_sidecar: Callable[..., InProcessSidecar], receiver: Receiver
) -> None:
    sidecar = make_sidecar(max_body_bytes=2048)
    port = sidecar.runner.port
    # Over the limit and never finished: the answer comes while the client is still sending.
    answer = _chunked_request(port, [b" " * 1000] * 3, end=False)
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert b"larger than 2048 bytes" in answer
    # A chunked body under the limit is accepted.
    small = json.dumps(job_body(receiver, "Chunked.")).encode()
    answer = _chunked_request(port, [small[:10], small[10:]], end=True)
    assert answer.startswith(b"HTTP/1.1 202"), answer


@dataclass
class TlsReceiver:
    receiver: Receiver
    ca_file: Path
    seen_sni: list[str]


@pytest.fixture
def make_tls_receiver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], TlsReceiver]]:
    """`make_tls_receiver(cert_name)`: an https receiver at `hooks.example.test` with a certificate for
    `cert_name` from a test CA. Only the sidecar's resolver knows the name (it maps it to 127.0.0.1)."""
    real_resolve = urls.resolve

    def resolve(host: str, port: int) -> tuple[urls.IPAddress, ...]:
        return (ipaddress.ip_address("127.0.0.1"),) if host == HOOK_HOST else real_resolve(host, port)

    monkeypatch.setattr(urls, "resolve", resolve)
    started: list[Receiver] = []

    def make(cert_name: str) -> TlsReceiver:
        ca = trustme.CA()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert(cert_name).configure_cert(context)
        seen_sni: list[str] = []

        def record_sni(_sock: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
            seen_sni.append(name or "")

        context.sni_callback = record_sni  # type: ignore[assignment]
        ca_file = tmp_path / f"ca-{len(started)}.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        receiver = Receiver(tls=context, host=HOOK_HOST)
        receiver.up()
        started.append(receiver)
        return TlsReceiver(receiver, ca_file, seen_sni)

    yield make
    for receiver in started:
        receiver.down()


def test_https_delivery_pins_the_checked_address_and_keeps_the_name_for_host_and_sni(
    make_sidecar: Callable[..., InProcessSidecar], make_tls_receiver: Callable[[str], TlsReceiver]
) -> None:
    tls = make_tls_receiver(HOOK_HOST)
    sidecar = make_sidecar(webhook_ca_file=tls.ca_file)
    with sidecar.client() as client:
        job_id = client.post("/async_predict", json=job_body(tls.receiver, "Over TLS.")).json()["job_id"]
    sidecar.wait_state(job_id, "delivered")
    (delivery,) = tls.receiver.acknowledged()
    assert delivery.webhook_id == job_id
    assert delivery.headers["host"] == f"{HOOK_HOST}:{tls.receiver.port}"
    assert tls.seen_sni == [HOOK_HOST]


def test_https_delivery_refuses_a_certificate_for_another_name(
    make_sidecar: Callable[..., InProcessSidecar], make_tls_receiver: Callable[[str], TlsReceiver]
) -> None:
    tls = make_tls_receiver("someone-else.example.test")
    sidecar = make_sidecar(webhook_ca_file=tls.ca_file, max_attempts=2)
    with sidecar.client() as client:
        job_id = client.post("/async_predict", json=job_body(tls.receiver, "Wrong name.")).json()["job_id"]
    job = sidecar.wait_state(job_id, "dead")
    assert "CERTIFICATE_VERIFY_FAILED" in job["last_error"]
    assert tls.receiver.deliveries == []


def test_https_delivery_without_the_private_ca_is_refused(
    make_sidecar: Callable[..., InProcessSidecar], make_tls_receiver: Callable[[str], TlsReceiver]
) -> None:
    tls = make_tls_receiver(HOOK_HOST)
    sidecar = make_sidecar(max_attempts=2)  # public CAs only
    with sidecar.client() as client:
        job_id = client.post("/async_predict", json=job_body(tls.receiver, "Unknown CA.")).json()["job_id"]
    job = sidecar.wait_state(job_id, "dead")
    assert "CERTIFICATE_VERIFY_FAILED" in job["last_error"]


def test_the_sidecar_imports_neither_kserve_nor_torch() -> None:
    """Its container starts fast and small: the request schema and format table come from bark_common."""
    code = "import sys, webhook_sidecar.__main__; print(sorted({'kserve', 'torch', 'numpy'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_two_hostnames_on_one_address_never_share_a_connection(
    make_sidecar: Callable[..., InProcessSidecar], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two receivers' names on one IP (a shared ingress): a connection verified for one name never carries
    the other's delivery, while one name's deliveries do reuse their connection (keep-alive is on)."""
    names = ("tenant-a.example.test", "tenant-b.example.test")
    monkeypatch.setattr(urls, "resolve", lambda host, port: (ipaddress.ip_address("127.0.0.1"),))
    ca = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(*names).configure_cert(context)
    seen_sni: list[str] = []
    context.sni_callback = lambda _sock, name, _context: seen_sni.append(name or "")  # type: ignore[assignment,misc,func-returns-value]
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    receiver = Receiver(tls=context, host=names[0], keep_alive=True)
    receiver.up()
    try:
        sidecar = make_sidecar(webhook_ca_file=ca_file, delivery_concurrency=1)
        order = [names[0], names[0], names[1], names[0]]
        with sidecar.client() as client:
            for index, name in enumerate(order):
                body = job_body(receiver, f"Tenant job {index}.")
                body["webhook_endpoint"] = f"https://{name}:{receiver.port}/hook"
                job_id = client.post("/async_predict", json=body).json()["job_id"]
                sidecar.wait_state(job_id, "delivered")
    finally:
        receiver.down()
    hosts = [delivery.headers["host"].split(":")[0] for delivery in receiver.deliveries]
    assert hosts == order
    connection = [delivery.peer for delivery in receiver.deliveries]
    assert connection[0] == connection[1] == connection[3], "one name's deliveries reuse its connection"
    assert connection[2] not in (connection[0],), "the other name got a connection (and a TLS handshake) of its own"
    assert seen_sni == [names[0], names[1]]
