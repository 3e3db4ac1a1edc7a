"""Upstream failures of the chat relay, as :mod:`speech.errors`.

Every message names the provider and never contains a key: the upstream's
own message is cleaned of control characters, of the key the gateway sent
(replaced by ``***``) and of anything shaped like a gateway key, and cut to
300 characters. Errors are classified by HTTP status, never by message text.

===============================  ======  =======================================
upstream                         client  message
===============================  ======  =======================================
connect refused / DNS / reset,   503     ``Failed to connect to P server`` (after
connect or pool timeout                  the one retry)
dropped before answering         502     ``P closed the connection before
                                         answering``
silent for read_timeout_s        504     ``P did not answer within N s``
429                              429     ``P rate limit: ...``, ``Retry-After``
                                         passed on
401, 403                         503     ``P rejected the gateway's
                                         credentials`` (not the caller's key:
                                         their gateway key was fine)
402                              503     ``P refused the gateway's account
                                         (payment required): ...``
408                              504     ``P timed out: ...``
other 4xx                        same    ``P rejected the request: ...``
5xx                              502     ``P server error (HTTP N): ...``
anything else (1xx, 3xx, 2xx     502     ``P answered HTTP N``
other than 200)
===============================  ======  =======================================
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import httpx

from speech.errors import (
    SpeechError,
    UpstreamAuthError,
    UpstreamClientError,
    UpstreamGatewayTimeout,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamUnavailable,
)

MESSAGE_LIMIT = 300
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
_GATEWAY_KEY = re.compile(r"sk_[A-Za-z0-9]+_[A-Za-z0-9_\-]+")
# Retry-After is delta-seconds or an HTTP-date; anything else is dropped.
_RETRY_AFTER = re.compile(r"^(\d{1,9}|[A-Za-z]{3}, \d{2} [A-Za-z]{3} \d{4} \d{2}:\d{2}:\d{2} GMT)$")


def upstream_message(body: bytes, secrets: Iterable[str] = ()) -> str:
    """The upstream's error text, cleaned (see the module docstring); "" if none."""
    try:
        parsed: Any = json.loads(body)
    except (ValueError, RecursionError):
        parsed = None
    if isinstance(parsed, list) and parsed:  # Gemini wraps its error in a list
        parsed = parsed[0]
    message: Any = None
    if isinstance(parsed, dict):
        error = parsed.get("error", parsed)
        message = error.get("message") if isinstance(error, dict) else error
        if message is None and isinstance(parsed.get("message"), str):
            message = parsed["message"]
    if not isinstance(message, str):
        message = body[:MESSAGE_LIMIT].decode("utf-8", "replace") if parsed is None and body else ""
    return clean(message, secrets)


def clean(text: str, secrets: Iterable[str] = ()) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = _GATEWAY_KEY.sub("***", text)
    text = _CONTROL.sub(" ", text).strip()
    return text[:MESSAGE_LIMIT] + ("..." if len(text) > MESSAGE_LIMIT else "")


def translate_status(
    provider: str, status: int, body: bytes, headers: httpx.Headers, secrets: Iterable[str] = ()
) -> SpeechError:
    """The gateway error for an upstream answer other than 200."""
    text = upstream_message(body, secrets)
    detail = f": {text}" if text else ""
    if status == 429:
        retry_after = headers.get("retry-after", "").strip()
        return UpstreamRateLimited(
            f"{provider} rate limit{detail or ': try again later'}",
            retry_after=retry_after if _RETRY_AFTER.match(retry_after) else None,
        )
    if status in (401, 403):
        return UpstreamAuthError(f"{provider} rejected the gateway's credentials")
    if status == 402:
        return UpstreamAuthError(f"{provider} refused the gateway's account (payment required){detail}")
    if status == 408:
        return UpstreamGatewayTimeout(f"{provider} timed out{detail}")
    if 400 <= status < 500:
        return UpstreamClientError(f"{provider} rejected the request{detail}", status=status)
    if 500 <= status < 600:
        return UpstreamServerError(f"{provider} server error (HTTP {status}){detail}")
    return UpstreamProtocolError(f"{provider} answered HTTP {status}")


_CONNECTION_FAILURES = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.RemoteProtocolError,
    httpx.ReadError,
    httpx.WriteError,
)


def is_connection_failure(exc: httpx.HTTPError) -> bool:
    """Failures of the connection itself, which the one retry covers (not a
    read timeout: retrying a silent upstream would only double the wait)."""
    return isinstance(exc, _CONNECTION_FAILURES)


def translate_transport(provider: str, exc: httpx.HTTPError, *, answered: bool, read_timeout_s: float) -> SpeechError:
    """A transport failure: ``answered`` once the upstream's status line had come."""
    if isinstance(exc, httpx.ReadTimeout | httpx.WriteTimeout):
        return UpstreamGatewayTimeout(f"{provider} did not answer within {read_timeout_s:g} s")
    if answered:
        return UpstreamServerError(f"{provider} closed the connection before answering")
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout | httpx.NetworkError):
        return UpstreamUnavailable(f"Failed to connect to {provider} server")
    if isinstance(exc, httpx.RemoteProtocolError):
        return UpstreamServerError(f"{provider} closed the connection before answering")
    return UpstreamProtocolError(f"{provider} request failed ({type(exc).__name__})")


def translate_midstream(provider: str, exc: httpx.HTTPError, *, read_timeout_s: float) -> SpeechError:
    """A failure after part of the answer reached the client."""
    if isinstance(exc, httpx.ReadTimeout):
        return UpstreamGatewayTimeout(f"{provider} went silent for {read_timeout_s:g} s mid-answer")
    return UpstreamServerError(f"{provider} dropped the connection mid-answer")
