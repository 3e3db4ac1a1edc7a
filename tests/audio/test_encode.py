"""Tests for speech.audio.encode: every ElevenLabs output_format decodes back to the input."""

from __future__ import annotations

import io
import struct

import av
import numpy as np
import pytest

from speech.audio.encode import (
    SUPPORTED_FORMATS,
    OutputFormat,
    alaw_encode,
    encode,
    flac_format,
    parse_output_format,
    ulaw_encode,
)
from speech.audio.resample import pcm16_to_array, resample
from speech.errors import BadRequest, UnsupportedOutputFormat

ENGINE_RATE = 22050
TONE_HZ = 440.0


def _sine(rate: int = ENGINE_RATE, seconds: float = 1.0, amplitude: float = 0.5) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * TONE_HZ * t) * amplitude * 32767).astype("<i2").tobytes()


SINE = _sine()


def _decode(data: bytes) -> tuple[str, str, int, np.ndarray]:
    """Decode a complete file with PyAV: (container, codec, rate, float samples in [-1, 1])."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        chunks = [frame.to_ndarray().reshape(-1) for frame in container.decode(stream)]
        codec, rate = stream.codec_context.name, stream.codec_context.sample_rate
        fmt_name = container.format.name
    samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    if samples.dtype == np.int16:
        samples = samples / 32768.0
    return fmt_name, codec, rate, samples.astype(np.float64)


def _dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


def _pcm_floats(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2") / 32768.0


# --- parsing ---------------------------------------------------------------


def test_supported_formats_is_elevenlabs_list() -> None:
    assert len(SUPPORTED_FORMATS) == len(set(SUPPORTED_FORMATS)) == 25
    assert "mp3_44100_128" in SUPPORTED_FORMATS and "ulaw_8000" in SUPPORTED_FORMATS


@pytest.mark.parametrize("name", SUPPORTED_FORMATS)
def test_parse_every_supported_name(name: str) -> None:
    fmt = parse_output_format(name)
    assert isinstance(fmt, OutputFormat)
    assert fmt.name == name
    assert fmt.codec == name.split("_")[0]
    assert fmt.sample_rate == int(name.split("_")[1])
    if fmt.codec in ("mp3", "opus"):
        assert fmt.bitrate == int(name.split("_")[2]) * 1000
    else:
        assert fmt.bitrate is None


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("mp3_44100_128", "audio/mpeg"),
        ("mp3_22050_32", "audio/mpeg"),
        ("wav_16000", "audio/wav"),
        ("ulaw_8000", "audio/wav"),
        ("alaw_8000", "audio/wav"),
        ("opus_48000_64", "audio/ogg"),
        ("pcm_16000", "audio/L16;rate=16000;channels=1"),
        ("pcm_44100", "audio/L16;rate=44100;channels=1"),
    ],
)
def test_content_types(name: str, content_type: str) -> None:
    assert parse_output_format(name).content_type == content_type


def test_opus_is_48k() -> None:
    assert {parse_output_format(n).sample_rate for n in SUPPORTED_FORMATS if n.startswith("opus")} == {48000}


@pytest.mark.parametrize(
    "bad",
    [
        "mp3_1_2",
        "MP3_44100_128",
        "Mp3_44100_128",
        "mp3_44100",
        "mp3_44100_128 ",
        " pcm_16000",
        "pcm_11025",
        "ulaw_16000",
        "opus_24000_32",
        "wav",
        "",
        None,
        123,
        b"mp3_44100_128",
        ["mp3_44100_128"],
    ],
)
def test_parse_rejects(bad: object) -> None:
    with pytest.raises(UnsupportedOutputFormat) as info:
        parse_output_format(bad)  # type: ignore[arg-type]
    message = str(info.value)
    assert repr(bad) in message
    assert "supported:" in message and "mp3_44100_128" in message
    assert isinstance(info.value, BadRequest) and info.value.status == 400


def test_parse_truncates_long_values() -> None:
    bad = "x" * 500
    with pytest.raises(UnsupportedOutputFormat) as info:
        parse_output_format(bad)
    shown = str(info.value).split(";")[0]
    assert "xxxx" in shown and len(shown) < 80


# --- encoding every format -------------------------------------------------


@pytest.mark.parametrize("name", [n for n in SUPPORTED_FORMATS if n.startswith("pcm_")])
def test_pcm_is_raw_samples_at_rate(name: str) -> None:
    fmt = parse_output_format(name)
    data = encode(SINE, ENGINE_RATE, fmt)
    assert abs(len(data) - 2 * fmt.sample_rate) <= 4
    samples = _pcm_floats(data)
    assert np.sqrt(np.mean(samples**2)) > 0.3
    assert abs(_dominant_hz(samples, fmt.sample_rate) - TONE_HZ) < 3


@pytest.mark.parametrize("name", [n for n in SUPPORTED_FORMATS if not n.startswith("pcm_")])
def test_file_formats_decode_back(name: str) -> None:
    fmt = parse_output_format(name)
    data = encode(SINE, ENGINE_RATE, fmt)
    container, codec, rate, samples = _decode(data)
    expected = {
        "mp3": ("mp3", {"mp3", "mp3float"}),
        "opus": ("ogg", {"opus", "libopus"}),
        "wav": ("wav", {"pcm_s16le"}),
        "ulaw": ("wav", {"pcm_mulaw"}),
        "alaw": ("wav", {"pcm_alaw"}),
    }[fmt.codec]
    assert container == expected[0]
    assert codec in expected[1]
    assert rate == fmt.sample_rate
    assert abs(len(samples) / rate - 1.0) < 0.06
    assert np.sqrt(np.mean(samples**2)) > 0.2  # a 0.5-amplitude sine has RMS 0.35
    assert abs(_dominant_hz(samples, rate) - TONE_HZ) < 5


@pytest.mark.parametrize("name", [n for n in SUPPORTED_FORMATS if n.startswith("wav_")])
def test_wav_holds_exactly_the_pcm(name: str) -> None:
    fmt = parse_output_format(name)
    pcm = encode(SINE, ENGINE_RATE, parse_output_format(f"pcm_{fmt.sample_rate}"))
    _, _, _, samples = _decode(encode(SINE, ENGINE_RATE, fmt))
    np.testing.assert_array_equal(samples, _pcm_floats(pcm))


@pytest.mark.parametrize(("name", "tag"), [("ulaw_8000", 7), ("alaw_8000", 6)])
def test_g711_wav_layout_and_fidelity(name: str, tag: int) -> None:
    data = encode(SINE, ENGINE_RATE, parse_output_format(name))
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    assert struct.unpack("<I", data[4:8])[0] == len(data) - 8
    assert data[12:16] == b"fmt " and struct.unpack("<I", data[16:20])[0] == 18
    format_tag, channels, rate, byte_rate, align, bits, cb = struct.unpack("<HHIIHHH", data[20:38])
    assert (format_tag, channels, rate, byte_rate, align, bits, cb) == (tag, 1, 8000, 8000, 1, 8, 0)
    assert data[38:42] == b"fact" and struct.unpack("<II", data[42:50]) == (4, 8000)
    assert data[50:54] == b"data" and struct.unpack("<I", data[54:58])[0] == 8000
    assert len(data) == 58 + 8000
    # Decodes to the same signal as the 8 kHz linear PCM, within G.711's ~38 dB SNR.
    reference = _pcm_floats(encode(SINE, ENGINE_RATE, parse_output_format("pcm_8000")))
    _, _, _, decoded = _decode(data)
    noise = decoded - reference
    snr_db = 10 * np.log10(np.sum(reference**2) / np.sum(noise**2))
    assert snr_db > 30


def test_no_resample_when_rates_match() -> None:
    assert encode(SINE, ENGINE_RATE, parse_output_format("pcm_22050")) == SINE


@pytest.mark.parametrize(("rate", "target"), [(22050, "pcm_48000"), (24000, "pcm_8000"), (16000, "pcm_44100")])
def test_resampling_keeps_every_sample(rate: int, target: str) -> None:
    fmt = parse_output_format(target)
    data = encode(_sine(rate, seconds=0.5), rate, fmt)
    assert len(data) == 2 * round(0.5 * fmt.sample_rate)


def test_odd_length_pcm_raises() -> None:
    with pytest.raises(ValueError, match="even"):
        encode(SINE[:-1], ENGINE_RATE, parse_output_format("wav_16000"))


@pytest.mark.parametrize("name", SUPPORTED_FORMATS)
def test_empty_input_gives_valid_output(name: str) -> None:
    fmt = parse_output_format(name)
    data = encode(b"", ENGINE_RATE, fmt)
    if fmt.codec == "pcm":
        assert data == b""
        return
    container, _, rate, samples = _decode(data)
    assert rate == fmt.sample_rate
    assert len(samples) / rate < 0.05
    if fmt.codec in ("wav", "ulaw", "alaw"):
        assert container == "wav" and len(samples) == 0
    assert not np.any(np.abs(samples) > 0.01)  # silence


# --- FLAC (not an ElevenLabs format: for the OpenAI-compatible API) --------


def test_flac_is_not_an_elevenlabs_output_format() -> None:
    assert not any(name.startswith("flac") for name in SUPPORTED_FORMATS)
    with pytest.raises(UnsupportedOutputFormat):
        parse_output_format("flac_24000")
    fmt = flac_format(24000)
    assert (fmt.name, fmt.codec, fmt.sample_rate, fmt.bitrate, fmt.content_type) == (
        "flac_24000",
        "flac",
        24000,
        None,
        "audio/flac",
    )


@pytest.mark.parametrize("rate", [24000, ENGINE_RATE, 16000, 48000])
def test_flac_is_lossless_at_its_rate(rate: int) -> None:
    data = encode(SINE, ENGINE_RATE, flac_format(rate))
    assert data[:4] == b"fLaC"
    container, codec, got_rate, samples = _decode(data)
    assert (container, codec, got_rate) == ("flac", "flac", rate)
    expected = resample(pcm16_to_array(SINE), ENGINE_RATE, rate)
    assert len(samples) == len(expected)  # exact sample count, no padding
    assert np.array_equal(np.round(samples * 32768).astype(np.int16), expected)
    assert abs(_dominant_hz(samples, rate) - TONE_HZ) < 2


def test_flac_empty_input_is_a_valid_file_of_no_samples() -> None:
    container, _, rate, samples = _decode(encode(b"", ENGINE_RATE, flac_format(24000)))
    assert (container, rate, len(samples)) == ("flac", 24000, 0)


@pytest.mark.parametrize("bad", [0, -1, 655351, 24000.0, "24000", True, None])
def test_flac_format_rejects_bad_rates(bad: object) -> None:
    with pytest.raises(ValueError, match="FLAC sample rate"):
        flac_format(bad)  # type: ignore[arg-type]


# --- G.711 against the ITU-T G.191 reference code (scalar port) -------------


def _ref_ulaw(x: int) -> int:
    absno = (((~x) >> 2) + 33) if x < 0 else ((x >> 2) + 33)
    absno = min(absno, 0x1FFF)
    i, segno = absno >> 6, 1
    while i:
        segno, i = segno + 1, i >> 1
    out = ((8 - segno) << 4) | (15 - ((absno >> segno) & 0x0F))
    return out | 0x80 if x >= 0 else out


def _ref_alaw(x: int) -> int:
    ix = ((~x) >> 4) if x < 0 else (x >> 4)
    if ix > 15:
        iexp = 1
        while ix > 16 + 15:
            ix, iexp = ix >> 1, iexp + 1
        ix = ix - 16 + (iexp << 4)
    if x >= 0:
        ix |= 0x80
    return ix ^ 0x55


def test_g711_bit_exact_with_itu_reference() -> None:
    every = np.arange(-32768, 32768, dtype=np.int16)
    ulaw, alaw = ulaw_encode(every), alaw_encode(every)
    assert ulaw.dtype == alaw.dtype == np.uint8
    assert ulaw.tolist() == [_ref_ulaw(int(v)) for v in every]
    assert alaw.tolist() == [_ref_alaw(int(v)) for v in every]
    # Well-known code points: silence and full scale.
    assert ulaw_encode(np.array([0, 32767, -32768], np.int16)).tolist() == [0xFF, 0x80, 0x00]
    assert alaw_encode(np.array([0, 32767, -32768], np.int16)).tolist() == [0xD5, 0xAA, 0x2A]
