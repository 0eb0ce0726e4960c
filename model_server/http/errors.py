"""The KServe v1 routes' answers for the error types KServe does not know (`register_error_handlers`)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from model_server.errors import GenerationFailed, Overloaded, RequestTimedOut

__all__ = ["register_error_handlers"]


async def _timeout_handler(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(status_code=504, content={"error": str(exc)})


async def _overloaded_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Overloaded)
    return JSONResponse(status_code=503, content={"error": str(exc)}, headers={"Retry-After": str(exc.retry_after_s)})


async def _generation_failed_handler(_: Request, exc: Exception) -> JSONResponse:
    # KServe's catch-all answers 500 too, but without the id that ties the answer to the log.
    assert isinstance(exc, GenerationFailed)
    return JSONResponse(
        status_code=500,
        content={"error": str(exc), "request_id": exc.request_id},
        headers={"x-request-id": exc.request_id},
    )


def register_error_handlers(app: FastAPI) -> None:
    """KServe maps InvalidInput to 400 itself; we add the statuses it does not know."""
    app.add_exception_handler(Overloaded, _overloaded_handler)
    app.add_exception_handler(RequestTimedOut, _timeout_handler)
    app.add_exception_handler(GenerationFailed, _generation_failed_handler)
