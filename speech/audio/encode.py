"""Encode engine PCM into the ``output_format`` a TTS client asked for.

Formats are named exactly as ElevenLabs names them (``mp3_44100_128``,
``pcm_16000``, ``ulaw_8000`` ...); :data:`SUPPORTED_FORMATS` lists them all and
anything else raises :class:`~speech.errors.UnsupportedOutputFormat`.

Decisions:

* Input is mono PCM16LE ``bytes`` at the engine's rate. It is resampled with
  soxr (HQ) to the format's rate when they differ; no samples are dropped.
* ``pcm_*``: raw PCM16LE mono, no header (the one format that is not a
  complete file, as with ElevenLabs).
* ``wav_*``: a RIFF/WAVE PCM16 mono file.
* ``ulaw_8000`` / ``alaw_8000``: G.711 at 8 kHz, encoded here with numpy
  following the ITU-T G.191 reference (``audioop`` is gone in Python 3.13), and
  wrapped in a WAV container (format tag 7 / 6, with a ``fact`` chunk) so that
  ordinary players can open it.
* ``mp3_*``: PyAV/libmp3lame in an MP3 container at the named rate and bitrate;
  ``opus_*``: PyAV/libopus in an Ogg container at 48 kHz. The encoder is
  flushed, and the muxer writes gapless metadata (LAME tag / Ogg pre-skip) so a
  decoder returns the exact sample count.
* FLAC is not an ElevenLabs format, so it is not in :data:`SUPPORTED_FORMATS`
  and :func:`parse_output_format` refuses it; :func:`flac_format` builds one
  (``flac_<rate>``, PyAV's native FLAC encoder in a FLAC container: lossless,
  exact sample count) for callers with their own format names, such as the
  OpenAI-compatible ``/v1/audio/speech``.
* Empty input still yields a playable file: an empty WAV, an empty body for
  ``pcm_*``, and for MP3/Opus (whose muxers write nothing decodable without a
  packet) a single silent sample.
* :func:`encode` is synchronous and pure; callers run it in a thread pool.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import av
import numpy as np

from speech.audio.resample import array_to_pcm16, pcm16_to_array, resample
from speech.errors import UnsupportedOutputFormat

__all__ = ["SUPPORTED_FORMATS", "OutputFormat", "encode", "flac_format", "parse_output_format", "wav_header"]


@dataclass(frozen=True)
class OutputFormat:
    """One accepted ``output_format`` value, parsed."""

    name: str  # the exact string, e.g. "mp3_44100_128"
    codec: str  # "mp3" | "pcm" | "wav" | "ulaw" | "alaw" | "opus" | "flac"
    sample_rate: int
    bitrate: int | None  # bits per second for mp3/opus, else None
    content_type: str


SUPPORTED_FORMATS: tuple[str, ...] = (
    "mp3_22050_32",
    "mp3_44100_32",
    "mp3_44100_64",
    "mp3_44100_96",
    "mp3_44100_128",
    "mp3_44100_192",
    "pcm_8000",
    "pcm_16000",
    "pcm_22050",
    "pcm_24000",
    "pcm_44100",
    "pcm_48000",
    "wav_8000",
    "wav_16000",
    "wav_22050",
    "wav_24000",
    "wav_44100",
    "wav_48000",
    "ulaw_8000",
    "alaw_8000",
    "opus_48000_32",
    "opus_48000_64",
    "opus_48000_96",
    "opus_48000_128",
    "opus_48000_192",
)

_CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "ulaw": "audio/wav",
    "alaw": "audio/wav",
    "opus": "audio/ogg",
    "flac": "audio/flac",
}


def _build(name: str) -> OutputFormat:
    codec, rate, *kbps = name.split("_")
    sample_rate = int(rate)
    if codec == "pcm":
        content_type = f"audio/L16;rate={sample_rate};channels=1"
    else:
        content_type = _CONTENT_TYPES[codec]
    bitrate = int(kbps[0]) * 1000 if kbps else None
    return OutputFormat(name, codec, sample_rate, bitrate, content_type)


_FORMATS: dict[str, OutputFormat] = {name: _build(name) for name in SUPPORTED_FORMATS}


def parse_output_format(name: str) -> OutputFormat:
    """Look up an ``output_format`` by its exact (case-sensitive) name."""
    fmt = _FORMATS.get(name) if isinstance(name, str) else None
    if fmt is None:
        shown = repr(name)
        if len(shown) > 40:
            shown = shown[:37] + "..."
        raise UnsupportedOutputFormat(f"unsupported output_format {shown}; supported: {', '.join(SUPPORTED_FORMATS)}")
    return fmt


def flac_format(sample_rate: int) -> OutputFormat:
    """A FLAC output at ``sample_rate`` Hz (not an ElevenLabs format; see the module docstring)."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or not 1 <= sample_rate <= 655350:
        raise ValueError(f"FLAC sample rate must be an integer from 1 to 655350 Hz, got {sample_rate!r}")
    return _build(f"flac_{sample_rate}")


