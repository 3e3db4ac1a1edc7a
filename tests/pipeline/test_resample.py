"""StreamResampler: passthrough at 16 kHz, streamed conversion of the other rates."""

from __future__ import annotations

import numpy as np
import pytest

from speech.pipeline.resample import PIPELINE_RATE, StreamResampler


def tone(rate: int, seconds: float, hz: float = 440.0, amplitude: int = 12000) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()


def stream(resampler: StreamResampler, pcm: bytes, chunk_samples: int) -> bytes:
    step = chunk_samples * 2
    out = b"".join(resampler.process(pcm[i : i + step]) for i in range(0, len(pcm), step))
    return out + resampler.flush()


def peak_hz(pcm: bytes, rate: int) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


def test_passthrough_at_16k_returns_the_same_object() -> None:
    resampler = StreamResampler(PIPELINE_RATE)
    pcm = tone(PIPELINE_RATE, 0.1)
    assert resampler.process(pcm) is pcm
    assert resampler.flush() == b""
    assert resampler.process(b"") == b""


def test_empty_chunk_is_returned_as_is() -> None:
    resampler = StreamResampler(48000)
    assert resampler.process(b"") == b""


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000])
@pytest.mark.parametrize("chunk_samples", [37, 160, 1001])
def test_streamed_length_and_frequency(rate: int, chunk_samples: int) -> None:
    seconds = 1.0
    out = stream(StreamResampler(rate), tone(rate, seconds), chunk_samples)
    n = len(out) // 2
    assert len(out) % 2 == 0
    assert abs(n - seconds * PIPELINE_RATE) <= 4, n
    assert abs(peak_hz(out, PIPELINE_RATE) - 440.0) <= 1.0
    # the level survives too (no silence, no clipping garbage)
    rms = float(np.sqrt(np.mean(np.frombuffer(out, dtype="<i2").astype(np.float64) ** 2)))
    assert 12000 / np.sqrt(2) * 0.9 < rms < 12000 / np.sqrt(2) * 1.1


def test_flush_resets_the_stream_for_more_audio() -> None:
    resampler = StreamResampler(48000)
    first = stream(resampler, tone(48000, 0.5), 480)
    second = stream(resampler, tone(48000, 0.5), 480)
    assert abs(len(first) // 2 - 8000) <= 4
    assert abs(len(second) // 2 - 8000) <= 4
    assert resampler.flush() == b""  # nothing held after a flush


def test_flush_without_input() -> None:
    resampler = StreamResampler(22050)
    assert resampler.flush() == b""
    assert resampler.in_rate == 22050
