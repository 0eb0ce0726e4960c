"""CLI: `python -m model_server` reads settings, loads Bark, and starts KServe's ModelServer.

With neither --model_id nor --model_dir (or with --demo) it serves a tiny random-weight checkpoint
built locally, so the server runs offline on a CPU (the audio is noise; the pipeline is real).
"""

from __future__ import annotations

import argparse
import difflib
import logging
import signal
from pathlib import Path
from types import FrameType

from fastapi import FastAPI
from kserve import ModelServer
from kserve import model_server as kserve_model_server

from bark_common.logs import configure_logging
from model_server.config import Settings
from model_server.http.auth import ApiKeyAuth
from model_server.http.body_limit import BodySizeLimit
from model_server.http.disconnect import CancelOnDisconnect
from model_server.http.errors import register_error_handlers
from model_server.http.openapi import document_api
from model_server.http.outcomes import CountOutcomes
from model_server.http.playground import register_playground
from model_server.http.routes import register_routes
from model_server.model import BarkTTS
from model_server.tiny import build_checkpoint

logger = logging.getLogger("model_server")


def build_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False: a flag is spelled in full, or it is an error (`--dev` is not `--device`).
    parser = argparse.ArgumentParser(
        prog="python -m model_server", parents=[kserve_model_server.parser], description=__doc__, allow_abbrev=False
    )
    parser.add_argument("--model_id", help="Hugging Face hub id, e.g. suno/bark-small")
    parser.add_argument("--model_dir", help="local checkpoint folder, e.g. /mnt/models")
    parser.add_argument("--demo", action="store_true", help="serve a tiny random-weight checkpoint")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--dtype", choices=["auto", "float32", "float16", "bfloat16"])
    parser.add_argument("--attention", choices=["auto", "flash_attention_2", "sdpa", "eager"])
    parser.add_argument("--max_batch_size", type=int)
    # gRPC (v2 tensors) is off since Bark speaks JSON. The model name has no command-line default
    # (KServe's is "model"): unless --model_name is given, BARK_MODEL_NAME or Settings' "bark" holds.
    parser.set_defaults(model_name=None, enable_grpc=False)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Every argument must be known: a mistyped flag stops the start, naming it (and the flag meant)."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:

        def spelling(flag: str) -> str:  # KServe mixes --event-loop and --http_port
            return flag.lstrip("-").replace("-", "_").lower()

        known = {spelling(option): option for action in parser._actions for option in action.option_strings}
        hints = []
        for flag in (item.split("=", 1)[0] for item in unknown if item.startswith("-")):
            close = difflib.get_close_matches(spelling(flag), list(known), n=1, cutoff=0.8)
            if close:
                hints.append(f"{flag}: did you mean {known[close[0]]}?")
        parser.error(f"unrecognized arguments: {' '.join(unknown)}" + "".join(f"\n  {hint}" for hint in hints))
    return args


def settings_from(args: argparse.Namespace) -> Settings:
    """Environment (BARK_*) first, then whatever the command line names explicitly."""
    overrides = {
        name: getattr(args, name)
        for name in ("model_id", "model_dir", "device", "dtype", "attention", "max_batch_size", "model_name")
        if getattr(args, name, None) is not None
    }
    settings = Settings(**overrides)
    if args.demo or (settings.model_id is None and settings.model_dir is None):
        settings = settings.model_copy(update={"demo": True})
    return settings


def ensure_demo_checkpoint(folder: Path) -> None:
    if not (folder / "config.json").exists():
        logger.info("building the tiny demo checkpoint in %s (random weights: the audio is noise)", folder)
        build_checkpoint(folder)


def drain_on_shutdown_signal(app: FastAPI, model: BarkTTS) -> None:
    """On SIGTERM/SIGINT, turn not-ready at once while in-flight requests finish.

    uvicorn (under KServe's ModelServer) already drains on a signal: it stops accepting connections,
    waits up to `grace_period` (our `shutdown_grace_s`) for running requests, then exits; KServe's
    own handler, which marks the model not ready, only runs after that drain. Ours runs first: it is
    chained in front of uvicorn's handler, which uvicorn installs when it starts serving, hence the
    startup hook. A request that still reaches the model (a kept-alive connection) gets a 503.
    """

    def chain_handlers() -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(signum)

            def handler(number: int, frame: FrameType | None, previous: object = previous) -> None:
                if model.ready:
                    logger.info("signal %d: not ready any more; draining in-flight requests", number)
                model.stop()
                if callable(previous):
                    previous(number, frame)

            signal.signal(signum, handler)

    app.router.on_startup.append(chain_handlers)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(build_parser(), argv)
    settings = settings_from(args)
    configure_logging(settings.log_format)
    if settings.demo:
        ensure_demo_checkpoint(settings.demo_dir)
    model = BarkTTS(settings)
    server = ModelServer(
        http_port=args.http_port,
        enable_grpc=args.enable_grpc,
        workers=1,
        grace_period=settings.shutdown_grace_s,
    )
    configure_logging(settings.log_format)  # ModelServer() re-configures logging; ours goes on top
    model.load()
    app = kserve_model_server.app
    register_error_handlers(app)
    app.add_middleware(CancelOnDisconnect)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)  # inside auth: a 401 comes first
    keys = model.service.callers.keys  # API keys and admin keys
    if keys:
        app.add_middleware(ApiKeyAuth, keys=keys, protect_metrics=settings.metrics_require_auth)
    app.add_middleware(CountOutcomes)  # outermost of ours: sees 401 and 413 too
    logger.info("API-key auth %s", f"on ({len(keys)} keys)" if keys else "off (no keys configured)")
    register_routes(app, model)
    register_playground(app, model)  # /playground, only with BARK_PLAYGROUND=true
    document_api(app, settings)
    drain_on_shutdown_signal(app, model)
    server.start([model])


if __name__ == "__main__":
    main()
