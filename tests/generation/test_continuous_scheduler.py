"""The continuous scheduler's guarantees on a fake row engine: joining, leaving, bounds, failures."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
import torch

from bark_common.errors import InvalidInput, Overloaded, Unavailable
from model_server.generation.continuous.loop import ContinuousScheduler, RowJob
from model_server.generation.faults import is_fatal_device_error
from model_server.generation.scheduler import BatchFailed


class FakeRows:
    """A row engine: payload (name, steps) finishes after `steps` steps as f"{key}:{name}".

    `poison` fails at its end (only its request must fail); more than `oom_above` active rows is
    an out-of-memory step, more than `prefill_oom_above` an out-of-memory prefill at admission, and
    `prefill_explode` makes the next admission's prefill raise. Records which rows each step ran.
    """

    def __init__(
        self, step_s: float = 0.002, oom_above: int | None = None, explode: bool = False, explode_with: str = ""
    ):
        self.rows: list[list[Any]] = []  # [job, steps left]
        self.steps: list[list[str]] = []
        self.admitted: list[str] = []
        self.step_s = step_s
        self.oom_above = oom_above
        self.explode = explode
        self.explode_with = explode_with or "CUDA error: simulated"
        self.started = threading.Event()
        self.prefill_oom_above: int | None = None
        self.prefill_explode = False

    @property
    def active(self) -> int:
        return len(self.rows)

    pending = 0  # no fine stage here: a row's outcome comes with the step that finishes it
    finishing: set[int] = set()

    def set_wake(self, wake: Any) -> None:
        self.wake = wake

    def collect(self) -> list[tuple[Any, Any]]:
        return []

    def fail_all(self) -> list[Any]:
        return self.evict_all()

    def close(self) -> None:
        self.closed = True

    def admit(self, jobs: Sequence[RowJob]) -> list[tuple[Any, BaseException]]:
        failed: list[tuple[Any, BaseException]] = []
        joining: list[list[Any]] = []
        for job in jobs:
            name, steps = job.payload
            if name == "unknown-voice":
                failed.append((job, ValueError("unknown voice")))
                continue
            if job.seed is None:
                job.seed = len(self.admitted)
            self.admitted.append(name)
            joining.append([job, steps])
        # The prefill of the joining rows, as the real engine runs it: they become rows only if it works.
        if self.prefill_explode:
            self.prefill_explode = False
            raise RuntimeError("simulated prefill failure")
        if self.prefill_oom_above is not None and len(self.rows) + len(joining) > self.prefill_oom_above:
            raise MemoryError("simulated out of memory in a prefill")
        self.rows.extend(joining)
        return failed

    def step(self) -> list[tuple[Any, Any]]:
        self.started.set()
        if self.explode:
            raise RuntimeError(self.explode_with)
        if self.oom_above is not None and len(self.rows) > self.oom_above:
            raise MemoryError("simulated out of memory")
        time.sleep(self.step_s)
        self.steps.append([row[0].payload[0] for row in self.rows])
        done: list[tuple[Any, Any]] = []
        for row in self.rows:
            row[1] -= 1
            if row[1] <= 0:
                job = row[0]
                name = job.payload[0]
                outcome = RuntimeError("poisoned row") if name == "poison" else f"{job.key}:{name}:{job.seed}"
                done.append((job, outcome))
        self.rows = [row for row in self.rows if row[1] > 0]
        return done

    def drop(self, jobs: Sequence[Any]) -> None:
        gone = {id(job) for job in jobs}
        self.rows = [row for row in self.rows if id(row[0]) not in gone]

    def evict_all(self) -> list[Any]:
        jobs = [row[0] for row in self.rows]
        self.rows = []
        return jobs


def make(rows: FakeRows, **overrides: Any) -> ContinuousScheduler:
    options = {"max_batch_size": 4, "max_queue_chunks": 16, **overrides}
    return ContinuousScheduler(rows, **options)


def names(results: list[str]) -> list[str]:
    return [result.split(":")[1] for result in results]


def test_any_keys_share_steps_and_each_request_gets_its_own_chunks_in_order():
    rows = FakeRows()

    async def scenario():
        scheduler = make(rows)
        results = await asyncio.gather(
            scheduler.submit("alice", [("a1", 3), ("a2", 5)]),
            scheduler.submit("bob", [("b1", 4)]),
        )
        await scheduler.close()
        return results

    first, second = asyncio.run(scenario())
    assert names(first) == ["a1", "a2"] and first[0].startswith("alice:")
    assert names(second) == ["b1"] and second[0].startswith("bob:")
    assert any({"a1", "b1"} <= set(step) for step in rows.steps), "different keys share a step"


def test_a_chunk_joins_running_rows_and_a_short_one_leaves_before_the_long_one():
    rows = FakeRows(step_s=0.005)

    async def scenario():
        scheduler = make(rows)
        long = asyncio.create_task(scheduler.submit("k", [("long", 60)]))
        await asyncio.to_thread(rows.started.wait, 5)
        await asyncio.sleep(0.05)
        short = await scheduler.submit("k", [("short", 3)])
        assert not long.done(), "the short request finished while the long one still runs"
        await long
        await scheduler.close()
        return short

    assert names(asyncio.run(scenario())) == ["short"]
    joined = next(index for index, step in enumerate(rows.steps) if "short" in step)
    assert joined > 0 and "long" in rows.steps[joined], "short joined the running step, not after it"


def test_active_rows_never_exceed_max_batch_size():
    rows = FakeRows()

    async def scenario():
        scheduler = make(rows, max_batch_size=3)
        await asyncio.gather(*(scheduler.submit("k", [(f"{i}-{j}", 2 + j) for j in range(3)]) for i in range(4)))
        await scheduler.close()

    asyncio.run(scenario())
    assert max(len(step) for step in rows.steps) == 3
    assert len(rows.admitted) == 12


def test_full_queue_is_overloaded_and_a_too_large_request_is_invalid():
    rows = FakeRows(step_s=0.01)

    async def scenario():
        scheduler = make(rows, max_batch_size=1, max_queue_chunks=3, retry_after_s=7)
        with pytest.raises(InvalidInput, match="more than the queue holds"):
            scheduler.enqueue("k", [("x", 1)] * 4)
        running = asyncio.create_task(scheduler.submit("k", [("r1", 20), ("r2", 1), ("r3", 1)]))
        await asyncio.to_thread(rows.started.wait, 5)
        assert scheduler.queued_chunks == 2
        with pytest.raises(Overloaded) as refused:
            scheduler.enqueue("k", [("a", 1), ("b", 1)])
        result = await running
        await scheduler.close()
        return refused.value, result

    error, result = asyncio.run(scenario())
    assert error.retry_after_s == 7
    assert names(result) == ["r1", "r2", "r3"]


def test_cancelling_drops_waiting_and_running_rows():
    rows = FakeRows(step_s=0.01)

    async def scenario():
        scheduler = make(rows, max_batch_size=2)
        doomed = asyncio.create_task(scheduler.submit("k", [("gone-running", 10_000), ("gone-1", 5), ("gone-2", 5)]))
        await asyncio.to_thread(rows.started.wait, 5)
        assert scheduler.queued_chunks == 1
        doomed.cancel()
        await asyncio.gather(doomed, return_exceptions=True)
        assert scheduler.queued_chunks == 0
        survivor = await scheduler.submit("k", [("next", 2)])
        active_after = rows.active
        await scheduler.close()
        return survivor, active_after

    survivor, active_after = asyncio.run(scenario())
    assert names(survivor) == ["next"]
    assert active_after == 0, "the cancelled running row left the engine"
    assert "gone-2" not in rows.admitted


def test_a_timeout_drops_the_request_rows():
    rows = FakeRows(step_s=0.01)

    async def scenario():
        scheduler = make(rows)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(scheduler.submit("k", [("slow", 10_000)]), 0.2)
        await asyncio.sleep(0.1)
        active = rows.active
        await scheduler.close()
        return active

    assert asyncio.run(scenario()) == 0


def test_urgent_first_chunk_is_admitted_before_waiting_chunks():
    rows = FakeRows(step_s=0.005)

    async def scenario():
        scheduler = make(rows, max_batch_size=1)
        blocker = asyncio.create_task(scheduler.submit("k", [("b1", 10)]))
        await asyncio.to_thread(rows.started.wait, 5)
        waiting = asyncio.create_task(scheduler.submit("k", [("w1", 1), ("w2", 1)]))
        await asyncio.sleep(0)
        streaming = asyncio.create_task(scheduler.submit("k", [("s1", 1), ("s2", 1)], urgent_first=True))
        await asyncio.gather(blocker, waiting, streaming)
        await scheduler.close()

    asyncio.run(scenario())
    assert rows.admitted == ["b1", "s1", "w1", "w2", "s2"]


def test_a_failing_row_fails_only_its_request_and_the_loop_keeps_serving():
    rows = FakeRows()

    async def scenario():
        scheduler = make(rows)
        bad, voice, good = await asyncio.gather(
            scheduler.submit("a", [("ok", 2), ("poison", 3)]),
            scheduler.submit("b", [("unknown-voice", 1)]),
            scheduler.submit("c", [("fine", 4)]),
            return_exceptions=True,
        )
        later = await scheduler.submit("a", [("after", 1)])
        await scheduler.close()
        return bad, voice, good, later

    bad, voice, good, later = asyncio.run(scenario())
    assert isinstance(bad, BatchFailed) and "poisoned row" in str(bad)
    assert isinstance(voice, BatchFailed) and "unknown voice" in str(voice)
    assert names(good) == ["fine"] and names(later) == ["after"]


def test_a_failing_step_fails_its_rows_and_the_loop_survives():
    rows = FakeRows(explode=True)

    async def scenario():
        scheduler = make(rows)
        with pytest.raises(BatchFailed, match="simulated"):
            await scheduler.submit("k", [("x", 2)])
        rows.explode = False
        later = await scheduler.submit("k", [("y", 1)])
        await scheduler.close()
        return later

    assert names(asyncio.run(scenario())) == ["y"]


def test_a_sticky_device_error_fails_everything_refuses_new_work_and_calls_for_a_restart():
    """An illegal address poisons the CUDA context: every later step would fail too. Everything held
    fails at once, new requests get 503 (another replica can serve them), and `on_fatal` is called
    once (the model turns not ready and the process exits, so Kubernetes restarts it)."""
    rows = FakeRows(step_s=0.01, explode_with="CUDA error: an illegal memory access was encountered")
    fatal: list[BaseException] = []

    async def scenario():
        scheduler = make(rows, max_batch_size=1, on_fatal=fatal.append)
        running = asyncio.create_task(scheduler.submit("k", [("first", 50)]))
        waiting = asyncio.create_task(scheduler.submit("k", [("second", 5)]))
        await asyncio.to_thread(rows.started.wait, 5)
        rows.explode = True
        outcomes = await asyncio.gather(running, waiting, return_exceptions=True)
        with pytest.raises(Unavailable) as refused:
            await scheduler.submit("k", [("later", 1)])
        await scheduler.close()
        return outcomes, refused.value

    outcomes, refused = asyncio.run(scenario())
    assert all(isinstance(outcome, BatchFailed) and "restarting" in str(outcome) for outcome in outcomes)
    assert refused.retry_after_s > 0
    assert len(fatal) == 1 and "illegal memory access" in str(fatal[0])


def test_an_ordinary_step_error_is_not_taken_for_a_sticky_one():
    assert is_fatal_device_error(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert is_fatal_device_error(RuntimeError("CUDA error: device-side assert triggered"))
    assert not is_fatal_device_error(RuntimeError("CUDA error: simulated"))
    assert not is_fatal_device_error(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert not is_fatal_device_error(ValueError("index out of range in self"))


def test_out_of_memory_shrinks_the_active_set_and_retries_with_the_same_seeds():
    rows = FakeRows(oom_above=2)

    async def scenario():
        scheduler = make(rows, max_batch_size=8)
        results = await scheduler.submit("k", [(f"c{i}", 3) for i in range(5)])
        await scheduler.close()
        return results

    results = asyncio.run(scenario())
    assert names(results) == [f"c{i}" for i in range(5)]
    assert max(len(step) for step in rows.steps) <= 2
    # Each chunk kept the seed of its first admission through the retries.
    assert [result.split(":")[2] for result in results] == ["0", "1", "2", "3", "4"]


def test_out_of_memory_in_an_admissions_prefill_requeues_the_chunks_it_was_admitting():
    rows = FakeRows()
    rows.prefill_oom_above = 2

    async def scenario():
        scheduler = make(rows, max_batch_size=8)
        results = await asyncio.wait_for(scheduler.submit("k", [(f"c{i}", 3) for i in range(5)]), timeout=10)
        await scheduler.close()
        return results

    results = asyncio.run(scenario())
    assert names(results) == [f"c{i}" for i in range(5)]
    assert max(len(step) for step in rows.steps) <= 2


def test_a_failing_prefill_fails_the_chunks_it_was_admitting_and_the_loop_survives():
    rows = FakeRows()
    rows.prefill_explode = True

    async def scenario():
        scheduler = make(rows)
        with pytest.raises(BatchFailed, match="simulated prefill failure"):
            await asyncio.wait_for(scheduler.submit("k", [("x", 2)]), timeout=10)
        later = await asyncio.wait_for(scheduler.submit("k", [("y", 1)]), timeout=10)
        await scheduler.close()
        return later

    assert names(asyncio.run(scenario())) == ["y"]


def test_a_chunk_that_failed_at_admission_keeps_its_own_error_when_the_step_then_fails():
    rows = FakeRows(explode=True)

    async def scenario():
        scheduler = make(rows)
        futures = scheduler.enqueue("k", [("unknown-voice", 1), ("x", 2)])
        outcomes = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), timeout=10)
        await scheduler.close()
        return outcomes

    own, stepped = asyncio.run(scenario())
    assert isinstance(own, BatchFailed) and "unknown voice" in str(own)
    assert isinstance(stepped, BatchFailed) and "simulated" in str(stepped)


def test_a_row_out_of_memory_alone_fails_its_request():
    rows = FakeRows(oom_above=0)

    async def scenario():
        scheduler = make(rows)
        with pytest.raises(BatchFailed, match="out of memory"):
            await scheduler.submit("k", [("big", 2)])
        await scheduler.close()

    asyncio.run(scenario())


def test_a_streaming_request_runs_its_first_chunk_before_its_other_chunks():
    rows = FakeRows(step_s=0.002)

    async def scenario():
        scheduler = make(rows, max_batch_size=8)
        result = await scheduler.submit("k", [("first", 5), ("second", 2), ("third", 2)], urgent_first=True)
        other = await scheduler.submit("k", [("plain-1", 3), ("plain-2", 3)])
        await scheduler.close()
        return result, other

    result, other = asyncio.run(scenario())
    assert names(result) == ["first", "second", "third"]
    assert names(other) == ["plain-1", "plain-2"]
    first_alone = [step for step in rows.steps if "first" in step]
    assert all(step == ["first"] for step in first_alone), "later chunks waited for the first one"
    assert any(step == ["plain-1", "plain-2"] for step in rows.steps), "a plain request runs its chunks together"


def test_where_steps_cost_the_same_a_streams_chunks_run_together_its_first_still_first():
    rows = FakeRows(step_s=0.002)

    async def scenario():
        scheduler = make(rows, max_batch_size=1, stream_rest_waits=False)
        blocker = asyncio.create_task(scheduler.submit("k", [("b1", 10)]))
        await asyncio.to_thread(rows.started.wait, 5)
        waiting = asyncio.create_task(scheduler.submit("k", [("w1", 1)]))
        await asyncio.sleep(0)
        stream = asyncio.create_task(scheduler.submit("k", [("first", 5), ("second", 2)], urgent_first=True))
        await asyncio.gather(blocker, waiting, stream)
        await scheduler.close()

    asyncio.run(scenario())
    assert rows.admitted[:2] == ["b1", "first"], "the stream's first chunk still goes ahead of waiting ones"

    rows = FakeRows(step_s=0.002)

    async def together():
        scheduler = make(rows, max_batch_size=8, stream_rest_waits=False)
        result = await scheduler.submit("k", [("first", 5), ("second", 2), ("third", 2)], urgent_first=True)
        await scheduler.close()
        return result

    assert names(asyncio.run(together())) == ["first", "second", "third"]
    assert rows.steps[0] == ["first", "second", "third"], "the later chunks did not wait for the first"


def test_a_short_request_behind_a_long_one_takes_the_next_free_row():
    rows = FakeRows(step_s=0.002)

    async def scenario():
        scheduler = make(rows, max_batch_size=2, max_queue_chunks=32)
        long = asyncio.create_task(scheduler.submit("k", [(f"long-{i}", 4) for i in range(8)]))
        await asyncio.to_thread(rows.started.wait, 5)
        short = await scheduler.submit("k", [("short", 2)])
        await long
        await scheduler.close()
        return short

    assert names(asyncio.run(scenario())) == ["short"]
    # The short request took one of the first rows to free up (first come, first served would have
    # put it behind all six waiting chunks of the long one).
    assert rows.admitted.index("short") < rows.admitted.index("long-3"), rows.admitted


def test_concurrent_long_requests_share_the_rows():
    rows = FakeRows(step_s=0.002)

    async def scenario():
        scheduler = make(rows, max_batch_size=4, max_queue_chunks=32)
        first = asyncio.create_task(scheduler.submit("a", [(f"a{i}", 3) for i in range(8)]))
        await asyncio.to_thread(rows.started.wait, 5)
        second = asyncio.create_task(scheduler.submit("b", [(f"b{i}", 3) for i in range(8)]))
        await asyncio.gather(first, second)
        await scheduler.close()

    asyncio.run(scenario())
    # Once the second request is waiting, the rows that free up go to it until both hold two.
    shared = [step for step in rows.steps if any(name.startswith("b") for name in step)]
    assert any(sum(name.startswith("a") for name in step) == 2 and len(step) == 4 for step in shared), shared


def test_the_instances_of_one_request_share_as_one_request():
    rows = FakeRows(step_s=0.002)

    async def scenario():
        scheduler = make(rows, max_batch_size=2, max_queue_chunks=32)
        first = scheduler.enqueue("k", [(f"a{i}", 3) for i in range(1, 4)], request="req-a")
        second = scheduler.enqueue("k", [(f"a{i}", 3) for i in range(4, 7)], request="req-a")
        await asyncio.to_thread(rows.started.wait, 5)
        other = await scheduler.submit("k", [("b1", 2)])
        await asyncio.gather(*first, *second)
        await scheduler.close()
        return other

    assert names(asyncio.run(scenario())) == ["b1"]
    # Seen as two requests, the second instance (none of its chunks running) would have gone first.
    assert rows.admitted.index("b1") < rows.admitted.index("a4"), rows.admitted


def test_one_scheduler_serves_requests_from_successive_event_loops():
    """Its worker thread outlives the event loop that started it (tests and benchmarks run several):
    each request's result goes back to the loop that waits for it, never to a closed one."""
    rows = FakeRows()
    scheduler = make(rows)

    async def one(name: str) -> list[str]:
        return await asyncio.wait_for(scheduler.submit("k", [(name, 2)]), timeout=10)

    first = asyncio.run(one("first"))
    second = asyncio.run(one("second"))
    asyncio.run(scheduler.close())
    assert names(first) == ["first"] and names(second) == ["second"]


