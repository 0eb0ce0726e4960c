"""The voice store and each replica's catalog of it, on a directory and on a real PostgreSQL.

Two catalogs over one store stand for two replicas: a change made through one is seen by the other
within a second (PostgreSQL: by LISTEN/NOTIFY alone, its version poll set to 30 s here). A replica
that loses its store keeps serving the voices it has cached, says so in `bark_voice_store_up` and
`bark_voice_store_errors_total`, answers 503 for the rest, and recovers by itself.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from bark_common.errors import Unavailable
from model_server.callers import Callers
from model_server.custom_voices import CustomVoices
from model_server.generation.engine import BarkEngine
from model_server.generation.speaker_prompt import SpeakerPrompt
from model_server.voice_store.catalog import VoiceCatalog
from model_server.voice_store.directory import DirectoryVoiceStore
from model_server.voice_store.postgres import PostgresVoiceStore
from model_server.voice_store.records import VoiceRecord, VoiceStore
from tests.serving import free_port
from tests.sidecar.postgres import PostgresServer
from tests.voice_files import LIMITS, bark_arrays
from tests.voices.conftest import seconds_until

#: A catalog's version poll: PostgreSQL must be seen to change by its notifications alone.
POLL_S = {"directory": 0.1, "postgres": 30.0}


def prompt(seed: int = 0) -> SpeakerPrompt:
    return SpeakerPrompt.of(*bark_arrays(seed=seed).values())


def record(name: str, owner: str = "owner-a", seed: int = 0) -> VoiceRecord:
    return VoiceRecord(owner=owner, name=name, digest=prompt(seed).digest, consent="agreed", language="en")


@pytest.fixture(params=["directory", "postgres"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Callable[[], VoiceStore]:
    """A new connection to the test's one store (each call: another replica's)."""
    if kind == "directory":
        return lambda: DirectoryVoiceStore(tmp_path / "voices")
    url = request.getfixturevalue("voices_db")
    return lambda: PostgresVoiceStore(url)


@pytest.fixture
def replicas(make_store: Callable[[], VoiceStore], kind: str) -> Iterator[Callable[[], VoiceCatalog]]:
    made: list[VoiceCatalog] = []

    def replica() -> VoiceCatalog:
        catalog = VoiceCatalog(make_store(), LIMITS, poll_s=POLL_S[kind], cache_size=4)
        catalog.start()
        made.append(catalog)
        return catalog

    yield replica
    for catalog in made:
        catalog.close()


def test_a_voice_is_stored_read_listed_and_deleted(make_store):
    store = make_store()
    try:
        assert store.add(record("calm"), prompt().to_npz())
        assert not store.add(record("calm", seed=1), prompt(1).to_npz()), "a name is taken once per owner"
        assert store.add(record("calm", owner="owner-b", seed=1), prompt(1).to_npz()), "names are per owner"
        assert store.read("owner-a", "calm") == prompt().to_npz()
        assert {(r.owner, r.name) for r in store.records()} == {("owner-a", "calm"), ("owner-b", "calm")}
        version = store.version()
        assert store.set_published("owner-a", "calm", True) and store.version() != version
        assert [r.published for r in store.records() if r.owner == "owner-a"] == [True]
        assert store.delete("owner-a", "calm") and not store.delete("owner-a", "calm")
        assert store.read("owner-a", "calm") is None
    finally:
        store.close()


def test_every_replica_hashes_owners_with_the_same_secret(make_store):
    first, second = make_store(), make_store()
    try:
        secret = first.owner_secret()
        assert len(secret) == 32 and second.owner_secret() == secret == first.owner_secret()
    finally:
        first.close()
        second.close()


def test_a_change_on_one_replica_is_seen_by_another_within_a_second(replicas):
    writer, reader = replicas(), replicas()
    assert writer.add(record("fresh"), prompt())
    assert seconds_until(lambda: reader.get("owner-a", "fresh") is not None, within_s=1.0) < 1.0
    assert reader.npz(reader.get("owner-a", "fresh")) == prompt().to_npz()  # type: ignore[arg-type]
    assert writer.set_published("owner-a", "fresh", True)
    seconds_until(lambda: reader.published("fresh") is not None, within_s=1.0)
    assert writer.delete("owner-a", "fresh")
    seconds_until(lambda: reader.get("owner-a", "fresh") is None, within_s=1.0)
    assert REGISTRY.get_sample_value("bark_custom_voices") == 0


def test_closing_a_replica_ends_its_watchers_wait_at_once(make_store):
    """A pod's shutdown must not sit out the watcher's wait (30 s here, 5 s of LISTEN in production)."""
    catalog = VoiceCatalog(make_store(), LIMITS, poll_s=30.0, cache_size=4)
    catalog.start()
    time.sleep(0.3)  # the watcher is in its wait by now
    started = time.monotonic()
    catalog.close()
    assert catalog._thread is not None and not catalog._thread.is_alive()
    assert time.monotonic() - started < 5.0


def _store_up() -> float | None:
    return REGISTRY.get_sample_value("bark_voice_store_up")


def _errors(operation: str) -> float:
    return REGISTRY.get_sample_value("bark_voice_store_errors_total", {"operation": operation}) or 0.0


def outage(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[Callable[[], None], Callable[[], None]]:
    """(break, mend) the store as an operator's outage would: PostgreSQL stopped; the volume gone."""
    if kind == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres")
        return server.stop, server.start
    root, away = tmp_path / "voices", tmp_path / "unmounted"
    return (lambda: shutil.move(root, away)), (lambda: shutil.move(away, root))


