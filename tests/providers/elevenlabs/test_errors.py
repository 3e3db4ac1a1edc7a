"""Every upstream failure, produced by the loopback fake (or, for the few a
loopback socket cannot produce, by an httpx transport), ends as the right
gateway error, with the right retryability, and never shows a key."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest

from speech.errors import (
    CallerCredentialError,
    CallerQuotaExceeded,
    SpeechError,
    UpstreamAuthError,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from speech.providers.base import SynthesisRequest
from speech.settings import Secret
from tests.providers.elevenlabs.fake_elevenlabs import CALLER_KEY, GATEWAY_KEY, FakeElevenLabs, refused_port
from tests.providers.elevenlabs.support import TINY_TIMEOUT_S, MakeSynth, collect

TEXT = "Hello from the robot."
WRONG_GATEWAY_KEY = "gw-secret-KEY-revoked-000"
WRONG_CALLER_KEY = "caller-secret-KEY-revoked-111"
ALL_KEYS = (GATEWAY_KEY, CALLER_KEY, WRONG_GATEWAY_KEY, WRONG_CALLER_KEY)


def detail(code: str, message: str) -> dict[str, object]:
    return {"detail": {"status": code, "message": message}}


@dataclass(frozen=True)
class Case:
    """One failure: how to provoke it, whose key, what the gateway raises."""

    id: str
    setup: Callable[[FakeElevenLabs], None]
    expected: type[SpeechError]
    message: str  # exact text, or a fragment when it carries upstream text
    caller: bool = False
    gateway_key: str = GATEWAY_KEY
    caller_key: str = CALLER_KEY
    text: str = TEXT
    voice_id: str | None = None
    exact: bool = True


def nothing(fake: FakeElevenLabs) -> None:
    pass


def canned(status: int, body: object, content_type: str = "application/json") -> Callable[[FakeElevenLabs], None]:
    return lambda fake: fake.fail_with(status, body, content_type)


QUOTA = detail("quota_exceeded", "This request exceeds your quota of 10000. You have 3 credits remaining.")
HTML = b"<html><body><h1>502 Bad Gateway</h1></body></html>"

CASES = [
    Case(
        "401-invalid-key-gateway",
        nothing,
        UpstreamAuthError,
        "elevenlabs rejected the gateway's credentials",
        gateway_key=WRONG_GATEWAY_KEY,
    ),
    Case(
        "401-invalid-key-caller",
        nothing,
        CallerCredentialError,
        "elevenlabs rejected the elevenlabs_api_key in the request",
        caller=True,
        caller_key=WRONG_CALLER_KEY,
    ),
    Case(
        "401-quota-gateway",
        canned(401, QUOTA),
        UpstreamUnavailable,
        "elevenlabs quota of the gateway's account is exhausted",
    ),
    Case(
        "401-quota-caller",
        canned(401, QUOTA),
        CallerQuotaExceeded,
        "elevenlabs quota exceeded for the elevenlabs_api_key in the request",
        caller=True,
    ),
    Case(
        "429-concurrent",
        canned(429, detail("too_many_concurrent_requests", "Too many concurrent requests.")),
        UpstreamRateLimited,
        "elevenlabs is busy (HTTP 429 too_many_concurrent_requests); try again later",
    ),
    Case(
        "429-system-busy",
        canned(429, detail("system_busy", "We are experiencing heavy traffic.")),
        UpstreamRateLimited,
        "elevenlabs is busy (HTTP 429 system_busy); try again later",
        caller=True,
    ),
    Case(
        "500-json",
        canned(500, detail("internal_error", "Something went wrong")),
        UpstreamUnavailable,
        "elevenlabs server error (HTTP 500 internal_error)",
    ),
    Case("503-html", canned(503, HTML, "text/html"), UpstreamUnavailable, "elevenlabs server error (HTTP 503)"),
    Case(
        "400-voice-not-found",
        nothing,
        UpstreamRejected,
        "elevenlabs rejected the request (HTTP 400 voice_not_found): "
        "A voice with voice_id NoSuchVoice123 was not found.",
        voice_id="NoSuchVoice123",
    ),
    Case(
        "400-too-long",
        nothing,
        UpstreamRejected,
        "elevenlabs rejected the request (HTTP 400 max_character_limit_exceeded): "
        "Text is too long: 201 characters; the maximum is 200.",
        text="x" * 201,
    ),
    Case(
        "400-plain-text",
        canned(400, b"Bad Request", "text/plain"),
        UpstreamRejected,
        "elevenlabs rejected the request (HTTP 400)",
    ),
    Case(
        "422-validation",
        canned(
            422,
            {
                "detail": [
                    {"type": "missing", "loc": ["body", "text"], "msg": "Field required"},
                    {"type": "enum", "loc": ["query", "output_format"], "msg": "Input should be 'mp3_44100_128'"},
                ]
            },
        ),
        UpstreamRejected,
        "elevenlabs rejected the request (HTTP 422 validation_error): "
        "body.text: Field required; query.output_format: Input should be 'mp3_44100_128'",
    ),
    Case(
        "400-echoes-the-key",
        canned(400, detail("invalid_request", f"Request with key {GATEWAY_KEY} is invalid")),
        UpstreamRejected,
        "elevenlabs rejected the request (HTTP 400 invalid_request): Request with key *** is invalid",
    ),
    Case(
        "400-long-message-truncated",
        canned(400, detail("invalid_request", "word " * 100)),
        UpstreamRejected,
        "...",
        exact=False,
    ),
    Case(
        "200-html",
        canned(200, HTML, "text/html; charset=utf-8"),
        UpstreamProtocolError,
        "elevenlabs answered 200 with content-type 'text/html; charset=utf-8'",
    ),
    Case(
        "200-empty",
        canned(200, b"", "audio/mpeg"),
        UpstreamProtocolError,
        "elevenlabs answered 200 with an empty body",
    ),
    Case(
        "302-redirect",
        canned(302, b"", "text/plain"),
        UpstreamProtocolError,
        "elevenlabs answered with unexpected HTTP 302",
    ),
    Case(
        "drop-mid-body",
        lambda fake: setattr(fake, "fault", "drop_body"),
        UpstreamUnavailable,
        "elevenlabs stream dropped after",
        exact=False,
    ),
    Case(
        "stall-before-headers",
        lambda fake: setattr(fake, "fault", "stall_headers"),
        UpstreamTimeout,
        "elevenlabs stalled for 0.3 s before answering",
    ),
    Case(
        "stall-mid-body",
        lambda fake: setattr(fake, "fault", "stall_body"),
        UpstreamTimeout,
        "elevenlabs stalled for 0.3 s after",
        exact=False,
    ),
]


async def provoke(fake: FakeElevenLabs, make_synth: MakeSynth, case: Case) -> SpeechError:
    case.setup(fake)
    synth = make_synth(api_key=Secret(case.gateway_key), first_result_timeout_s=TINY_TIMEOUT_S)
    request = SynthesisRequest(
        case.text,
        output_format="mp3_44100_128",
        voice_id=case.voice_id,
        caller_api_key=case.caller_key if case.caller else None,
    )
    with pytest.raises(case.expected) as info:
        await collect(synth, request)
    return info.value


def assert_no_key(exc: BaseException, log_text: str) -> None:
    rendered = "".join(traceback.format_exception(exc)) + repr(exc) + log_text
    if isinstance(exc, SpeechError):
        rendered += str(exc.to_json())
    for key in ALL_KEYS:
        assert key not in rendered
    assert "secret-KEY" not in rendered


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_upstream_failures_map_to_gateway_errors(
    fake: FakeElevenLabs, make_synth: MakeSynth, case: Case, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    exc = await provoke(fake, make_synth, case)
    assert type(exc) is case.expected
    if case.exact:
        assert exc.message == case.message
    else:
        assert case.message in exc.message
    assert len(exc.message) < 300
    assert fake.requests, "the upstream was called"
    sent = fake.requests[0].headers["xi-api-key"]
    assert sent == (case.caller_key if case.caller else case.gateway_key)
    assert_no_key(exc, caplog.text)


def test_retryability_of_each_mapping() -> None:
    """Retryable errors move the failover chain on; permanent ones are reported."""
    assert UpstreamUnavailable.retryable and UpstreamTimeout.retryable and UpstreamRateLimited.retryable
    assert UpstreamProtocolError.retryable
    assert not UpstreamAuthError.retryable and not UpstreamRejected.retryable
    assert not CallerCredentialError.retryable and not CallerQuotaExceeded.retryable
    assert (CallerCredentialError.status, CallerQuotaExceeded.status, UpstreamRateLimited.status) == (401, 402, 429)


async def test_connection_refused_is_unavailable(make_synth: MakeSynth, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with refused_port() as port:
        synth = make_synth(url=f"http://127.0.0.1:{port}", connect_timeout_s=TINY_TIMEOUT_S)
        with pytest.raises(UpstreamUnavailable) as info:
            await collect(synth, SynthesisRequest(TEXT))
    assert info.value.message == "Failed to connect to elevenlabs server"
    assert info.value.retryable
    assert_no_key(info.value, caplog.text)


def failing_transport(exc: Exception) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return httpx.MockTransport(handler)


@pytest.mark.parametrize(
    ("transport_error", "expected", "message"),
    [
        (httpx.ConnectTimeout("timed out"), UpstreamTimeout, "Timed out connecting to elevenlabs server"),
        (
            httpx.ConnectError("[Errno -2] Name or service not known"),
            UpstreamUnavailable,
            "Failed to connect to elevenlabs server",
        ),
        (
            httpx.PoolTimeout("pool"),
            UpstreamTimeout,
            "no free connection to elevenlabs server (too many requests in flight)",
        ),
        (
            httpx.RemoteProtocolError("Server disconnected without sending a response."),
            UpstreamUnavailable,
            "elevenlabs closed the connection before answering",
        ),
        (
            httpx.LocalProtocolError(f"Illegal header value {GATEWAY_KEY!r}"),
            UpstreamUnavailable,
            "elevenlabs request failed (LocalProtocolError)",
        ),
    ],
)
async def test_transport_failures_a_loopback_socket_cannot_produce(
    make_synth: MakeSynth, transport_error: Exception, expected: type[SpeechError], message: str
) -> None:
    synth = make_synth(transport=failing_transport(transport_error), first_result_timeout_s=TINY_TIMEOUT_S)
    with pytest.raises(expected) as info:
        await collect(synth, SynthesisRequest(TEXT))
    assert info.value.message == message
    assert GATEWAY_KEY not in str(info.value)
