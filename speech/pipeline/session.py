"""The Sans-I/O streaming ASR session.

A plain object fed client frames (``receive_text``, ``receive_bytes``,
``end``) that returns the events they cause. It decodes and validates frames,
resamples to 16 kHz, runs the VAD segmenter and accounts for audio; it never
touches a socket, a clock or a recognizer. ``speech.api.asr_ws`` is the thin
bridge that sends the events on.

Events:

* :class:`SpeechStarted` - an utterance opened; open a recognizer stream.
* :class:`SpeechAudio` - 16 kHz PCM16 for the open utterance, in order.
* :class:`SpeechPaused` - (with ``pause_events``) the open utterance has
  forwarded its tail and waits for the silence window: its audio so far is
  final unless speech resumes; a recognizer may start decoding now.
* :class:`SpeechEnded` - the utterance is complete; ``forwarded_ms`` is
  exactly the audio sent in ``SpeechAudio`` events, ``received_ms`` the client
  audio received since the previous utterance ended.
* :class:`FrameRejected` - one bad frame; reply with the message and go on.
* :class:`SessionFailed` - the stream cannot go on (too many bad frames).
* :class:`CloseRequested` - the client sent ``{"type": "CloseStream"}``;
  every utterance is flushed before it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from speech.errors import InvalidFrame, ProtocolViolation, SpeechError
from speech.pipeline import codecs, frames
from speech.pipeline.resample import PIPELINE_RATE, StreamResampler
from speech.pipeline.vad import UtteranceAudio, UtteranceEnded, UtterancePaused, UtteranceStarted, VadSegmenter
from speech.settings import VadSettings


@dataclass(frozen=True, slots=True)
class SessionConfig:
    vad: VadSettings
    rate: int = 16000
    language_code: str = "en-US"
    max_frame_bytes: int = 1024 * 1024
    max_invalid_frames: int = 10
    encoding: str = "linear16"  # "linear16" | "mulaw" | "alaw"
    channels: int = 1  # 2 = interleaved stereo, downmixed to mono
    pause_events: bool = False  # emit SpeechPaused (see the module docstring)


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    utterance: int
    start_ms: int
    language_code: str


@dataclass(frozen=True, slots=True)
class SpeechPaused:
    utterance: int


@dataclass(frozen=True, slots=True)
class SpeechAudio:
    utterance: int
    pcm: bytes


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    utterance: int
    start_ms: int
    end_ms: int
    forwarded_ms: int
    received_ms: int
    reason: str


@dataclass(frozen=True, slots=True)
class FrameRejected:
    message: str


@dataclass(frozen=True, slots=True)
class SessionFailed:
    error: SpeechError


@dataclass(frozen=True, slots=True)
class CloseRequested:
    pass


@dataclass(frozen=True, slots=True)
class Configured:
    """A ``{"type": "Config", ...}`` frame was applied; ``options`` holds the
    fields the bridge itself handles (e.g. ``events``)."""

    options: dict[str, object]


@dataclass(frozen=True, slots=True)
class KeptAlive:
    """``{"type": "KeepAlive"}``: no audio, but the client is there."""


SessionEvent = (
    SpeechStarted
    | SpeechAudio
    | SpeechPaused
    | SpeechEnded
    | FrameRejected
    | SessionFailed
    | CloseRequested
    | Configured
    | KeptAlive
)

# Config-frame fields the session applies itself; any other field is handed
# to the bridge in a Configured event.
SESSION_OPTIONS = ("rate", "encoding", "channels", "language_code")


def check_format(encoding: str, channels: int) -> None:
    if encoding not in codecs.ENCODINGS:
        raise InvalidFrame(f"'encoding' must be one of {', '.join(codecs.ENCODINGS)}")
    if channels not in (1, 2):
        raise InvalidFrame("'channels' must be 1 or 2")


class AsrSession:
    def __init__(self, config: SessionConfig, is_speech: Callable[[bytes], bool] | None = None) -> None:
        frames.check_rate(config.rate)
        check_format(config.encoding, config.channels)
        self.config = config
        self.rate = config.rate
        self.encoding = config.encoding
        self.channels = config.channels
        self.language_code = config.language_code
        self._resampler = StreamResampler(self.rate)
        self._vad = VadSegmenter(config.vad, is_speech, pause_events=config.pause_events)
        self._invalid_run = 0
        self._received_us = 0  # client audio received, microseconds
        self._received_at_last_end = 0
        self.closed = False
        self.frames_accepted = 0

    @property
    def received_ms(self) -> int:
        return self._received_us // 1000

    # ------------------------------------------------------------ input

    def receive_text(self, text: str) -> list[SessionEvent]:
        if self.closed:
            return []
        try:
            msg = frames.parse_text_frame(text, self.config.max_frame_bytes, self._frame_bytes)
            if isinstance(msg, frames.Control) and msg.type == "Config":
                return self._configure(msg.fields or {})
        except InvalidFrame as exc:
            return self._reject(exc)
        self._invalid_run = 0
        if isinstance(msg, frames.Control):
            if msg.type == "CloseStream":
                return self.end(close_requested=True)
            if msg.type == "Finalize":
                return self.finalize()
            return [KeptAlive()]
        return self._audio(msg)

    def finalize(self) -> list[SessionEvent]:
        """Close the open utterance now (``{"type": "Finalize"}``); the stream goes on."""
        if self.closed:
            return []
        out = self._vad_events(self._vad.feed(self._resampler.flush()))
        return out + self._vad_events(self._vad.finalize())

    @property
    def _frame_bytes(self) -> int:
        return codecs.sample_bytes(self.encoding, self.channels)

    def _configure(self, fields: dict[str, object]) -> list[SessionEvent]:
        """Apply a Config frame: allowed only before the first audio."""
        if self.frames_accepted:
            raise InvalidFrame("a Config frame must come before any audio")
        encoding = fields.get("encoding", self.encoding)
        channels = fields.get("channels", self.channels)
        if not isinstance(encoding, str) or encoding not in codecs.ENCODINGS:
            raise InvalidFrame(f"'encoding' must be one of {', '.join(codecs.ENCODINGS)}")
        if channels not in (1, 2) or isinstance(channels, bool):
            raise InvalidFrame("'channels' must be 1 or 2")
        rate = frames.check_rate(fields["rate"]) if fields.get("rate") is not None else self.rate
        lang = fields.get("language_code", self.language_code)
        if not isinstance(lang, str) or not 0 < len(lang) <= 35:
            raise InvalidFrame("'language_code' must be a language tag such as 'en-US'")
        self.encoding, self.channels, self.language_code = encoding, int(channels), lang
        if rate != self.rate:
            self.rate = rate
            self._resampler = StreamResampler(rate)
        self._invalid_run = 0
        return [Configured({k: v for k, v in fields.items() if k not in SESSION_OPTIONS})]

    def receive_bytes(self, data: bytes) -> list[SessionEvent]:
        if self.closed:
            return []
        try:
            chunk = frames.parse_binary_frame(data, self.config.max_frame_bytes, self._frame_bytes)
        except InvalidFrame as exc:
            return self._reject(exc)
        self._invalid_run = 0
        return self._audio(chunk)

    def end(self, close_requested: bool = False) -> list[SessionEvent]:
        """Flush everything: the resampler, then any open utterance."""
        if self.closed:
            return []
        self.closed = True
        out = self._vad_events(self._vad.feed(self._resampler.flush()))
        out += self._vad_events(self._vad.flush())
        if close_requested:
            out.append(CloseRequested())
        return out

    def cap_utterance(self, utterance: int, ms: int) -> None:
        """Limit utterance ``utterance``, if still open, to ``ms`` of forwarded
        audio: the credit reserved for it. Past that it ends (reason
        ``budget``) and the next audio opens a new utterance."""
        if self._vad.open_index == utterance:
            self._vad.cap_open(ms)

    # ---------------------------------------------------------- helpers

    def _reject(self, exc: InvalidFrame) -> list[SessionEvent]:
        self._invalid_run += 1
        out: list[SessionEvent] = [FrameRejected(exc.message)]
        if self._invalid_run >= self.config.max_invalid_frames:
            self.closed = True
            out.append(
                SessionFailed(ProtocolViolation(f"closing after {self._invalid_run} consecutive invalid frames"))
            )
        return out

    def _audio(self, chunk: frames.AudioChunk) -> list[SessionEvent]:
        self.frames_accepted += 1
        if chunk.language_code is not None:
            self.language_code = chunk.language_code
        out: list[SessionEvent] = []
        if chunk.rate is not None and chunk.rate != self.rate:
            out += self._vad_events(self._vad.feed(self._resampler.flush()))
            self.rate = chunk.rate
            self._resampler = StreamResampler(self.rate)
        if not chunk.pcm:
            return out
        pcm = codecs.to_pcm16_mono(chunk.pcm, self.encoding, self.channels)
        self._received_us += len(pcm) // 2 * 1_000_000 // self.rate
        pcm16k = self._resampler.process(pcm) if self.rate != PIPELINE_RATE else pcm
        out += self._vad_events(self._vad.feed(pcm16k))
        return out

    def _vad_events(self, events: list) -> list[SessionEvent]:
        out: list[SessionEvent] = []
        for ev in events:
            if isinstance(ev, UtteranceAudio):
                out.append(SpeechAudio(ev.index, ev.pcm))
            elif isinstance(ev, UtteranceStarted):
                out.append(SpeechStarted(ev.index, ev.start_ms, self.language_code))
            elif isinstance(ev, UtterancePaused):
                out.append(SpeechPaused(ev.index))
            elif isinstance(ev, UtteranceEnded):
                received = (self._received_us - self._received_at_last_end) // 1000
                self._received_at_last_end = self._received_us
                out.append(SpeechEnded(ev.index, ev.start_ms, ev.end_ms, ev.forwarded_ms, received, ev.reason))
        return out
