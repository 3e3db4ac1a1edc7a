"""Client frame parsing: every accepted shape and every error path."""

from __future__ import annotations

import base64
import json

import pytest

from speech.errors import BadRequest, FrameTooLarge, InvalidFrame
from speech.pipeline.frames import (
    CONTROL_TYPES,
    MAX_RATE,
    MIN_RATE,
    AudioChunk,
    Control,
    check_rate,
    parse_binary_frame,
    parse_text_frame,
)

CAP = 1024 * 1024
PCM = b"\x01\x00\xff\x7f" * 8  # 16 samples


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def text(**msg: object) -> str:
    return json.dumps(msg)


# ------------------------------------------------------------- valid frames


def test_audio_frame_with_rate_and_language() -> None:
    chunk = parse_text_frame(text(audio=b64(PCM), rate=48000, language_code="de-DE"), CAP)
    assert chunk == AudioChunk(PCM, 48000, "de-DE")


def test_audio_frame_without_rate_or_language() -> None:
    assert parse_text_frame(text(audio=b64(PCM)), CAP) == AudioChunk(PCM, None, None)


def test_audio_frame_with_null_rate_and_language_and_extra_keys() -> None:
    chunk = parse_text_frame(text(audio=b64(PCM), rate=None, language_code=None, type="Audio"), CAP)
    assert chunk == AudioChunk(PCM, None, None)


def test_empty_audio_is_accepted() -> None:
    assert parse_text_frame(text(audio="", rate=8000), CAP) == AudioChunk(b"", 8000, None)


def test_integral_float_rate_is_accepted() -> None:
    chunk = parse_text_frame(text(audio=b64(PCM), rate=16000.0), CAP)
    assert isinstance(chunk, AudioChunk)
    assert chunk.rate == 16000 and type(chunk.rate) is int


@pytest.mark.parametrize("kind", CONTROL_TYPES)
def test_control_messages(kind: str) -> None:
    assert parse_text_frame(text(type=kind), CAP) == Control(kind)


def test_control_types_are_the_documented_ones() -> None:
    assert set(CONTROL_TYPES) == {"CloseStream", "KeepAlive", "Finalize", "Config"}


def test_control_fields_and_sample_frame_sizes() -> None:
    assert parse_text_frame(text(type="Config", encoding="mulaw"), CAP) == Control("Config", {"encoding": "mulaw"})
    assert parse_binary_frame(b"\x01\x02\x03", CAP, frame_bytes=1).pcm == b"\x01\x02\x03"
    with pytest.raises(InvalidFrame, match="not a whole number of 4-byte sample frames"):
        parse_binary_frame(b"\x00" * 6, CAP, frame_bytes=4)


def test_binary_frame() -> None:
    assert parse_binary_frame(PCM, CAP) == AudioChunk(PCM, None, None)
    assert parse_binary_frame(b"", CAP) == AudioChunk(b"", None, None)


def test_frames_exactly_at_the_cap_are_accepted() -> None:
    frame = text(audio=b64(PCM))
    assert isinstance(parse_text_frame(frame, len(frame)), AudioChunk)
    assert parse_binary_frame(PCM, len(PCM)).pcm == PCM


# -------------------------------------------------------------- bad frames


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ("not json", "not valid JSON"),
        ("", "not valid JSON"),
        ('{"audio": "AAAA"', "not valid JSON"),
        ("[" * 100_000 + "]" * 100_000, "not valid JSON"),  # nesting deeper than the recursion limit
        ('{"audio": "", "rate": ' + "1" * 5000 + "}", "not valid JSON"),  # over int max str digits
        ("[1, 2]", "must be a JSON object"),
        ('"audio"', "must be a JSON object"),
        ("null", "must be a JSON object"),
        ("{}", "no 'audio' field"),
        ('{"rate": 16000}', "no 'audio' field"),
        ('{"type": null}', "no 'audio' field"),
        ('{"type": "Flush"}', "unknown message type 'Flush'; expected one of CloseStream, KeepAlive"),
        ('{"type": "closestream"}', "unknown message type 'closestream'"),
        ('{"type": 3}', "unknown message type 3"),
        ('{"type": ["CloseStream"]}', "unknown message type ['CloseStream']"),
        ('{"audio": null}', "'audio' must be a base64 string"),
        ('{"audio": 123}', "'audio' must be a base64 string"),
        ('{"audio": ["AAAA"]}', "'audio' must be a base64 string"),
        ('{"audio": "AAA"}', "'audio' is not valid base64"),  # bad padding
        ('{"audio": "AA!A"}', "'audio' is not valid base64"),
        ('{"audio": "AA AA"}', "'audio' is not valid base64"),
        ('{"audio": "ÄÄÄÄ"}', "'audio' is not valid base64"),  # non-ASCII
        ('{"audio": "\\u00e9AAA"}', "'audio' is not valid base64"),  # non-ASCII, escaped
        ('{"audio": "AA=="}', "audio has an odd number of bytes (1)"),
        ('{"audio": "' + b64(b"\x00" * 3) + '"}', "odd number of bytes (3); expected 16-bit PCM samples"),
        ('{"audio": "", "language_code": ""}', "'language_code' must be a language tag such as 'en-US', got ''"),
        ('{"audio": "", "language_code": 5}', "'language_code' must be a language tag such as 'en-US', got 5"),
        ('{"audio": "", "language_code": ["en"]}', "'language_code' must be a language tag"),
        ('{"audio": "", "language_code": "' + "x" * 36 + '"}', "'language_code' must be a language tag"),
    ],
)
def test_invalid_text_frames(frame: str, message: str) -> None:
    with pytest.raises(InvalidFrame) as info:
        parse_text_frame(frame, CAP)
    assert type(info.value) is InvalidFrame
    assert message in info.value.message
    assert str(info.value) == info.value.message


