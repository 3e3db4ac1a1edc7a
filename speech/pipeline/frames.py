"""Parsing of client websocket frames into audio chunks and control messages.

OM1 sends JSON text frames ``{"audio": b64, "rate": 16000, "language_code":
"en-US", ...}``. Binary frames carry raw PCM16LE mono at the session's current
rate. Each problem raises a specific :class:`~speech.errors.InvalidFrame`;
the session replies with its message and goes on.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass

import orjson
import pybase64

from speech.errors import FrameTooLarge, InvalidFrame

MIN_RATE = 8000
MAX_RATE = 48000

# Control messages accepted as {"type": "..."} text frames.
CONTROL_TYPES = ("CloseStream", "KeepAlive", "Finalize", "Config")


@dataclass(frozen=True, slots=True)
class AudioChunk:
    pcm: bytes
    rate: int | None  # None: keep the session's current rate
    language_code: str | None


@dataclass(frozen=True, slots=True)
class Control:
    type: str
    # The other fields of the message (used by "Config").
    fields: dict[str, object] | None = None


def check_rate(value: object, where: str = "rate") -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and not value.is_integer())
    ):
        raise InvalidFrame(f"'{where}' must be an integer number of Hz, got {_short(value)}")
    rate = int(value)
    if not MIN_RATE <= rate <= MAX_RATE:
        raise InvalidFrame(f"'{where}' must be between {MIN_RATE} and {MAX_RATE} Hz, got {rate}")
    return rate


def parse_text_frame(text: str, max_bytes: int, frame_bytes: int = 2) -> AudioChunk | Control:
    if len(text) > max_bytes:
        raise FrameTooLarge(f"frame of {len(text)} bytes is over the {max_bytes}-byte limit")
    try:
        # orjson and pybase64: the two costs of every OM1 frame, ~8x cheaper
        # together than json + base64 (bench: 34 -> 4 us per 200 ms frame).
        msg = orjson.loads(text)
    except (ValueError, RecursionError) as exc:  # orjson.JSONDecodeError is a ValueError
        raise InvalidFrame("text frame is not valid JSON") from exc
    if not isinstance(msg, dict):
        raise InvalidFrame("text frame must be a JSON object")
    if "audio" not in msg:
        kind = msg.get("type")
        if isinstance(kind, str) and kind in CONTROL_TYPES:
            return Control(kind, {k: v for k, v in msg.items() if k != "type"} or None)
        if kind is not None:
            raise InvalidFrame(f"unknown message type {_short(kind)}; expected one of {', '.join(CONTROL_TYPES)}")
        raise InvalidFrame("JSON frame has no 'audio' field")
    audio = msg["audio"]
    if not isinstance(audio, str):
        raise InvalidFrame("'audio' must be a base64 string")
    try:
        pcm = pybase64.b64decode(audio, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidFrame("'audio' is not valid base64") from exc
    _check_pcm(pcm, frame_bytes)
    rate = check_rate(msg["rate"]) if msg.get("rate") is not None else None
    lang = msg.get("language_code")
    if lang is not None and (not isinstance(lang, str) or not 0 < len(lang) <= 35):
        raise InvalidFrame(f"'language_code' must be a language tag such as 'en-US', got {_short(lang)}")
    return AudioChunk(pcm, rate, lang)


def parse_binary_frame(data: bytes, max_bytes: int, frame_bytes: int = 2) -> AudioChunk:
    if len(data) > max_bytes:
        raise FrameTooLarge(f"frame of {len(data)} bytes is over the {max_bytes}-byte limit")
    _check_pcm(data, frame_bytes)
    return AudioChunk(data, None, None)


def _check_pcm(pcm: bytes, frame_bytes: int = 2) -> None:
    """``frame_bytes``: bytes per sample frame (2 for 16-bit mono, 4 for stereo, 1 or 2 for G.711)."""
    if len(pcm) % frame_bytes == 0:
        return
    if frame_bytes == 2:
        raise InvalidFrame(f"audio has an odd number of bytes ({len(pcm)}); expected 16-bit PCM samples")
    raise InvalidFrame(f"audio has {len(pcm)} bytes, not a whole number of {frame_bytes}-byte sample frames")


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
