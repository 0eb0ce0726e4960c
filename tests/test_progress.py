"""The progress board: chunks done per request id, finished requests kept for a while, bounded."""

from __future__ import annotations

import asyncio

from model_server.progress import MAX_ID_CHARS, ProgressBoard


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(scenario):  # type: ignore[no-untyped-def]
    return asyncio.run(scenario())


def test_chunks_count_as_they_settle_and_failures_are_not_done() -> None:
    async def scenario() -> list[dict]:
        board = ProgressBoard(clock=Clock())
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(3)]
        board.track("r1", futures)
        seen = [board.get("r1").describe()]  # type: ignore[union-attr]
        futures[0].set_result("audio")
        await asyncio.sleep(0)  # done callbacks run on the loop
        seen.append(board.get("r1").describe())  # type: ignore[union-attr]
        futures[1].set_exception(RuntimeError("boom"))
        futures[2].cancel()
        await asyncio.sleep(0)
        seen.append(board.get("r1").describe())  # type: ignore[union-attr]
        futures[1].exception()  # retrieved: no "never retrieved" warning
        return seen

    before, one, settled = run(scenario)
    assert (before["chunks_done"], before["chunks_total"], before["finished"]) == (0, 3, False)
    assert (one["chunks_done"], one["finished"]) == (1, False)
    assert (settled["chunks_done"], settled["chunks_total"], settled["finished"]) == (1, 3, True)


def test_instances_of_one_request_add_up() -> None:
    async def scenario() -> dict:
        board = ProgressBoard()
        loop = asyncio.get_running_loop()
        first, second = [loop.create_future()], [loop.create_future(), loop.create_future()]
        board.track("r", first)
        board.track("r", second)
        for future in first + second[:1]:
            future.set_result(None)
        await asyncio.sleep(0)
        return board.get("r").describe()  # type: ignore[union-attr]

    progress = run(scenario)
    assert (progress["chunks_done"], progress["chunks_total"], progress["finished"]) == (2, 3, False)


def test_finished_requests_expire_and_a_reused_id_starts_afresh() -> None:
    async def scenario() -> tuple[object, object, dict, object]:
        clock = Clock()
        board = ProgressBoard(retention_s=60, clock=clock)
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        board.track("job-1", [done])
        done.set_result(None)
        await asyncio.sleep(0)
        clock.now += 30
        kept = board.get("job-1")
        # The same id again (a job run a second time): a new count, not 1 of 1 already.
        again = [loop.create_future(), loop.create_future()]
        board.track("job-1", again)
        restarted = board.get("job-1").describe()  # type: ignore[union-attr]
        clock.now += 61  # the first run's expiry must not drop the second, still running
        still_there = board.get("job-1")
        for future in again:
            future.set_result(None)
        await asyncio.sleep(0)
        clock.now += 61
        return kept, still_there, restarted, board.get("job-1")

    kept, still_there, restarted, expired = run(scenario)
    assert kept is not None
    assert (restarted["chunks_done"], restarted["chunks_total"], restarted["finished"]) == (0, 2, False)
    assert still_there is not None
    assert expired is None


def test_the_board_is_bounded_oldest_first() -> None:
    async def scenario() -> ProgressBoard:
        board = ProgressBoard(max_requests=3)
        loop = asyncio.get_running_loop()
        for index in range(5):
            board.track(f"r{index}", [loop.create_future()])
        return board

    board = run(scenario)
    assert len(board) == 3
    assert board.get("r0") is None and board.get("r1") is None
    assert board.get("r4") is not None


def test_ids_too_long_to_keep_are_not_tracked() -> None:
    async def scenario() -> tuple[object, object, int]:
        board = ProgressBoard()
        loop = asyncio.get_running_loop()
        long_id = "x" * (MAX_ID_CHARS + 1)
        return board.track(long_id, [loop.create_future()]), board.get(long_id), len(board)

    tracked, found, size = run(scenario)
    assert (tracked, found, size) == (None, None, 0)