def encode(pcm: bytes, rate: int, fmt: OutputFormat) -> bytes:
    """Encode mono PCM16LE ``pcm`` sampled at ``rate`` Hz into ``fmt``.

    Raises :class:`ValueError` for an odd byte count or a non-positive rate.
    """
    samples = resample(pcm16_to_array(pcm), rate, fmt.sample_rate)
    if fmt.codec == "pcm":
        return array_to_pcm16(samples)
    if fmt.codec == "wav":
        return _wav(array_to_pcm16(samples), fmt.sample_rate, format_tag=1, bits=16)
    if fmt.codec == "ulaw":
        return _wav(ulaw_encode(samples).tobytes(), fmt.sample_rate, format_tag=7, bits=8)
    if fmt.codec == "alaw":
        return _wav(alaw_encode(samples).tobytes(), fmt.sample_rate, format_tag=6, bits=8)
    if fmt.codec == "mp3":
        return _av_encode(samples, fmt, container="mp3", codec="libmp3lame")
    if fmt.codec == "opus":
        return _av_encode(samples, fmt, container="ogg", codec="libopus")
    if fmt.codec == "flac":
        return _flac(samples, fmt.sample_rate)
    raise UnsupportedOutputFormat(f"unsupported output_format {fmt.name!r}")  # pragma: no cover


# --- WAV -------------------------------------------------------------------


def _wav(data: bytes, rate: int, *, format_tag: int, bits: int) -> bytes:
    """A mono RIFF/WAVE file. Non-PCM tags get the 18-byte ``fmt`` and a ``fact`` chunk."""
    return wav_header(rate, format_tag=format_tag, bits=bits, data_len=len(data)) + data + b"\0" * (len(data) % 2)


def wav_header(rate: int, *, format_tag: int, bits: int, data_len: int | None) -> bytes:
    """The RIFF/WAVE header up to the ``data`` chunk's size field.

    ``data_len=None`` writes a *streaming* header whose RIFF and data sizes are
    0xFFFFFFFF ("until the end of the stream"), as streaming servers do when
    the length is not known yet; ffmpeg, browsers and Python's ``wave`` read it.
    """
    block_align = bits // 8
    fmt_body = struct.pack("<HHIIHH", format_tag, 1, rate, rate * block_align, block_align, bits)
    chunks = [b"fmt ", struct.pack("<I", len(fmt_body) + (2 if format_tag != 1 else 0)), fmt_body]
    if format_tag != 1:
        frames = 0xFFFFFFFF if data_len is None else data_len // block_align
        chunks += [struct.pack("<H", 0), b"fact", struct.pack("<II", 4, frames)]
    size = 0xFFFFFFFF if data_len is None else data_len
    chunks += [b"data", struct.pack("<I", size)]
    body_len = 4 + sum(len(c) for c in chunks) + (0 if data_len is None else data_len + data_len % 2)
    riff = 0xFFFFFFFF if data_len is None else body_len
    return b"RIFF" + struct.pack("<I", riff) + b"WAVE" + b"".join(chunks)


# --- G.711 (ITU-T G.711, bit-exact with the G.191 reference implementation) --


def _bit_length(values: np.ndarray) -> np.ndarray:
    """Vectorised ``int.bit_length`` for non-negative integers below 2**24."""
    return np.frexp(values.astype(np.float64))[1].astype(np.int32)


def ulaw_encode(samples: np.ndarray) -> np.ndarray:
    """Encode ``int16`` samples to G.711 mu-law bytes (``uint8``)."""
    x = samples.astype(np.int32)
    # 14-bit magnitude plus the mu-law bias of 33; negatives use one's complement.
    mag = np.minimum(np.where(x < 0, (~x) >> 2, x >> 2) + 33, 0x1FFF)
    seg = _bit_length(mag) - 5  # 1..8
    code = ((8 - seg) << 4) | (15 - ((mag >> seg) & 0x0F))
    return (code | np.where(x >= 0, 0x80, 0)).astype(np.uint8)


def alaw_encode(samples: np.ndarray) -> np.ndarray:
    """Encode ``int16`` samples to G.711 A-law bytes (``uint8``)."""
    x = samples.astype(np.int32)
    mag = np.where(x < 0, (~x) >> 4, x >> 4)  # 12-bit magnitude, 0..2047
    bl = _bit_length(mag)
    code = np.where(mag < 16, mag, ((bl - 4) << 4) | ((mag >> np.maximum(bl - 5, 0)) & 0x0F))
    return ((code | np.where(x >= 0, 0x80, 0)) ^ 0x55).astype(np.uint8)


# --- MP3 / Opus via PyAV ---------------------------------------------------


def _av_encode(samples: np.ndarray, fmt: OutputFormat, *, container: str, codec: str) -> bytes:
    if samples.size == 0:
        samples = np.zeros(1, dtype=np.int16)  # see module docstring: keep the file decodable
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container) as out:
        stream = out.add_stream(codec, rate=fmt.sample_rate, layout="mono")
        stream.bit_rate = fmt.bitrate
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples, dtype=np.int16).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = fmt.sample_rate
        frame.pts = 0
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):  # flush: the encoder holds the tail
            out.mux(packet)
    return buf.getvalue()


def _flac(samples: np.ndarray, rate: int) -> bytes:
    """Lossless FLAC; empty input gives a valid file of zero samples."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="flac") as out:
        stream = out.add_stream("flac", rate=rate, layout="mono")
        if samples.size:
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(samples, dtype=np.int16).reshape(1, -1), format="s16", layout="mono"
            )
            frame.sample_rate = rate
            frame.pts = 0
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()
