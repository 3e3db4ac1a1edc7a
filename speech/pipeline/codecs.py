"""Input audio formats, decoded to PCM16 mono before resampling.

* ``linear16``: 16-bit little-endian PCM (OM1's format), 1 or 2 channels;
* ``mulaw`` / ``alaw``: G.711 (telephony), one byte per sample, usually 8 kHz;

Two channels are downmixed to mono by averaging. The G.711 expansions
follow ITU-T G.711 (the same tables as every telephony stack).
"""

from __future__ import annotations

import numpy as np

ENCODINGS = ("linear16", "mulaw", "alaw")


def _mulaw_table() -> np.ndarray:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(sign != 0, -magnitude, magnitude).astype("<i2")


def _alaw_table() -> np.ndarray:
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << (exponent - 1))
    return np.where(sign != 0, magnitude, -magnitude).astype("<i2")


_TABLES = {"mulaw": _mulaw_table(), "alaw": _alaw_table()}


def sample_bytes(encoding: str, channels: int) -> int:
    """Bytes per sample frame (all channels)."""
    return (2 if encoding == "linear16" else 1) * channels


def to_pcm16_mono(data: bytes, encoding: str, channels: int) -> bytes:
    """Decode ``data`` (a whole number of sample frames) to PCM16LE mono."""
    if encoding == "linear16":
        if channels == 1:
            return data
        samples = np.frombuffer(data, dtype="<i2").astype(np.int32)
    else:
        samples = _TABLES[encoding][np.frombuffer(data, dtype=np.uint8)].astype(np.int32)
    if channels == 2:
        samples = (samples[0::2] + samples[1::2]) // 2
    return samples.astype("<i2").tobytes()
