"""Incremental encoding for streamed TTS: PCM in as it is synthesized, file bytes out.

:class:`StreamEncoder` is the streaming twin of :func:`speech.audio.encode.encode`:
feed it engine audio chunk by chunk with :meth:`push` and it returns the bytes
of the requested format that are ready; :meth:`finish` returns the tail. All
the pieces concatenated form one playable stream.

Decisions:

* Resampling uses a persistent ``soxr.ResampleStream`` (HQ), so chunk
  boundaries leave no clicks; if the input rate changes (a failover to an
  engine with another rate) the old resampler is flushed and a new one starts.
* ``wav_*`` / ``ulaw_8000`` / ``alaw_8000`` start with a *streaming* WAV header
  (sizes 0xFFFFFFFF: "until the end of the stream"), because the length is not
  known when the first bytes leave.
* ``mp3_*``, ``opus_*`` (Ogg, 100 ms pages) and ``flac_*`` are muxed by PyAV
  into a non-seekable sink, which is drained after every push, so nothing is
  rewritten afterwards (no Xing/LAME length tag; FLAC's total-samples field
  says "unknown").
* Chunks already in the output format (an engine that encodes natively, e.g.
  ElevenLabs' MP3) pass through untouched; that is offered only for formats
  whose streams may be concatenated (``mp3_*`` and ``pcm_*``), see
  :func:`native_ok`.
* An odd trailing byte of PCM (HTTP reads split anywhere) is carried to the
  next chunk, never dropped or misaligned.

The methods are synchronous and CPU-bound; async callers run them in a thread.
"""

from __future__ import annotations

from typing import Any

import av
import numpy as np
import soxr

from speech.audio.encode import OutputFormat, alaw_encode, ulaw_encode, wav_header
from speech.audio.resample import PCM16, array_to_pcm16
from speech.errors import UpstreamProtocolError

_WAV_TAGS = {"wav": (1, 16), "ulaw": (7, 8), "alaw": (6, 8)}
_AV = {"mp3": ("mp3", "libmp3lame"), "opus": ("ogg", "libopus"), "flac": ("flac", "flac")}


def native_ok(fmt: OutputFormat) -> bool:
    """Whether engines may hand this format back already encoded in a stream."""
    return fmt.codec in ("mp3", "pcm")


def pcm_rate(chunk_format: str, sample_rate: int) -> int | None:
    """The PCM rate of an engine chunk (``"pcm"`` or ``"pcm_<rate>"``), or None if encoded."""
    if chunk_format == "pcm":
        return sample_rate
    codec, _, rate = chunk_format.partition("_")
    if codec == "pcm" and rate.isdigit():
        return int(rate)
    return None


