"""The scheduler on a fake engine: batching across requests, ordering, backpressure, failures."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from bark_common.errors import InvalidInput, Overloaded
from model_server.generation.scheduler import BatchFailed, Scheduler


class RecordingRunner:
    """Stands in for the engine: returns `f"{key}:{payload}"`, records every batch it ran."""

    def __init__(self, delay_s: float = 0.0, fail_on: str | None = None):
        self.batches: list[tuple[object, list]] = []
        self.delay_s = delay_s
        self.fail_on = fail_on
        self.started = threading.Event()

    def __call__(self, key: object, payloads: list) -> list[str]:
        self.started.set()
        self.batches.append((key, list(payloads)))
        time.sleep(self.delay_s)
        if self.fail_on is not None and self.fail_on in payloads:
            raise RuntimeError("CUDA error: simulated")
        return [f"{key}:{payload}" for payload in payloads]


def make(runner, **overrides) -> Scheduler:
    options = {"max_batch_size": 8, "max_wait_ms": 30, "max_queue_chunks": 64, **overrides}
    return Scheduler(runner, **options)


def run(coroutine):
    return asyncio.run(coroutine)


def test_concurrent_requests_share_batches_and_each_gets_its_own_chunks_in_order():
    runner = RecordingRunner()

    async def scenario():
        scheduler = make(runner)
        results = await asyncio.gather(
            scheduler.submit("alice", ["a1", "a2", "a3"]),
            scheduler.submit("alice", ["b1", "b2"]),
            scheduler.submit("bob", ["c1"]),
        )
        await scheduler.close()
        return results

    first, second, third = run(scenario())
    assert first == ["alice:a1", "alice:a2", "alice:a3"]
    assert second == ["alice:b1", "alice:b2"]
    assert third == ["bob:c1"]
    # Same key -> one shared batch; a different voice/sampling key never mixes into it.
    assert sorted((key, len(payloads)) for key, payloads in runner.batches) == [("alice", 5), ("bob", 1)]


def test_batches_never_exceed_max_batch_size():
    runner = RecordingRunner()

    async def scenario():
        scheduler = make(runner, max_batch_size=4)
        result = await asyncio.gather(*(scheduler.submit("k", [f"{i}-{j}" for j in range(3)]) for i in range(5)))
        await scheduler.close()
        return result

    results = run(scenario())
    assert all(len(payloads) <= 4 for _, payloads in runner.batches)
    assert sum(len(payloads) for _, payloads in runner.batches) == 15
    assert results[2] == ["k:2-0", "k:2-1", "k:2-2"]


def test_full_queue_is_overloaded_with_retry_after():
    runner = RecordingRunner(delay_s=0.3)

    async def scenario():
        scheduler = make(runner, max_batch_size=2, max_queue_chunks=4, retry_after_s=3)
        running = asyncio.create_task(scheduler.submit("k", ["busy1", "busy2"]))
        await asyncio.to_thread(runner.started.wait, 5)
        queued = asyncio.create_task(scheduler.submit("k", ["q1", "q2", "q3"]))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded) as refused:
            await scheduler.submit("k", ["too", "many"])
        results = await asyncio.gather(running, queued)
        await scheduler.close()
        return refused.value, results

    error, results = run(scenario())
    assert error.retry_after_s == 3
    assert results[1] == ["k:q1", "k:q2", "k:q3"]


def test_request_larger_than_the_queue_is_invalid_not_overloaded():
    async def scenario():
        scheduler = make(RecordingRunner(), max_queue_chunks=3)
        with pytest.raises(InvalidInput, match="more than the queue holds"):
            await scheduler.submit("k", ["1", "2", "3", "4"])
        await scheduler.close()

    run(scenario())


def test_failing_batch_fails_only_its_requests_and_the_worker_keeps_serving():
    runner = RecordingRunner(fail_on="poison")

    async def scenario():
        scheduler = make(runner)
        bad, good = await asyncio.gather(
            scheduler.submit("voice-a", ["ok", "poison"]),
            scheduler.submit("voice-b", ["fine"]),
            return_exceptions=True,
        )
        later = await scheduler.submit("voice-a", ["after"])
        await scheduler.close()
        return bad, good, later

    bad, good, later = run(scenario())
    assert isinstance(bad, BatchFailed) and "simulated" in str(bad)
    assert good == ["voice-b:fine"]
    assert later == ["voice-a:after"]


def test_cancelled_request_chunks_are_dropped_from_the_queue():
    runner = RecordingRunner(delay_s=0.2)

    async def scenario():
        scheduler = make(runner, max_batch_size=2)
        first = asyncio.create_task(scheduler.submit("k", ["running1", "running2"]))
        await asyncio.to_thread(runner.started.wait, 5)
        doomed = asyncio.create_task(scheduler.submit("k", ["gone1", "gone2", "gone3"]))
        await asyncio.sleep(0.01)
        assert scheduler.queued_chunks == 3
        doomed.cancel()
        await asyncio.gather(doomed, return_exceptions=True)
        queued_after_cancel = scheduler.queued_chunks
        await first
        survivor = await scheduler.submit("k", ["next"])
        await scheduler.close()
        return queued_after_cancel, survivor

    queued_after_cancel, survivor = run(scenario())
    assert queued_after_cancel == 0
    assert survivor == ["k:next"]
    assert all(not payload.startswith("gone") for _, payloads in runner.batches for payload in payloads)


def test_urgent_first_chunk_jumps_the_queue():
    runner = RecordingRunner(delay_s=0.05)

    async def scenario():
        scheduler = make(runner, max_batch_size=2, max_wait_ms=0)
        blocker = asyncio.create_task(scheduler.submit("k", ["b1", "b2"]))
        await asyncio.to_thread(runner.started.wait, 5)
        waiting = asyncio.create_task(scheduler.submit("k", ["w1", "w2", "w3", "w4"]))
        await asyncio.sleep(0)
        streaming = asyncio.create_task(scheduler.submit("k", ["s1", "s2"], urgent_first=True))
        await asyncio.gather(blocker, waiting, streaming)
        await scheduler.close()

    run(scenario())
    # The streaming request's first chunk runs alone, ahead of all waiting chunks; its second
    # chunk waits its turn like any other.
    assert runner.batches[1][1] == ["s1"]
