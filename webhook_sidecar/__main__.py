"""`python -m webhook_sidecar`: serve the job API with uvicorn on `SIDECAR_PORT` (9081).

SIGTERM drains instead of stopping at once: readiness turns 503 and intake answers 503 (so the
Service stops routing here and callers retry elsewhere) while HTTP keeps serving `GET /jobs`; running
jobs get `GRACE_PERIOD_S` to finish and be delivered, then whatever is left goes back to the store: at
once to the other replicas with a shared store, to the next start with SQLite. A second SIGTERM, or
SIGINT, stops at once (the store still hands work back).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from types import FrameType

import uvicorn

from bark_common.logs import configure_logging

from .api import create_app
from .config import Settings
from .service import JobService

logger = logging.getLogger("webhook_sidecar")


class DrainingServer(uvicorn.Server):
    """uvicorn, with SIGTERM starting a drain of the job service before the server exits."""

    def __init__(self, config: uvicorn.Config, service: JobService) -> None:
        super().__init__(config)
        self.service = service
        self._drain_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list | None = None) -> None:  # type: ignore[type-arg]
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not appending to _captured_signals: uvicorn would re-raise SIGTERM at exit, and a drained
        # sidecar should exit 0.
        if sig == signal.SIGTERM and self._drain_task is None and self._loop is not None:
            logger.info("SIGTERM: draining for up to %.0f s", self.service.settings.grace_period_s)
            self._loop.call_soon_threadsafe(self._start_drain)
            return
        self.should_exit = True

    def _start_drain(self) -> None:
        self._drain_task = asyncio.ensure_future(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        try:
            await self.service.drain(self.service.settings.grace_period_s)
        finally:
            self.should_exit = True


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_format)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    server = DrainingServer(config, app.state.service)
    server.run()


if __name__ == "__main__":
    main()
