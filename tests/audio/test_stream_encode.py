"""Tests for speech.audio.stream_encode: a stream pushed in ragged pieces decodes to the input."""

from __future__ import annotations

import io
import wave

import av
import numpy as np
import pytest

from speech.audio.encode import SUPPORTED_FORMATS, encode, flac_format, parse_output_format
from speech.audio.stream_encode import StreamEncoder, native_ok, pcm_rate
from speech.errors import UpstreamProtocolError

ENGINE_RATE = 22050
TONE_HZ = 440.0


def _sine(rate: int = ENGINE_RATE, seconds: float = 1.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * TONE_HZ * t) * 0.5 * 32767).astype("<i2").tobytes()


def _decode(data: bytes) -> tuple[int, np.ndarray]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        chunks = [frame.to_ndarray().reshape(-1) for frame in container.decode(stream)]
        rate = stream.codec_context.sample_rate
    samples = np.concatenate(chunks) if chunks else np.zeros(0)
    if samples.dtype == np.int16:
        samples = samples / 32768.0
    return rate, samples.astype(np.float64)


def _dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


def _ragged(data: bytes, seed: int = 7) -> list[bytes]:
    """Split into random pieces, most of them of odd length."""
    rng = np.random.default_rng(seed)
    out, i = [], 0
    while i < len(data):
        n = int(rng.integers(1, 5000)) | 1
        out.append(data[i : i + n])
        i += n
    return out


def _stream(fmt_name: str, pcm: bytes, rate: int = ENGINE_RATE) -> bytes:
    fmt = flac_format(rate) if fmt_name == "flac" else parse_output_format(fmt_name)
    enc = StreamEncoder(fmt)
    return b"".join(enc.push(piece, rate) for piece in _ragged(pcm)) + enc.finish()


@pytest.mark.parametrize("name", [*SUPPORTED_FORMATS, "flac"])
def test_every_format_streams_to_a_decodable_file_of_the_same_sound(name: str) -> None:
    pcm = _sine(seconds=1.0) + _sine(seconds=0.5)
    data = _stream(name, pcm)
    fmt = flac_format(ENGINE_RATE) if name == "flac" else parse_output_format(name)
    if fmt.codec == "pcm":
        samples = np.frombuffer(data, dtype="<i2") / 32768.0
        rate = fmt.sample_rate
    else:
        rate, samples = _decode(data)
    assert rate == fmt.sample_rate
    expected = 1.5 * fmt.sample_rate
    assert abs(len(samples) - expected) <= 0.05 * expected, (len(samples), expected)
    lossy = fmt.codec in ("mp3", "opus") or fmt.sample_rate < 2 * TONE_HZ * 4
    assert abs(_dominant_hz(samples, rate) - TONE_HZ) < (5 if not lossy else 15)


@pytest.mark.parametrize("name", ["pcm_16000", "wav_44100", "ulaw_8000", "alaw_8000", "pcm_22050"])
def test_sample_formats_match_one_shot_encoding(name: str) -> None:
    """Streaming resampling is continuous: the stream equals the one-shot file's samples."""
    pcm = _sine(seconds=2.0)
    fmt = parse_output_format(name)
    streamed = _stream(name, pcm)
    whole = encode(pcm, ENGINE_RATE, fmt)
    header = 0 if fmt.codec == "pcm" else len(whole) - len(whole[whole.index(b"data") + 8 :])
    a = np.frombuffer(streamed[header:], dtype=np.uint8 if fmt.codec in ("ulaw", "alaw") else "<i2").astype(float)
    b = np.frombuffer(whole[header:], dtype=np.uint8 if fmt.codec in ("ulaw", "alaw") else "<i2").astype(float)
    assert abs(len(a) - len(b)) <= 2
    n = min(len(a), len(b)) - 200
    if fmt.codec in ("ulaw", "alaw"):
        assert np.mean(a[200:n] == b[200:n]) > 0.9
    else:
        assert np.max(np.abs(a[200:n] - b[200:n])) <= 64