class FinishingRows(FakeRows):
    """A row engine with a fine stage: a row done stepping waits in `finishing` until the next call."""

    def __init__(self) -> None:
        super().__init__(step_s=0.001)
        self.finishing: set[int] = set()
        self._later: list[tuple[Any, Any]] = []

    @property
    def pending(self) -> int:  # type: ignore[override]
        return len(self._later)

    def step(self) -> list[tuple[Any, Any]]:
        ready = self._take_ready()
        for job, outcome in super().step():
            self.finishing.add(id(job))
            self._later.append((job, outcome))
        if self._later:
            self.wake()  # as the finisher's thread does once its rows are ready
        return ready

    def collect(self) -> list[tuple[Any, Any]]:
        return self._take_ready()

    def _take_ready(self) -> list[tuple[Any, Any]]:
        ready, self._later = self._later, []
        for job, _ in ready:
            self.finishing.discard(id(job))
        return ready


def test_a_chunk_in_the_fine_stage_holds_no_row_for_fair_admission():
    """With one row, a request's next chunk takes the row its previous chunk freed, even while that
    chunk is still in the fine stage: only rows in the decoding stages count as the request's share.
    (Counting it, a request queued later took every other row: a short request ran twice as long.)"""
    rows = FinishingRows()

    async def scenario():
        scheduler = make(rows, max_batch_size=1)
        first = scheduler.submit("a", [("a1", 3), ("a2", 3), ("a3", 3)])
        second = scheduler.submit("b", [("b1", 3)])
        results = await asyncio.wait_for(asyncio.gather(first, second), timeout=30)
        await scheduler.close()
        return results

    first, second = asyncio.run(scenario())
    assert names(first) == ["a1", "a2", "a3"] and names(second) == ["b1"]
    assert rows.admitted == ["a1", "a2", "a3", "b1"], "a's chunks in the fine stage did not hand b the row"


