"""Chunks whose tokens are wanted back: `continuity: "previous"` and `save_voice`.

With `continuity: "previous"` a voice is held across a long text the way Bark's long-form notes do
it: each chunk's history prompt is the previous chunk's generated tokens (cut to what Bark reads of a
prompt), not the voice preset again. So a chunk can only start when the one before it in the same
voice has finished: each voice of the request is a chain, its first chunk queued at once with the
voice's own prompt (a random speaker's first chunk with none), every later one queued by the chain
when its predecessor's tokens are in. Chains of different voices (a dialogue's speakers) run side
by side, and other requests' rows fill the batch meanwhile. A later chunk takes its predecessor's
place in the queue (`continuing`): it is never refused for a full queue mid-request.

With `save_voice`, the request's first chunk brings its tokens back too, and they are stored as the
caller's voice (`on_first`) before that chunk's audio is handed on: if storing fails (the name was
taken meanwhile, the store unreachable), the request fails with that error.

The caller waits on `outer` futures, one per chunk in order, exactly as on the scheduler's own: the
waveform of each chunk. Cancelling them (client gone, timeout) cancels the scheduler's futures of
the chunks queued or running and stops the chains.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from bark_common.errors import InvalidInput
from model_server.generation.engine import Sampling
from model_server.generation.scheduler import ChunkScheduler
from model_server.generation.speaker_prompt import KeptChunk, PromptLimits, SpeakerPrompt
from model_server.generation.voices import TOKENS_KEY

#: Stores the first chunk's tokens as a voice (raises to fail the request).
OnFirst = Callable[[KeptChunk], Awaitable[None]]


@dataclass(frozen=True)
class Link:
    """One chunk: its payload (a `synthesis.ChunkPayload`), its voice's batch key and chain."""

    payload: Any
    key: str | None
    chain: Hashable


class ChunkChains:
    """One request's chunks, each voice's queued one after another, with its predecessor's tokens."""

    def __init__(
        self,
        scheduler: ChunkScheduler[Any, Any],
        sampling: Sampling,
        request: Hashable,
        limits: PromptLimits,
        *,
        on_first: OnFirst | None = None,
        urgent_first: bool = False,
    ):
        self.scheduler = scheduler
        self.sampling = sampling
        self.request = request
        self.limits = limits
        self.on_first = on_first
        self.urgent_first = urgent_first
        self.outer: list[asyncio.Future[Any]] = []
        self._inner: dict[int, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, links: Sequence[Link]) -> list[asyncio.Future[Any]]:
        """Queue each chain's first chunk now; returns one future per chunk, in order (raises, with
        nothing left queued, if the queue refuses)."""
        loop = asyncio.get_running_loop()
        self.outer = [loop.create_future() for _ in links]
        for outer in self.outer:
            outer.add_done_callback(self._cancel_inner_if_cancelled)
        chains: dict[Hashable, list[int]] = {}
        for index, link in enumerate(links):
            chains.setdefault(link.chain, []).append(index)
        try:
            started = [
                (indices, self._queue(links[indices[0]], urgent=self.urgent_first and not number, continuing=False))
                for number, indices in enumerate(chains.values())
            ]
        except BaseException:
            self.cancel()
            raise
        for indices, inner in started:
            self._spawn(self._run(links, indices, inner))
        return self.outer

    def _queue(self, link: Link, *, urgent: bool, continuing: bool) -> asyncio.Future[Any]:
        payload = replace(link.payload, keep_tokens=True)
        (future,) = self.scheduler.enqueue(
            (link.key, self.sampling), [payload], urgent_first=urgent, request=self.request, continuing=continuing
        )
        return future

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, links: Sequence[Link], indices: list[int], inner: asyncio.Future[Any]) -> None:
        """One chain: hand each chunk's audio on, and queue the next with its predecessor's tokens
        (a chunk that made no speech passes its own history on)."""
        key, history = links[indices[0]].key, links[indices[0]].payload.history
        for position, index in enumerate(indices):
            self._inner[index] = inner
            if self.outer[index].done():  # cancelled before its chunk was queued: the request is over
                self.scheduler.cancel([inner])
                return
            try:
                waveform, tokens = await _outcome(inner, self.on_first if index == 0 else None)
            except BaseException as error:
                self._fail(indices[position:], error)
                return
            if not self.outer[index].done():
                self.outer[index].set_result(waveform)
            if position + 1 == len(indices):
                return
            if tokens is not None:
                history = tokens.cut(self.limits)
                key = TOKENS_KEY + history.digest
            following = links[indices[position + 1]]
            try:
                link = Link(replace(following.payload, history=history), key, following.chain)
                inner = self._queue(link, urgent=False, continuing=True)
            except BaseException as error:
                self._fail(indices[position + 1 :], error)
                return

    def _fail(self, indices: list[int], error: BaseException) -> None:
        """The chunk at `indices[0]` failed: its future says why; the chain's later ones are cancelled."""
        first, *rest = indices
        _settle_failed(self.outer[first], error)
        for index in rest:
            self.outer[index].cancel()

    def _cancel_inner_if_cancelled(self, outer: asyncio.Future[Any]) -> None:
        if outer.cancelled():
            inner = self._inner.get(self.outer.index(outer))
            if inner is not None and not inner.done():
                self.scheduler.cancel([inner])

    def cancel(self) -> None:
        for outer in self.outer:
            if not outer.done():
                outer.cancel()
        for inner in self._inner.values():
            if not inner.done():
                self.scheduler.cancel([inner])


