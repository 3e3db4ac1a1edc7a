"""Upstream statuses and transport failures as gateway errors."""

from __future__ import annotations

import json

import httpx
import pytest

from speech.errors import (
    UpstreamAuthError,
    UpstreamClientError,
    UpstreamGatewayTimeout,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamUnavailable,
)
from speech.llm.error_map import (
    clean,
    is_connection_failure,
    translate_midstream,
    translate_status,
    translate_transport,
    upstream_message,
)


def status(code: int, body: object = b"", headers: dict[str, str] | None = None, secrets: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return translate_status("xai", code, raw, httpx.Headers(headers or {}), secrets)


@pytest.mark.parametrize(
    ("code", "cls", "client_status", "message"),
    [
        (400, UpstreamClientError, 400, "xai rejected the request: bad temperature"),
        (404, UpstreamClientError, 404, "xai rejected the request: bad temperature"),
        (422, UpstreamClientError, 422, "xai rejected the request: bad temperature"),
        (401, UpstreamAuthError, 503, "xai rejected the gateway's credentials"),
        (403, UpstreamAuthError, 503, "xai rejected the gateway's credentials"),
        (402, UpstreamAuthError, 503, "xai refused the gateway's account (payment required): bad temperature"),
        (408, UpstreamGatewayTimeout, 504, "xai timed out: bad temperature"),
        (429, UpstreamRateLimited, 429, "xai rate limit: bad temperature"),
        (500, UpstreamServerError, 502, "xai server error (HTTP 500): bad temperature"),
        (503, UpstreamServerError, 502, "xai server error (HTTP 503): bad temperature"),
        (302, UpstreamProtocolError, 502, "xai answered HTTP 302"),
        (204, UpstreamProtocolError, 502, "xai answered HTTP 204"),
    ],
)
def test_statuses(code: int, cls: type, client_status: int, message: str) -> None:
    error = status(code, {"error": {"message": "bad temperature", "type": "invalid_request_error"}})
    assert type(error) is cls and error.status == client_status and error.message == message


def test_retry_after_is_passed_on_when_well_formed() -> None:
    assert status(429, {}, {"retry-after": "20"}).headers == {"retry-after": "20"}
    date = "Wed, 21 Oct 2026 07:28:00 GMT"
    assert status(429, {}, {"retry-after": date}).headers == {"retry-after": date}
    assert status(429, {}, {"retry-after": "20\r\nX-Evil: 1"}).headers == {}
    assert status(429, {}).headers == {}
    assert status(429, b"").message == "xai rate limit: try again later"


@pytest.mark.parametrize(
    ("body", "text"),
    [
        (b'{"error": {"message": "m1"}}', "m1"),
        (b'{"error": "m2"}', "m2"),
        (b'[{"error": {"code": 400, "message": "m3"}}]', "m3"),
        (b'{"message": "m4"}', "m4"),
        (b'{"detail": "unknown shape"}', ""),
        (b"<html>Bad Gateway</html>", "<html>Bad Gateway</html>"),
        (b"", ""),
    ],
)
def test_the_upstreams_message_is_found_in_its_usual_places(body: bytes, text: str) -> None:
    assert upstream_message(body) == text


def test_messages_lose_keys_and_control_characters_and_are_capped() -> None:
    secret = "sk-proj-upstreamSECRET"
    body = {"error": {"message": f"Incorrect API key {secret}\nfor sk_0123abcd_deadbeefSECRET\x1b[31m"}}
    error = status(400, body, secrets=(secret,))
    assert error.message == "xai rejected the request: Incorrect API key *** for *** [31m"
    assert clean("x" * 400).endswith("...") and len(clean("x" * 400)) == 303


def test_transport_failures() -> None:
    request = httpx.Request("POST", "http://up/v1/chat/completions")
    refused = httpx.ConnectError("refused", request=request)
    dropped = httpx.RemoteProtocolError("Server disconnected", request=request)
    silent = httpx.ReadTimeout("timed out", request=request)
    garbled = httpx.DecodingError("gzip", request=request)
    assert is_connection_failure(refused) and is_connection_failure(dropped)
    assert not is_connection_failure(silent)
    assert not is_connection_failure(garbled)
    cases = [
        (refused, False, UpstreamUnavailable, "Failed to connect to xai server"),
        (httpx.ConnectTimeout("t", request=request), False, UpstreamUnavailable, "Failed to connect to xai server"),
        (httpx.PoolTimeout("t", request=request), False, UpstreamUnavailable, "Failed to connect to xai server"),
        (dropped, False, UpstreamServerError, "xai closed the connection before answering"),
        (dropped, True, UpstreamServerError, "xai closed the connection before answering"),
        (silent, False, UpstreamGatewayTimeout, "xai did not answer within 2.5 s"),
        (silent, True, UpstreamGatewayTimeout, "xai did not answer within 2.5 s"),
        (garbled, False, UpstreamProtocolError, "xai request failed (DecodingError)"),
    ]
    for exc, answered, cls, message in cases:
        error = translate_transport("xai", exc, answered=answered, read_timeout_s=2.5)
        assert (type(error), error.message) == (cls, message)
    assert translate_midstream("xai", silent, read_timeout_s=3).message == "xai went silent for 3 s mid-answer"
    assert translate_midstream("xai", dropped, read_timeout_s=3).message == "xai dropped the connection mid-answer"