def test_language_code_of_35_chars_is_accepted() -> None:
    chunk = parse_text_frame(text(audio="", language_code="x" * 35), CAP)
    assert isinstance(chunk, AudioChunk) and chunk.language_code == "x" * 35


def test_odd_audio_reports_its_length() -> None:
    with pytest.raises(InvalidFrame, match=r"odd number of bytes \(1\)"):
        parse_text_frame(text(audio=b64(b"\x00")), CAP)


@pytest.mark.parametrize(
    ("rate", "message"),
    [
        (7999, "'rate' must be between 8000 and 48000 Hz, got 7999"),
        (48001, "'rate' must be between 8000 and 48000 Hz, got 48001"),
        (0, "between 8000 and 48000 Hz, got 0"),
        (-16000, "between 8000 and 48000 Hz, got -16000"),
        (1e300, "between 8000 and 48000 Hz"),
        ("16000", "'rate' must be an integer number of Hz, got '16000'"),
        (True, "'rate' must be an integer number of Hz, got True"),
        (False, "'rate' must be an integer number of Hz, got False"),
        (16000.5, "'rate' must be an integer number of Hz, got 16000.5"),
        ([16000], "'rate' must be an integer number of Hz, got [16000]"),
        ({"hz": 16000}, "'rate' must be an integer number of Hz"),
    ],
)
def test_invalid_rates_in_text_frames(rate: object, message: str) -> None:
    with pytest.raises(InvalidFrame) as info:
        parse_text_frame(text(audio=b64(PCM), rate=rate), CAP)
    assert type(info.value) is InvalidFrame
    assert message in info.value.message


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_rates_are_invalid_frames(literal: str) -> None:
    # Not JSON (RFC 8259 has no NaN/Infinity; 1e400 overflows a double): a clear
    # invalid-frame error, never a ValueError/OverflowError escaping.
    with pytest.raises(InvalidFrame, match="text frame is not valid JSON"):
        parse_text_frame('{"audio": "", "rate": ' + literal + "}", CAP)


@pytest.mark.parametrize("rate", [MIN_RATE, 11025, 16000, 22050, 44100, MAX_RATE])
def test_check_rate_accepts_the_range(rate: int) -> None:
    assert check_rate(rate) == rate
    assert check_rate(float(rate)) == rate


def test_check_rate_names_the_setting() -> None:
    with pytest.raises(InvalidFrame, match=r"^'sample_rate' must be between 8000 and 48000 Hz, got 96000$"):
        check_rate(96000, "sample_rate")
    with pytest.raises(InvalidFrame, match=r"^'sample_rate' must be an integer number of Hz, got None$"):
        check_rate(None, "sample_rate")


def test_long_values_are_shortened_in_messages() -> None:
    with pytest.raises(InvalidFrame) as info:
        check_rate("x" * 100)
    assert info.value.message == "'rate' must be an integer number of Hz, got '" + "x" * 36 + "..."


def test_text_frame_over_the_cap() -> None:
    frame = text(audio=b64(PCM))
    with pytest.raises(FrameTooLarge) as info:
        parse_text_frame(frame, len(frame) - 1)
    assert info.value.message == f"frame of {len(frame)} bytes is over the {len(frame) - 1}-byte limit"
    # the cap is checked before anything else, even for garbage
    with pytest.raises(FrameTooLarge):
        parse_text_frame("x" * 2000, 1024)


def test_binary_frame_over_the_cap() -> None:
    with pytest.raises(FrameTooLarge, match=r"^frame of 2048 bytes is over the 1024-byte limit$"):
        parse_binary_frame(bytes(2048), 1024)


def test_binary_frame_with_odd_length() -> None:
    with pytest.raises(InvalidFrame) as info:
        parse_binary_frame(b"\x00\x00\x00", CAP)
    assert type(info.value) is InvalidFrame
    assert "odd number of bytes (3)" in info.value.message


def test_error_classes_are_client_errors() -> None:
    assert issubclass(FrameTooLarge, InvalidFrame)
    assert issubclass(InvalidFrame, BadRequest)
    assert InvalidFrame("x").status == 400
    assert InvalidFrame("x").to_json() == {"error": "x"}
