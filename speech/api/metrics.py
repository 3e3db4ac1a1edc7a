"""``GET /metrics``: the gateway's Prometheus metrics, in the text format.

Open on the listener by default, like ``/healthz``: operators scrape it from
inside their network, and it holds no secret (no key, key id, account id or
caller text is ever a label; see :mod:`speech.observability.metrics`).
``server.metrics = false`` removes the route (404); ``server.metrics_require_admin
= true`` asks for ``Authorization: Bearer <admin.token>`` (401 otherwise).
"""

from __future__ import annotations

import hmac

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from speech.api.gateway import Gateway
from speech.errors import AuthError


async def metrics(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    settings = gateway.settings
    if settings.server.metrics_require_admin:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        token = settings.admin.token.get().encode()
        if scheme.lower() != "bearer" or not token or not hmac.compare_digest(given.strip().encode(), token):
            raise AuthError("invalid admin credential")
    return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)
