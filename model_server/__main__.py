"""CLI: `python -m model_server` reads settings, loads Bark, and starts KServe's ModelServer.

With neither --model_id nor --model_dir (or with --demo) it serves a tiny random-weight checkpoint
built locally, so the server runs offline on a CPU (the audio is noise; the pipeline is real).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from kserve import ModelServer
from kserve import model_server as kserve_model_server

from .auth import ApiKeyAuth, load_api_keys
from .config import Settings
from .disconnect import CancelOnDisconnect
from .errors import register_error_handlers
from .logs import configure_logging
from .model import BarkTTS
from .routes import register_routes
from .tiny import build_checkpoint

logger = logging.getLogger("model_server")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m model_server", parents=[kserve_model_server.parser], description=__doc__
    )
    parser.add_argument("--model_id", help="Hugging Face hub id, e.g. suno/bark-small")
    parser.add_argument("--model_dir", help="local checkpoint folder, e.g. /mnt/models")
    parser.add_argument("--demo", action="store_true", help="serve a tiny random-weight checkpoint")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--dtype", choices=["auto", "float32", "float16", "bfloat16"])
    parser.add_argument("--attention", choices=["auto", "flash_attention_2", "sdpa", "eager"])
    parser.add_argument("--max_batch_size", type=int)
    # Our defaults: the model is "bark", and gRPC (v2 tensors) is off since Bark speaks JSON.
    parser.set_defaults(model_name="bark", enable_grpc=False)
    return parser


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


def main(argv: list[str] | None = None) -> None:
    args, _ = build_parser().parse_known_args(argv)
    settings = settings_from(args)
    configure_logging(settings.log_format)
    if settings.demo:
        ensure_demo_checkpoint(settings.demo_dir)
    model = BarkTTS(settings)
    server = ModelServer(
        http_port=args.http_port,
        enable_grpc=args.enable_grpc,
        workers=1,
        grace_period=args.grace_period if hasattr(args, "grace_period") else 30,
    )
    configure_logging(settings.log_format)  # ModelServer() re-configures logging; ours goes on top
    model.load()
    app = kserve_model_server.app
    register_error_handlers(app)
    app.add_middleware(CancelOnDisconnect)
    keys = load_api_keys(settings.api_keys, settings.api_keys_file)
    if keys:
        app.add_middleware(ApiKeyAuth, keys=keys, protect_metrics=settings.metrics_require_auth)
    logger.info("API-key auth %s", f"on ({len(keys)} keys)" if keys else "off (no keys configured)")
    register_routes(app, model)
    server.start([model])


if __name__ == "__main__":
    main()
