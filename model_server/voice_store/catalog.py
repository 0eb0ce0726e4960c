"""One replica's view of the voice store: every voice's record in memory, prompts cached, kept fresh.

Requests never wait for the store to find a voice: the index (owner, name) -> record lives in
memory and a watcher thread replaces it whenever the store's version moves (PostgreSQL notifies at
once; a directory is polled every `poll_s`), so a voice added or deleted on any replica is seen here
within a second. A voice's tokens are read from the store at its first use and kept (least recently
used first out, `cache_size` of them); the model's device keeps its own copy (generation/voices.py).

When the store cannot be reached the replica is degraded, not down: it keeps serving presets and
every voice it has cached, `bark_voice_store_up` is 0 and the log says so once; adding or deleting a
voice, or using one not cached, answers 503 with Retry-After. The watcher retries with backoff and
reloads everything when the store answers again.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
from collections.abc import Iterator

from bark_common.errors import Unavailable
from model_server import metrics
from model_server.generation.speaker_prompt import PromptLimits, SpeakerPrompt, read_npz
from model_server.voice_store.records import StoreUnavailable, VoiceRecord, VoiceStore

logger = logging.getLogger(__name__)

RETRY_AFTER_S = 5
#: Pauses between tries while the store is unreachable: doubling from the first to the longest.
MIN_BACKOFF_S = 0.25
MAX_BACKOFF_S = 5.0


class VoiceCatalog:
    """The voice store as one replica sees it; thread-safe."""

    def __init__(self, store: VoiceStore, limits: PromptLimits, poll_s: float = 0.25, cache_size: int = 64):
        self.store = store
        self.limits = limits
        self.poll_s = poll_s
        self.cache_size = cache_size
        self._lock = threading.Lock()
        self._index: dict[tuple[str, str], VoiceRecord] = {}
        self._published: dict[str, VoiceRecord] = {}  # by name: the oldest published voice of that name
        self._prompts: collections.OrderedDict[str, SpeakerPrompt] = collections.OrderedDict()
        self._secret: bytes | None = None
        self._version: str | None = None
        self.up = False
        self._was_down = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Load the index now if the store answers (else start degraded), then watch it."""
        try:
            self.reload()
        except StoreUnavailable as error:
            self._down("connect", error)
        logger.info(
            "voice store: %s %s (%s, %d custom voices)",
            self.store.kind,
            self.store.describe(),
            "up" if self.up else "unreachable: presets and cached voices only",
            len(self._index),
        )
        self._thread = threading.Thread(target=self._watch, name="bark-voice-store", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self.store.wake()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.store.close()

    def reload(self) -> None:
        """Read the store's version and every record; replace the index (raises StoreUnavailable)."""
        if self._secret is None:
            self._secret = self.store.owner_secret()
        version = self.store.version()
        records = self.store.records()
        with self._lock:
            self._index = {(record.owner, record.name): record for record in records}
            self._published = {}
            for record in sorted(records, key=lambda record: record.created_at):
                if record.published:
                    self._published.setdefault(record.name, record)
            self._version = version
        metrics.CUSTOM_VOICES.set(len(records))
        self._up()

    def _watch(self) -> None:
        backoff = MIN_BACKOFF_S
        while not self._stop.is_set():
            try:
                if self.up:  # wait for a change (or the poll), then look
                    self.store.wait_for_change(self.poll_s)
                    if self._stop.is_set():
                        return
                    if self.store.version() != self._version:
                        self.reload()
                else:  # degraded: try again after the backoff, not after a change nobody announces
                    self.reload()
                backoff = MIN_BACKOFF_S
            except StoreUnavailable as error:
                self._down("watch", error)
                self._stop.wait(backoff)
                backoff = min(MAX_BACKOFF_S, backoff * 2)
            except Exception:  # the watcher must outlive anything a store raises
                logger.exception("voice store watcher failed; retrying")
                self._stop.wait(MAX_BACKOFF_S)

    def _up(self) -> None:
        if self._was_down:
            logger.info("voice store %s reachable again", self.store.describe())
        self.up, self._was_down = True, False
        metrics.VOICE_STORE_UP.set(1)

    def _down(self, operation: str, error: BaseException) -> None:
        metrics.VOICE_STORE_ERRORS.labels(operation=operation).inc()
        metrics.VOICE_STORE_UP.set(0)
        if not self._was_down:  # logged once per outage
            logger.warning(
                "voice store %s unreachable (%s): serving presets and cached voices only", self.store.describe(), error
            )
        self.up, self._was_down = False, True

    @contextlib.contextmanager
    def _operation(self, operation: str) -> Iterator[None]:
        """A store call on a request's behalf: unreachable is a 503 (and counted, and the replica degraded)."""
        try:
            yield
        except StoreUnavailable as error:
            self._down(operation, error)
            raise Unavailable(
                f"the voice store is unreachable ({self.store.kind}); presets and cached voices still work",
                retry_after_s=RETRY_AFTER_S,
            ) from error

    # -- reading ---------------------------------------------------------------------------------
    def owner_secret(self) -> bytes:
        """The key of owner hashes, read once by `reload()` (at start, else by the watcher as soon as the
        store answers): a request never waits on the store for it. Unavailable until then."""
        if self._secret is None:
            raise Unavailable(
                f"the voice store has not been reached yet ({self.store.kind}); presets still work",
                retry_after_s=RETRY_AFTER_S,
            )
        return self._secret

    def get(self, owner: str, name: str) -> VoiceRecord | None:
        with self._lock:
            return self._index.get((owner, name))

    def published(self, name: str) -> VoiceRecord | None:
        """The published voice of that name (the oldest, should two owners have published one)."""
        with self._lock:
            return self._published.get(name)

    def records(self) -> list[VoiceRecord]:
        with self._lock:
            return sorted(self._index.values(), key=lambda record: (record.name, record.owner))

    def count(self, owner: str) -> int:
        with self._lock:
            return sum(1 for key in self._index if key[0] == owner)

    def prompt(self, record: VoiceRecord) -> SpeakerPrompt:
        """The voice's tokens: from memory, else read from the store (503 if it cannot be)."""
        with self._lock:
            cached = self._prompts.get(record.digest)
            if cached is not None:
                self._prompts.move_to_end(record.digest)
        metrics.VOICE_CACHE.labels(cache="host", result="hit" if cached is not None else "miss").inc()
        if cached is not None:
            return cached
        with self._operation("read"):
            data = self.store.read(record.owner, record.name)
        if data is None:  # deleted since the index was read
            raise LookupError(record.name)
        prompt = read_npz(data, self.limits, len(data), f"voice {record.name!r}")
        self._remember(prompt)
        return prompt

    def npz(self, record: VoiceRecord) -> bytes:
        return self.prompt(record).to_npz()

    def _remember(self, prompt: SpeakerPrompt) -> None:
        with self._lock:
            self._prompts[prompt.digest] = prompt
            self._prompts.move_to_end(prompt.digest)
            while len(self._prompts) > self.cache_size:
                self._prompts.popitem(last=False)

    # -- writing (each write reloads the index, so this replica sees it at once) ------------------
    def add(self, record: VoiceRecord, prompt: SpeakerPrompt) -> bool:
        with self._operation("write"):
            added = self.store.add(record, prompt.to_npz())
            if added:
                self._remember(prompt)
            self.reload()
        return added

    def delete(self, owner: str, name: str) -> bool:
        with self._operation("write"):
            deleted = self.store.delete(owner, name)
            self.reload()
        return deleted

    def set_published(self, owner: str, name: str, published: bool) -> bool:
        with self._operation("write"):
            changed = self.store.set_published(owner, name, published)
            self.reload()
        return changed
