"""Streaming resampling of PCM16 mono to the pipeline's 16 kHz, with soxr."""

from __future__ import annotations

import numpy as np
import soxr

PIPELINE_RATE = 16000


class StreamResampler:
    """Converts chunks at ``in_rate`` to 16 kHz, keeping filter state across chunks.

    At 16 kHz input the bytes pass through untouched. ``flush`` returns the
    samples still held in the filter (call it when the rate changes or the
    stream ends).
    """

    def __init__(self, in_rate: int) -> None:
        self.in_rate = in_rate
        self._stream = (
            None
            if in_rate == PIPELINE_RATE
            else soxr.ResampleStream(in_rate, PIPELINE_RATE, 1, dtype="int16", quality="HQ")
        )

    def process(self, pcm: bytes) -> bytes:
        if self._stream is None or not pcm:
            return pcm
        out = self._stream.resample_chunk(np.frombuffer(pcm, dtype="<i2"))
        return out.astype("<i2", copy=False).tobytes()

    def flush(self) -> bytes:
        if self._stream is None:
            return b""
        out = self._stream.resample_chunk(np.zeros(0, dtype="<i2"), last=True)
        self._stream = soxr.ResampleStream(self.in_rate, PIPELINE_RATE, 1, dtype="int16", quality="HQ")
        return out.astype("<i2", copy=False).tobytes()
