"""The Starlette application: routes, error translation and start-up.

Every error leaves as the seed's ``{"error": "message"}`` JSON with the
status its :class:`~speech.errors.SpeechError` class names.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute

from speech.api import account, accounts, asr_ws, chat, metrics, openai_audio, tts_http, tts_ws
from speech.api.gateway import Gateway
from speech.api.redact import install_redaction
from speech.api.streams import StreamRegistry
from speech.console import console_routes
from speech.errors import SpeechError
from speech.metering.factory import open_ledger
from speech.metering.ledger import Ledger
from speech.metering.prices import PriceTable
from speech.observability.ledger import observed
from speech.observability.metrics import GatewayMetrics
from speech.providers.registry import Engines, check_routes, load_engines
from speech.settings import Settings

log = logging.getLogger("speech.app")


def create_app(
    settings: Settings,
    *,
    ledger: Ledger | None = None,
    engines: Engines | None = None,
    close_engines: bool = False,
) -> Starlette:
    """Build the app. A ``ledger`` or ``engines`` passed in are used as they
    are and not closed on shutdown unless ``close_engines`` (tests share
    them); otherwise they are opened from the settings during start-up."""
    check_routes(settings)
    prices = PriceTable.from_settings(settings.prices)
    prices.check_routes(settings.routes.asr, settings.routes.tts)
    chat_relay = chat.ChatRelay.from_settings(settings.llm, prices)
    # This app's own registry: several gateways in one process never collide.
    gateway_metrics = GatewayMetrics(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        install_redaction()
        own_ledger = ledger is None
        led = ledger if ledger is not None else await open_ledger(settings.server.db)
        gateway = Gateway(
            settings=settings,
            ledger=observed(led, gateway_metrics),  # every new usage record also counts in the metrics
            prices=prices,
            engines=engines,
            metrics=gateway_metrics,
        )
        gateway.streams = StreamRegistry(led, settings.limits, settings.server.replica_id)
        gateway.streams.start()
        app.state.gateway = gateway
        app.state.chat = chat_relay
        loader: asyncio.Task[None] | None = None
        if engines is None:
            loader = asyncio.create_task(_load(gateway))
        else:
            engines.health.observer = gateway_metrics
            gateway.ready.set()
        try:
            yield
        finally:
            await gateway.streams.stop()
            if gateway.engines is not None and gateway.engines.health.observer is gateway_metrics:
                gateway.engines.health.observer = None
            if engines is not None and close_engines:
                await engines.aclose()
            if loader is not None:
                loader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loader
                if gateway.engines is not None:
                    await gateway.engines.aclose()
            await chat_relay.aclose()  # settles streams still finishing, before the ledger closes
            if own_ledger:
                await led.close()

    routes = [
        Route("/healthz", health, methods=["GET"]),
        *([Route("/metrics", metrics.metrics, methods=["GET"])] if settings.server.metrics else []),
        Route("/api/core/account/balance", account.balance, methods=["GET"]),
        Route("/api/core/account/usage", account.usage, methods=["GET"]),
        Route("/api/core/account/usage/daily", account.usage_daily, methods=["GET"]),
        Route("/api/core/api_keys", accounts.list_keys, methods=["GET"]),
        Route("/api/core/api_keys/create", accounts.create_key, methods=["POST"]),
        Route("/api/core/api_keys/delete", accounts.delete_key, methods=["POST"]),
        Route("/api/admin/accounts", accounts.admin_list_accounts, methods=["GET"]),
        Route("/api/admin/accounts", accounts.admin_create_account, methods=["POST"]),
        Route("/api/admin/keys", accounts.admin_list_keys, methods=["GET"]),
        Route("/api/admin/accounts/{account_id}/top_up", accounts.admin_top_up, methods=["POST"]),
        Route("/api/admin/accounts/{account_id}/keys", accounts.admin_create_key, methods=["POST"]),
        Route("/api/admin/keys/{key_id}", accounts.admin_update_key, methods=["PATCH"]),
        Route("/api/admin/keys/{key_id}/revoke", accounts.admin_revoke_key, methods=["POST"]),
        Route("/api/admin/usage", accounts.admin_usage, methods=["GET"]),
        Route("/api/core/{provider}/tts", tts_http.tts, methods=["POST"]),
        Route("/api/core/{provider}/tts/stream", tts_http.tts_stream, methods=["POST"]),
        Route("/api/core/{provider}/chat/completions", chat.chat_completions, methods=["POST"]),
        Route("/v1/audio/transcriptions", openai_audio.transcriptions, methods=["POST"]),
        Route("/v1/audio/speech", openai_audio.speech, methods=["POST"]),
        WebSocketRoute("/api/core/{provider}/asr", asr_ws.asr_endpoint),
        WebSocketRoute("/api/core/{provider}/tts/stream-input", tts_ws.tts_ws_endpoint),
        WebSocketRoute("/", asr_ws.asr_endpoint),
        *console_routes(),
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            SpeechError: speech_error,
            HTTPException: http_error,
            Exception: internal_error,
        },
    )


async def _load(gateway: Gateway) -> None:
    try:
        engines = await asyncio.to_thread(load_engines, gateway.settings)
    except SpeechError as exc:
        gateway.load_error = exc.message
        log.error("engines failed to load: %s", exc.message)
        return
    except Exception as exc:  # a broken model file, a missing native library...
        gateway.load_error = f"{type(exc).__name__}: {exc}"
        log.exception("engines failed to load")
        return
    engines.health.observer = gateway.metrics
    gateway.engines = engines
    gateway.ready.set()
    for line in engines.describe():
        log.info("%s", line)
    log.info("ready")


async def health(request: Request) -> JSONResponse:
    gateway: Gateway = request.app.state.gateway
    if gateway.engines is None:
        detail = {"status": "loading" if gateway.load_error is None else "failed"}
        if gateway.load_error:
            detail["error"] = gateway.load_error
        return JSONResponse(detail, status_code=503)
    engines = gateway.engines
    return JSONResponse(
        {
            "status": "ok",
            "asr": {r: list(c) for r, c in gateway.settings.routes.asr.items()},
            "tts": {r: list(c) for r, c in gateway.settings.routes.tts.items()},
            "engines": {
                **{f"asr:{n}": e.description for n, e in engines.asr.items()},
                **{f"tts:{n}": e.description for n, e in engines.tts.items()},
            },
            # Engines that have failed: their state and any cool-down.
            "failover": engines.health.snapshot(),
        }
    )


async def speech_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SpeechError)
    return JSONResponse(exc.to_json(), status_code=exc.status, headers=exc.headers or None)


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    messages = {404: f"not found: {request.url.path}", 405: f"method {request.method} not allowed here"}
    return JSONResponse(
        {"error": messages.get(exc.status_code, exc.detail)},
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse({"error": "internal server error"}, status_code=500)


__all__ = ["create_app", "Settings"]