class HeldFinishingRows(FinishingRows):
    """Rows done stepping stay in the fine stage until `release` is set; `most_rows`: the most rows
    the engine ever held at once."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.most_rows = 0

    def admit(self, jobs: Sequence[RowJob]) -> list[tuple[Any, BaseException]]:
        failed = super().admit(jobs)
        self.most_rows = max(self.most_rows, len(self.rows))
        return failed

    def _take_ready(self) -> list[tuple[Any, Any]]:
        return super()._take_ready() if self.release.is_set() else []


def test_a_cancelled_chunk_in_the_fine_stage_frees_no_row():
    """It held no row once it left the decoding stages: cancelling it must not let one more row in."""
    rows = HeldFinishingRows()

    async def scenario():
        scheduler = make(rows, max_batch_size=2)
        (short,) = scheduler.enqueue("k", [("short", 1)])
        longs = [*scheduler.enqueue("k", [("long-1", 400)]), *scheduler.enqueue("k", [("long-2", 400)])]
        while id(short) not in {id(job.future) for job in scheduler._running.values()} or not rows.finishing:
            await asyncio.sleep(0.001)
        waiting = scheduler.enqueue("k", [("waiting", 2)])
        scheduler.cancel([short])
        await asyncio.sleep(0.1)  # the loop looks at the cancelled chunk and the free rows meanwhile
        rows.release.set()
        await asyncio.wait_for(asyncio.gather(*longs, *waiting), timeout=30)
        await scheduler.close()

    asyncio.run(scenario())
    assert rows.most_rows <= 2
