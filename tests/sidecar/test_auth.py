"""API keys on the job routes; health, readiness and metrics stay open."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent

from tests.sidecar.harness import InProcessSidecar, Receiver, job_body


def test_job_routes_need_a_key_when_keys_are_configured(
    make_sidecar: Callable[..., InProcessSidecar], receiver: Receiver, tmp_path: Path
) -> None:
    key_file = tmp_path / "api-keys"
    key_file.write_text("# from the Secret\nfile-key\n")
    sidecar = make_sidecar(api_keys="env-key, other-key", api_keys_file=key_file)
    with sidecar.client() as client:
        missing = client.post("/async_predict", json=job_body(receiver))
        wrong = client.post("/async_predict", json=job_body(receiver), headers={"Authorization": "Bearer nope"})
        assert missing.status_code == wrong.status_code == 401
        assert "Authorization: Bearer" in missing.json()["error"] and "x-api-key" in missing.json()["error"]
        assert missing.headers["www-authenticate"] == "Bearer"

        bearer = client.post("/async_predict", json=job_body(receiver), headers={"Authorization": "Bearer env-key"})
        header = client.post("/async_predict", json=job_body(receiver), headers={"x-api-key": "file-key"})
        assert bearer.status_code == header.status_code == 202
        job_id = bearer.json()["job_id"]
        assert client.get(f"/jobs/{job_id}").status_code == 401
        assert client.get(f"/jobs/{job_id}", headers={"x-api-key": "env-key"}).status_code == 200
        assert client.get(f"/jobs/{job_id}", headers={"x-api-key": "other-key"}).status_code == 404, "not theirs"

        for open_path in ("/healthz", "/readyz", "/metrics"):
            assert client.get(open_path).status_code == 200, open_path


def test_cloudevents_need_a_key_unless_that_is_switched_off(
    make_sidecar: Callable[..., InProcessSidecar], receiver: Receiver, tmp_path: Path
) -> None:
    event = CloudEvent({"type": "com.barkkserve.tts.requested", "source": "/t", "id": "1"}, job_body(receiver))
    headers, body = to_binary(event)
    strict = make_sidecar(api_keys="k")
    with strict.client() as client:
        assert client.post("/", headers=headers, content=body).status_code == 401
        assert client.post("/", headers={**headers, "x-api-key": "k"}, content=body).status_code == 202
    open_intake = make_sidecar(api_keys="k", cloudevents_require_key=False, db_path=tmp_path / "open.sqlite3")
    with open_intake.client() as client:
        assert client.post("/", headers=headers, content=body).status_code == 202


def test_idempotency_keys_are_scoped_to_the_caller(
    make_sidecar: Callable[..., InProcessSidecar], receiver: Receiver
) -> None:
    sidecar = make_sidecar(api_keys="alice,bob")
    with sidecar.client() as client:
        alice = client.post(
            "/async_predict", json=job_body(receiver), headers={"x-api-key": "alice", "Idempotency-Key": "1"}
        )
        bob = client.post(
            "/async_predict", json=job_body(receiver), headers={"x-api-key": "bob", "Idempotency-Key": "1"}
        )
    assert alice.status_code == bob.status_code == 202
    assert alice.json()["job_id"] != bob.json()["job_id"]
