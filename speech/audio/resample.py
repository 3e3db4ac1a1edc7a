"""PCM16 helpers shared by the audio encoders: bytes <-> samples, and resampling.

Decisions:

* Engines hand us mono PCM16 little-endian ``bytes``; an odd byte count is a
  caller bug and raises :class:`ValueError` (never silently truncated).
* Sample-rate conversion uses ``soxr`` at quality ``"HQ"``. The one-shot
  :func:`soxr.resample` flushes its filter, so the tail is never dropped: the
  output holds ``round(n * to_rate / from_rate)`` samples.
"""

from __future__ import annotations

import numpy as np
import soxr

PCM16 = np.dtype("<i2")


def pcm16_to_array(pcm: bytes) -> np.ndarray:
    """View PCM16LE mono bytes as an ``int16`` array (host byte order, a copy when needed)."""
    if len(pcm) % 2:
        raise ValueError(f"PCM16 input must have an even number of bytes, got {len(pcm)}")
    return np.frombuffer(pcm, dtype=PCM16).astype(np.int16, copy=False)


def array_to_pcm16(samples: np.ndarray) -> bytes:
    """Serialise ``int16`` samples as PCM16LE bytes."""
    return samples.astype(PCM16, copy=False).tobytes()


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample mono ``int16`` samples from ``from_rate`` to ``to_rate`` Hz with soxr (HQ).

    Returns the input unchanged when the rates are equal, and an empty array for
    empty input.
    """
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
    if from_rate == to_rate or samples.size == 0:
        return samples.astype(np.int16, copy=False)
    out = soxr.resample(np.ascontiguousarray(samples, dtype=np.int16), from_rate, to_rate, quality="HQ")
    return np.asarray(out, dtype=np.int16)
