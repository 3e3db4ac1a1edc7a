"""``speech serve``: run the gateway under uvicorn."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import uvicorn
from starlette.applications import Starlette

from speech.api.app import create_app
from speech.metering.dsn import redact_target
from speech.settings import Settings, load_settings

# Not SPEECH_*: those are settings, and an unknown one is refused.
WORKER_ARGS = "_SPEECH_SERVE_WORKER_ARGS"


def _options(settings: Settings) -> dict[str, Any]:
    return {
        "host": settings.server.host,
        "port": settings.server.port,
        "ws": "websockets-sansio",
        "ws_max_size": settings.server.ws_max_size,
        "log_level": settings.server.log_level,
        "lifespan": "on",
    }


def uvicorn_config(settings: Settings, **extra: Any) -> uvicorn.Config:
    """The uvicorn settings the gateway needs (also used by the tests)."""
    return uvicorn.Config(create_app(settings), **{**_options(settings), **extra})


def _logging(settings: Settings) -> None:
    level = settings.server.log_level.upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # faster-whisper logs every decode at INFO; our own per-session line says more.
    logging.getLogger("faster_whisper").setLevel(max(logging.WARNING, logging.getLogger().level))
    # httpx logs every upstream request at INFO; failures are logged by the adapters.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))


def serve(settings: Settings, config_file: str | None = None, overrides: dict[str, Any] | None = None) -> int:
    _logging(settings)
    workers = settings.server.workers
    logging.getLogger("speech").info(
        "speech gateway starting on http://%s:%d (ledger %s, %d worker%s); loading engines...",
        settings.server.host,
        settings.server.port,
        redact_target(settings.server.db),
        workers,
        "" if workers == 1 else "s",
    )
    if workers == 1:
        uvicorn.Server(uvicorn_config(settings)).run()
        return 0
    # uvicorn's supervisor binds the socket once and starts the workers, which
    # each build the app from the same configuration (the file and the
    # command-line overrides travel in the environment; the rest is read
    # again from it) and restarts any that dies.
    os.environ[WORKER_ARGS] = json.dumps({"config": config_file, "overrides": overrides or {}})
    uvicorn.run("speech.cli.serve:worker_app", factory=True, workers=workers, **_options(settings))
    return 0


def worker_app() -> Starlette:
    """The app of one worker process (``server.workers`` > 1)."""
    args = json.loads(os.environ.get(WORKER_ARGS, "{}"))
    settings = load_settings(args.get("config"), overrides=args.get("overrides") or {})
    if settings.server.replica_id:  # one replica id per worker process
        settings = settings.replace("server", replica_id=f"{settings.server.replica_id}:{os.getpid()}")
    _logging(settings)
    return create_app(settings)
