"""The web console: a page at ``/console/`` to try the gateway from a browser.

Plain static files (HTML, CSS and ES modules, no build step) from
``static/``, served by Starlette's :class:`StaticFiles`. The page talks to
the public API like any client: the ASR websocket with ``?events=true``, the
TTS endpoint, the account and admin endpoints. Keys live only in the
browser's ``sessionStorage``; nothing about them reaches the server except
the requests themselves.

Every file goes out with a Content-Security-Policy that allows nothing but
this origin (scripts, styles, fetches, websockets) and ``blob:`` audio, so
the page cannot load anything from elsewhere nor run inline script.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC = Path(__file__).resolve().parent / "static"

HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; media-src 'self' blob:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "cache-control": "no-cache",
}


class ConsoleFiles(StaticFiles):
    """StaticFiles with the console's security headers on every answer."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(HEADERS)
        return response


async def to_console(request: Request) -> RedirectResponse:
    return RedirectResponse("/console/", status_code=307)


def console_routes() -> list[BaseRoute]:
    """``/console/`` (index.html and its files); ``/console`` and a browser's
    ``GET /`` redirect there (the websocket on ``/`` is unaffected)."""
    return [
        Route("/console", to_console, methods=["GET", "HEAD"]),
        Route("/", to_console, methods=["GET", "HEAD"]),
        Mount("/console", app=ConsoleFiles(directory=STATIC, html=True), name="console"),
    ]