async def _outcome(inner: asyncio.Future[Any], on_first: OnFirst | None) -> tuple[Any, SpeakerPrompt | None]:
    """A chunk's (waveform, tokens); with `on_first` (save_voice), its tokens kept as a voice first."""
    waveform, tokens = _split(await inner)
    if on_first is not None:
        await on_first(_kept(waveform, tokens))
    return waveform, tokens


def _settle_failed(outer: asyncio.Future[Any], error: BaseException) -> None:
    """A chunk's future says why it failed (cancelled stays cancelled), unless it is settled already."""
    if outer.done():
        return
    if isinstance(error, asyncio.CancelledError):
        outer.cancel()
    else:
        outer.set_exception(error)


def _split(result: Any) -> tuple[Any, SpeakerPrompt | None]:
    """(waveform, tokens) of a chunk's outcome: a KeptChunk, or a bare waveform (no speech made)."""
    if isinstance(result, KeptChunk):
        return result.waveform, result.prompt
    return result, None


def _kept(waveform: Any, tokens: SpeakerPrompt | None) -> KeptChunk:
    if tokens is None:
        raise InvalidInput(
            "save_voice: the first chunk made no speech, so there is no voice to keep; start with a longer sentence",
            param="save_voice",
        )
    return KeptChunk(waveform, tokens)


def relay_first(
    scheduler: ChunkScheduler[Any, Any], inner: asyncio.Future[Any], on_first: OnFirst
) -> asyncio.Future[Any]:
    """`save_voice` without continuity: the first chunk's future, its tokens stored as a voice before
    its audio is handed on (the other chunks were queued as usual)."""
    outer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def cancel_inner(done: asyncio.Future[Any]) -> None:
        if done.cancelled() and not inner.done():
            scheduler.cancel([inner])

    async def run() -> None:
        try:
            waveform, _ = await _outcome(inner, on_first)
        except BaseException as error:
            _settle_failed(outer, error)
            return
        if not outer.done():
            outer.set_result(waveform)

    outer.add_done_callback(cancel_inner)
    task = asyncio.ensure_future(run())
    _RELAYS.add(task)
    task.add_done_callback(_RELAYS.discard)
    return outer


#: Relay tasks running (asyncio keeps only weak references to tasks).
_RELAYS: set[asyncio.Task[None]] = set()
