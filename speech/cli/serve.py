"""``speech serve``: run the gateway under uvicorn."""

from __future__ import annotations

import logging

import uvicorn

from speech.api.app import create_app
from speech.metering import redact_target
from speech.settings import Settings


def uvicorn_config(settings: Settings, **extra: object) -> uvicorn.Config:
    """The uvicorn settings the gateway needs (also used by the tests)."""
    return uvicorn.Config(
        create_app(settings),
        host=settings.server.host,
        port=settings.server.port,
        ws="websockets-sansio",
        ws_max_size=settings.server.ws_max_size,
        log_level=settings.server.log_level,
        lifespan="on",
        **extra,  # type: ignore[arg-type]
    )


def serve(settings: Settings) -> int:
    level = settings.server.log_level.upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # faster-whisper logs every decode at INFO; our own per-session line says more.
    logging.getLogger("faster_whisper").setLevel(max(logging.WARNING, logging.getLogger().level))
    # httpx logs every upstream request at INFO; failures are logged by the adapters.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))
    logging.getLogger("speech").info(
        "speech gateway starting on http://%s:%d (ledger %s); loading engines...",
        settings.server.host,
        settings.server.port,
        redact_target(settings.server.db),
    )
    server = uvicorn.Server(uvicorn_config(settings))
    server.run()
    return 0