def test_streaming_wav_header_says_until_the_end_and_python_reads_it() -> None:
    data = _stream("wav_16000", _sine(seconds=1.0))
    assert data[4:8] == b"\xff\xff\xff\xff"
    assert data[data.index(b"data") + 4 : data.index(b"data") + 8] == b"\xff\xff\xff\xff"
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        frames = w.readframes(10**6)
    assert abs(len(frames) // 2 - 16000) <= 2


def test_the_first_bytes_leave_before_the_end() -> None:
    """Each push returns audio (the point of streaming); mp3 and opus included."""
    for name in ("mp3_44100_128", "opus_48000_64", "wav_22050", "pcm_16000"):
        enc = StreamEncoder(parse_output_format(name))
        first = enc.push(_sine(seconds=1.0), ENGINE_RATE)
        assert len(first) > 500, name
        enc.finish()


def test_an_empty_stream_is_still_a_playable_file() -> None:
    for name in ("mp3_44100_128", "opus_48000_64", "wav_22050"):
        enc = StreamEncoder(parse_output_format(name))
        data = enc.finish()
        rate, _ = _decode(data)
        assert rate == parse_output_format(name).sample_rate
    assert StreamEncoder(parse_output_format("pcm_16000")).finish() == b""


def test_a_change_of_input_rate_mid_stream_is_resampled_not_garbled() -> None:
    """Failover to an engine with another rate: both halves come out at the output rate."""
    enc = StreamEncoder(parse_output_format("pcm_16000"))
    out = enc.push(_sine(22050, 1.0), 22050) + enc.push(_sine(24000, 1.0), 24000) + enc.finish()
    samples = np.frombuffer(out, dtype="<i2") / 32768.0
    assert abs(len(samples) - 32000) <= 4
    assert abs(_dominant_hz(samples[:16000], 16000) - TONE_HZ) < 5
    assert abs(_dominant_hz(samples[16000:], 16000) - TONE_HZ) < 5


def test_native_chunks_pass_through_only_in_concatenable_formats() -> None:
    mp3 = parse_output_format("mp3_44100_128")
    enc = StreamEncoder(mp3)
    assert enc.push_chunk(b"\xff\xfb\x90\x00abc", "mp3_44100_128", 44100) == b"\xff\xfb\x90\x00abc"
    assert native_ok(mp3) and native_ok(parse_output_format("pcm_16000"))
    assert not native_ok(parse_output_format("wav_16000")) and not native_ok(parse_output_format("opus_48000_64"))
    with pytest.raises(UpstreamProtocolError, match="opus_48000_64"):
        StreamEncoder(parse_output_format("wav_16000")).push_chunk(b"x", "opus_48000_64", 48000)
    # PCM by name is PCM at that rate.
    enc = StreamEncoder(parse_output_format("pcm_16000"))
    assert len(enc.push_chunk(_sine(16000, 0.1), "pcm_16000", 16000)) == 3200


def test_pcm_rate_names() -> None:
    assert pcm_rate("pcm", 22050) == 22050
    assert pcm_rate("pcm_16000", 1) == 16000
    assert pcm_rate("mp3_44100_128", 44100) is None
    assert pcm_rate("pcm_x", 1) is None


def test_mp3_segments_passed_through_lose_their_id3_tag_after_the_first() -> None:
    """Concatenated engine answers must stay one decodable MP3 stream."""
    fmt = parse_output_format("mp3_44100_128")
    one = encode(_sine(44100, 0.5), 44100, fmt)
    assert one[:3] == b"ID3"
    for split in (1, 5, 11, 40, len(one)):
        enc = StreamEncoder(fmt)
        out = b""
        for _ in range(3):
            enc.new_segment()
            for i in range(0, len(one), split):
                out += enc.push_chunk(one[i : i + split], fmt.name, 44100)
        out += enc.finish()
        assert out.count(b"ID3") == 1, split
        rate, samples = _decode(out)
        # Each answer keeps its encoder delay and padding (~2,500 samples): MP3 has no gapless joins.
        assert rate == 44100 and 0 <= len(samples) - 3 * 0.5 * 44100 < 3 * 3000
    # Not a tag: passed on untouched.
    enc = StreamEncoder(fmt)
    enc.new_segment()
    enc.new_segment()
    assert enc.push_chunk(b"I", fmt.name, 44100) == b""
    assert enc.push_chunk(b"Dx\xff\xfb", fmt.name, 44100) == b"IDx\xff\xfb"


def test_end_segment_releases_all_of_a_segments_samples() -> None:
    enc = StreamEncoder(parse_output_format("pcm_16000"))
    out = enc.push(_sine(22050, 1.0), 22050)
    assert len(out) < 32000  # the resampler holds back its filter delay...
    out += enc.end_segment()
    assert abs(len(out) - 32000) <= 4  # ...until the segment ends
    out += enc.push(_sine(22050, 1.0), 22050) + enc.end_segment() + enc.finish()
    assert abs(len(out) - 64000) <= 8