class _Sink:
    """A write-only, non-seekable file for PyAV: muxers append, we drain."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: Any) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


class StreamEncoder:
    def __init__(self, fmt: OutputFormat) -> None:
        self.fmt = fmt
        self._in_rate: int | None = None
        self._resampler: Any = None
        self._odd = b""
        self._started = False
        self._finished = False
        self._sink: _Sink | None = None
        self._container: Any = None
        self._stream: Any = None
        self._pts = 0
        self.samples_out = 0
        self._segments = 0
        # Bytes of a segment's head being checked for an ID3v2 tag, or None.
        self._id3: bytearray | None = None
        self._id3_skip = 0

    def new_segment(self) -> None:
        """The next chunks start another engine answer. For MP3 passed
        through, an ID3v2 tag at its head is dropped (after the first): an
        MP3 stream may hold one only at its start, and decoders stop at one
        in the middle."""
        self._segments += 1
        if self._segments > 1 and self.fmt.codec == "mp3":
            self._id3 = bytearray()
            self._id3_skip = 0

    # -- input -----------------------------------------------------------

    def push_chunk(self, data: bytes, chunk_format: str, sample_rate: int) -> bytes:
        """Take one engine chunk (PCM at a rate, or already ``fmt``) and return ready bytes."""
        rate = pcm_rate(chunk_format, sample_rate)
        if rate is not None:
            return self.push(data, rate)
        if chunk_format == self.fmt.name and native_ok(self.fmt):
            self._started = True
            if self._id3 is not None:
                return self._strip_id3(data)
            return data
        raise UpstreamProtocolError(f"engine returned audio in {chunk_format}, not {self.fmt.name} or PCM")

    def push(self, pcm: bytes, rate: int) -> bytes:
        """Encode PCM16LE mono ``pcm`` at ``rate`` Hz; return the bytes ready so far."""
        if self._finished:
            raise RuntimeError("push after finish")
        if rate <= 0:
            raise ValueError(f"sample rate must be positive, got {rate}")
        out = [self._header()]
        if self._in_rate is not None and rate != self._in_rate:
            out.append(self._encode(self._flush_resampler()))
            self._odd = b""
        self._set_rate(rate)
        data = self._odd + pcm
        cut = len(data) - len(data) % 2
        self._odd = data[cut:]
        samples = np.frombuffer(data[:cut], dtype=PCM16).astype(np.int16, copy=False)
        if self._resampler is not None and samples.size:
            samples = np.asarray(self._resampler.resample_chunk(samples), dtype=np.int16)
        out.append(self._encode(samples))
        return b"".join(out)

    def end_segment(self) -> bytes:
        """The end of one engine answer: flush the resampler so all of its
        audio leaves now (the next answer starts a fresh filter; answers are
        unrelated audio, so nothing should smear across the join). A codec
        may still hold back up to one frame (MP3: 1,152 samples), which
        leaves with the next audio or at :meth:`finish`."""
        if self._finished:
            raise RuntimeError("end_segment after finish")
        out = self._encode(self._flush_resampler())
        self._odd = b""
        return out

    def finish(self) -> bytes:
        """Flush the resampler and the codec; return the stream's last bytes."""
        if self._finished:
            return b""
        out = [self._header(), self._encode(self._flush_resampler())]
        self._finished = True
        if self._container is not None:
            if self.samples_out == 0:
                # A muxer writes nothing decodable without a packet: one silent sample.
                out.append(self._encode(np.zeros(1, dtype=np.int16)))
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
            assert self._sink is not None
            out.append(self._sink.take())
        return b"".join(out)

    # -- internals ---------------------------------------------------------

    def _strip_id3(self, data: bytes) -> bytes:
        if self._id3_skip:
            n = min(self._id3_skip, len(data))
            self._id3_skip -= n
            data = data[n:]
            if self._id3_skip:
                return b""
            self._id3 = None
            return data
        assert self._id3 is not None
        head = bytes(self._id3) + data
        if len(head) < 10 and b"ID3"[: len(head)] == head[:3]:
            self._id3 = bytearray(head)  # too short to tell yet
            return b""
        self._id3 = None
        if head[:3] != b"ID3" or len(head) < 10:
            return head
        # Header: "ID3", version (2), flags (1), size (4 x 7-bit), footer flag adds 10.
        size = (head[6] << 21) | (head[7] << 14) | (head[8] << 7) | head[9]
        total = 10 + size + (10 if head[5] & 0x10 else 0)
        if len(head) >= total:
            return head[total:]
        self._id3 = bytearray()
        self._id3_skip = total - len(head)
        return b""

    def _set_rate(self, rate: int) -> None:
        if rate == self._in_rate:
            return
        self._in_rate = rate
        self._resampler = (
            None
            if rate == self.fmt.sample_rate
            else soxr.ResampleStream(rate, self.fmt.sample_rate, 1, dtype="int16", quality="HQ")
        )

    def _flush_resampler(self) -> np.ndarray:
        if self._resampler is None:
            return np.zeros(0, dtype=np.int16)
        tail = np.asarray(self._resampler.resample_chunk(np.zeros(0, dtype=np.int16), last=True), dtype=np.int16)
        self._resampler = None
        self._in_rate = None
        return tail

    def _header(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        codec = self.fmt.codec
        if codec in _WAV_TAGS:
            tag, bits = _WAV_TAGS[codec]
            return wav_header(self.fmt.sample_rate, format_tag=tag, bits=bits, data_len=None)
        if codec in _AV:
            container, encoder = _AV[codec]
            self._sink = _Sink()
            options = {"page_duration": "100000"} if container == "ogg" else {}
            self._container = av.open(self._sink, mode="w", format=container, options=options)
            self._stream = self._container.add_stream(encoder, rate=self.fmt.sample_rate, layout="mono")
            if self.fmt.bitrate:
                self._stream.bit_rate = self.fmt.bitrate
        return b""

    def _encode(self, samples: np.ndarray) -> bytes:
        if samples.size == 0:
            return b""
        self.samples_out += int(samples.size)
        codec = self.fmt.codec
        if codec in ("pcm", "wav"):
            return array_to_pcm16(samples)
        if codec == "ulaw":
            return ulaw_encode(samples).tobytes()
        if codec == "alaw":
            return alaw_encode(samples).tobytes()
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples, dtype=np.int16).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = self.fmt.sample_rate
        frame.pts = self._pts
        self._pts += int(samples.size)
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        assert self._sink is not None
        return self._sink.take()
