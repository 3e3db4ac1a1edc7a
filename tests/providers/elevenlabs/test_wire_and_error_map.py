"""Pure unit tests of the request helpers and the error translation table."""

from __future__ import annotations

import json

import httpx
import pytest

from speech.errors import (
    CallerCredentialError,
    CallerQuotaExceeded,
    InvalidTtsRequest,
    SpeechError,
    UpstreamAuthError,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from speech.providers.base import SynthesisRequest
from speech.providers.elevenlabs.error_map import (
    clean_message,
    parse_error_body,
    translate_http_error,
    translate_transport_error,
)
from speech.providers.elevenlabs.wire import (
    build_body,
    check_voice_id,
    endpoint_path,
    is_audio_content_type,
    parse_billed_characters,
)


def body(obj: object) -> bytes:
    return json.dumps(obj).encode()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (body({"detail": {"status": "voice_not_found", "message": "nope"}}), ("voice_not_found", "nope")),
        (body({"detail": {"code": "quota_exceeded", "message": "m"}}), ("quota_exceeded", "m")),
        (body({"detail": {"status": "free text, not a code!", "message": "m"}}), ("", "m")),
        (body({"detail": {"status": 7, "message": None}}), ("", "")),
        (body({"detail": "Not Found"}), ("", "Not Found")),
        (
            body({"detail": [{"loc": ["body", "text"], "msg": "Field required"}, "odd"]}),
            (
                "validation_error",
                "body.text: Field required; odd",
            ),
        ),
        (body({"error": "x"}), ("", "")),
        (body([1, 2]), ("", "")),
        (b"<html>oops</html>", ("", "")),
        (b"", ("", "")),
        (b"\xff\xfe", ("", "")),
    ],
)
def test_parse_error_body(raw: bytes, expected: tuple[str, str]) -> None:
    assert parse_error_body(raw) == expected


def test_clean_message_masks_keys_flattens_and_truncates() -> None:
    assert clean_message("key sk_abc\nwas\tbad\x00", ["sk_abc", ""]) == "key *** was bad"
    long = clean_message("a" * 500, [])
    assert len(long) == 200 and long.endswith("...")


@pytest.mark.parametrize(
    ("status", "code", "caller", "expected"),
    [
        (401, "invalid_api_key", False, UpstreamAuthError),
        (401, "invalid_api_key", True, CallerCredentialError),
        (401, "", True, CallerCredentialError),
        (403, "missing_permissions", False, UpstreamAuthError),
        (400, "invalid_api_key", True, CallerCredentialError),
        (401, "quota_exceeded", False, UpstreamUnavailable),
        (401, "quota_exceeded", True, CallerQuotaExceeded),
        (402, "", True, CallerQuotaExceeded),
        (429, "quota_exceeded", True, CallerQuotaExceeded),
        (429, "too_many_concurrent_requests", True, UpstreamRateLimited),
        (429, "", False, UpstreamRateLimited),
        (503, "system_busy", False, UpstreamRateLimited),
        (408, "", False, UpstreamTimeout),
        (400, "voice_not_found", False, UpstreamRejected),
        (404, "", False, UpstreamRejected),
        (413, "", False, UpstreamRejected),
        (500, "", True, UpstreamUnavailable),
        (502, "", False, UpstreamUnavailable),
        (200, "", False, UpstreamProtocolError),
        (301, "", False, UpstreamProtocolError),
    ],
)
def test_translate_http_error_table(status: int, code: str, caller: bool, expected: type[SpeechError]) -> None:
    raw = body({"detail": {"status": code, "message": "upstream says no"}}) if code else b""
    exc = translate_http_error(status, raw, caller_key=caller, secrets=())
    assert type(exc) is expected


def test_gateway_quota_is_retryable_but_a_callers_is_not() -> None:
    raw = body({"detail": {"status": "quota_exceeded", "message": "m"}})
    assert translate_http_error(401, raw, caller_key=False, secrets=()).retryable
    assert not translate_http_error(401, raw, caller_key=True, secrets=()).retryable


def test_transport_errors() -> None:
    def tr(exc: httpx.HTTPError, received: int = 0) -> SpeechError:
        return translate_transport_error(exc, read_timeout_s=2.5, received=received)

    assert tr(httpx.ReadTimeout("")).message == "elevenlabs stalled for 2.5 s before answering"
    assert tr(httpx.ReadTimeout(""), 10).message == "elevenlabs stalled for 2.5 s after 10 bytes of audio"
    assert tr(httpx.ReadError(""), 10).message == "elevenlabs stream dropped after 10 bytes of audio"
    assert type(tr(httpx.WriteError(""))) is UpstreamUnavailable
    assert type(tr(httpx.ProxyError("proxy said no"))) is UpstreamUnavailable
    assert type(tr(httpx.DecodingError("bad gzip"))) is UpstreamProtocolError
    assert type(tr(httpx.UnsupportedProtocol("x"))) is UpstreamUnavailable


def test_build_body_omits_what_was_not_given() -> None:
    assert build_body(SynthesisRequest("hi"), "m1") == {"text": "hi", "model_id": "m1"}
    full = SynthesisRequest("hi", model_id="m2", language_code="fr", voice_settings={"stability": 1})
    assert build_body(full, "m1") == {
        "text": "hi",
        "model_id": "m2",
        "voice_settings": {"stability": 1},
        "language_code": "fr",
    }


def test_endpoint_path_and_voice_ids() -> None:
    assert endpoint_path("JBFqnCBsd6RMkjVDRZzb", streaming=False) == "/v1/text-to-speech/JBFqnCBsd6RMkjVDRZzb"
    assert endpoint_path("a-b_c", streaming=True) == "/v1/text-to-speech/a-b_c/stream"
    assert check_voice_id("x" * 64) == "x" * 64
    with pytest.raises(InvalidTtsRequest):
        check_voice_id("")
    long = "y" * 1000
    with pytest.raises(InvalidTtsRequest) as info:
        check_voice_id(long)
    assert long not in str(info.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("42", 42), (" 7 ", 7), ("0", 0), ("", None), ("-1", None), ("\u0664\u0662", None), ("1e3", None)],
)
def test_parse_billed_characters(value: str | None, expected: int | None) -> None:
    assert parse_billed_characters(value) == expected


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("audio/mpeg", True),
        ("Audio/WAV", True),
        ("audio/L16;rate=16000;channels=1", True),
        ("application/octet-stream", True),
        ("application/ogg", True),
        ("text/html; charset=utf-8", False),
        ("application/json", False),
        ("", False),
        (None, False),
    ],
)
def test_is_audio_content_type(value: str | None, ok: bool) -> None:
    assert is_audio_content_type(value) is ok