def test_a_replica_without_its_store_serves_what_it_cached_and_recovers(replicas, kind, tmp_path, request):
    writer, replica = replicas(), replicas()
    assert writer.add(record("cached"), prompt()) and writer.add(record("not-cached", seed=1), prompt(1))
    seconds_until(lambda: replica.get("owner-a", "not-cached") is not None, within_s=1.0)
    cached = replica.get("owner-a", "cached")
    assert cached is not None
    replica.prompt(cached)  # read once: now in this replica's memory
    errors_before = _errors("watch") + _errors("read") + _errors("write")
    stop, start = outage(kind, tmp_path, request)
    stop()
    try:
        seconds_until(lambda: not replica.up, within_s=10.0)
        assert _store_up() == 0
        assert replica.prompt(cached).digest == prompt().digest, "a cached voice still works"
        with pytest.raises(Unavailable):
            replica.prompt(replica.get("owner-a", "not-cached"))  # type: ignore[arg-type]
        with pytest.raises(Unavailable) as refused:
            replica.add(record("during-outage", seed=2), prompt(2))
        assert refused.value.retry_after_s
        assert _errors("watch") + _errors("read") + _errors("write") > errors_before
    finally:
        start()
    seconds_until(lambda: replica.up, within_s=15.0)
    assert _store_up() == 1
    assert writer.add(record("after", seed=3), prompt(3))
    seconds_until(lambda: replica.get("owner-a", "after") is not None, within_s=2.0)


def test_a_replica_that_never_reached_its_store_serves_presets_to_keyed_callers(engine: BarkEngine) -> None:
    """The owner hash's secret lives in the store: until it answers, a keyed caller is unidentified,
    owns nothing and may change nothing (503), and presets work as ever."""
    catalog = VoiceCatalog(PostgresVoiceStore(f"postgresql://bark@127.0.0.1:{free_port()}/voices"), LIMITS)
    catalog.start()
    try:
        assert not catalog.up and _store_up() == 0
        voices = CustomVoices(engine.voices, LIMITS, catalog)
        caller = Callers(("a-key",), (), voices.owner_secret).of({"authorization": "Bearer a-key"})
        assert not caller.identified
        assert voices.choose("v2/en_speaker_1", caller).key == "v2/en_speaker_1"
        assert voices.choose("random", caller).key is None
        with pytest.raises(Unavailable):
            voices.check_new(caller, "new-voice")
        assert [v for v in voices.describe(caller)["voices"] if v.get("custom")] == []
    finally:
        catalog.close()
