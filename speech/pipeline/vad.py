"""Voice activity segmentation: a small synchronous state machine.

Fed 16 kHz PCM16 mono in chunks of any size, it scores whole frames
(``frame_ms``, 10/20/30 ms) with a pluggable ``is_speech`` function (webrtcvad
by default) and walks::

    QUIET ──voiced──► STARTING ──voiced ≥ start_ms──► SPEAKING ◄──voiced── STOPPING
      ▲                  │ unvoiced run ≥ start_ms        │ unvoiced          │
      └──────────────────┘                                └──────►───────────┘
      ▲                                   silence ≥ silence_ms                │
      └──────────────────────────────────────────────────────────────────────┘

What is forwarded to the recognizer:

* on start, up to ``preroll_ms`` of audio from before the first voiced frame,
  then every frame from that one on;
* pauses shorter than ``silence_ms`` inside an utterance (held while
  STOPPING, released when speech resumes);
* at the end, only the first ``tail_ms`` of the closing silence; the rest
  is never sent. Silence between utterances is never sent. Those tail frames
  are forwarded as soon as they arrive (whether speech resumes or the
  utterance ends, they are sent either way), and once they are all out and
  half the silence window has passed, an :class:`UtterancePaused` event
  (``pause_events``) says "nothing more until speech resumes or the window
  closes": a recognizer may start decoding then, and its result is the final
  one if the utterance ends without more audio.
* an utterance reaching ``max_utterance_ms`` of forwarded audio is closed
  (reason ``max_length``) and the next frame opens a new one without pre-roll,
  so no audio is sent twice and none is lost. :meth:`VadSegmenter.cap_open`
  can lower that cap for the open utterance (the credit reserved for it);
  reaching it closes the utterance with reason ``budget`` the same way.

Times are stream positions in milliseconds of 16 kHz audio. The machine
does no I/O and keeps no clock: tests drive it with bytes.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from speech.settings import VadSettings

RATE = 16000
BYTES_PER_MS = RATE * 2 // 1000  # 32


class VadState(enum.Enum):
    QUIET = "quiet"
    STARTING = "starting"
    SPEAKING = "speaking"
    STOPPING = "stopping"


@dataclass(frozen=True, slots=True)
class UtteranceStarted:
    index: int
    start_ms: int


@dataclass(frozen=True, slots=True)
class UtteranceAudio:
    index: int
    pcm: bytes


@dataclass(frozen=True, slots=True)
class UtteranceEnded:
    index: int
    start_ms: int
    end_ms: int
    forwarded_ms: int
    reason: str  # "silence" | "max_length" | "budget" | "finalize" | "flush"


@dataclass(frozen=True, slots=True)
class UtterancePaused:
    """The open utterance's audio so far is all it will have if the silence goes on."""

    index: int


VadEvent = UtteranceStarted | UtteranceAudio | UtteranceEnded | UtterancePaused


def webrtc_scorer(mode: int) -> Callable[[bytes], bool]:
    import webrtcvad

    vad = webrtcvad.Vad(mode)

    def is_speech(frame: bytes) -> bool:
        return vad.is_speech(frame, RATE)

    return is_speech


class VadSegmenter:
    def __init__(
        self, params: VadSettings, is_speech: Callable[[bytes], bool] | None = None, *, pause_events: bool = False
    ) -> None:
        if params.frame_ms not in (10, 20, 30):
            raise ValueError("frame_ms must be 10, 20 or 30")
        self.params = params
        self._is_speech = is_speech or webrtc_scorer(params.mode)
        self._frame_ms = params.frame_ms
        self._frame_bytes = params.frame_ms * BYTES_PER_MS
        self._preroll = params.preroll_ms // params.frame_ms
        self._tail = params.tail_ms // params.frame_ms
        self._pause_frames = max(1, (params.silence_ms // 2) // params.frame_ms)
        self._max_bytes = (params.max_utterance_ms // params.frame_ms) * self._frame_bytes
        self.state = VadState.QUIET
        self._partial = bytearray()
        self._held: list[bytes] = []  # frames seen but not forwarded
        self._first_voiced = 0  # index in _held of the frame that began STARTING
        self._voiced = 0
        self._unvoiced_run = 0
        self._pos = 0  # stream position, in bytes, of the next frame to arrive
        self._held_pos = 0  # stream position of _held[0]
        self._index = -1
        self._open = False
        self._utt_start = 0
        self._utt_bytes = 0
        self._cap = self._max_bytes  # the open utterance's cap, in bytes
        self._out: list[VadEvent] = []
        self._pending = bytearray()  # forwarded audio not yet emitted as an event
        self.pause_events = pause_events  # emit UtterancePaused (off: the event stream is unchanged)
        self._tail_sent = 0  # frames at the head of _held (STOPPING) already forwarded as tail
        self._paused = False  # UtterancePaused emitted for this STOPPING episode

    # ------------------------------------------------------------ public

    @property
    def position_ms(self) -> int:
        return self._pos // BYTES_PER_MS

    def feed(self, pcm: bytes) -> list[VadEvent]:
        """Consume 16 kHz PCM16 bytes (even length); return the events they caused."""
        data = self._partial + pcm if self._partial else pcm
        fb = self._frame_bytes
        whole = len(data) - len(data) % fb
        view = memoryview(data)
        for off in range(0, whole, fb):
            self._frame(bytes(view[off : off + fb]))
        self._partial = bytearray(view[whole:])
        return self._drain()

    @property
    def open_index(self) -> int | None:
        """The index of the open utterance, or None."""
        return self._index if self._open else None

    def cap_open(self, ms: int) -> None:
        """Lower the open utterance's cap to ``ms`` of forwarded audio (whole
        frames, at least one). Audio already forwarded stays; the next frame
        past the cap closes the utterance with reason ``budget``."""
        if not self._open:
            return
        cap = max(1, ms // self._frame_ms) * self._frame_bytes
        self._cap = min(self._cap, cap)

    def finalize(self) -> list[VadEvent]:
        """Close the open utterance now, as if its silence window had passed
        (reason ``finalize``); the stream goes on. A candidate that has not
        reached ``start_ms`` of speech yet is not an utterance and stays."""
        if self.state is VadState.SPEAKING:
            self._end("finalize")
            self.state = VadState.QUIET
        elif self.state is VadState.STOPPING:
            self._close_after_tail("finalize")
        return self._drain()

    def flush(self) -> list[VadEvent]:
        """End of stream: close an open utterance, keeping at most tail_ms of silence."""
        if self.state is VadState.SPEAKING and self._partial:
            self._forward(bytes(self._partial))
        self._pos += len(self._partial)
        self._partial.clear()
        if self._open:
            self._end("flush")
        self._held.clear()
        self._held_pos = self._pos
        self._tail_sent = 0
        self.state = VadState.QUIET
        return self._drain()

    # ----------------------------------------------------------- machine

    def _frame(self, frame: bytes) -> None:
        voiced = self._is_speech(frame)
        if not self._held:
            self._held_pos = self._pos
        self._pos += len(frame)
        state = self.state
        if state is VadState.SPEAKING:
            if voiced:
                self._forward(frame)
            else:
                self._held_pos = self._pos - len(frame)
                self._held.append(frame)
                self.state = VadState.STOPPING
                self._tail_sent, self._paused = 0, False
                self._send_tail()
            return
        self._held.append(frame)
        if state is VadState.QUIET:
            if voiced:
                self.state = VadState.STARTING
                self._first_voiced = len(self._held) - 1
                self._voiced, self._unvoiced_run = 1, 0
                self._maybe_start()
            else:
                self._trim_to_preroll()
        elif state is VadState.STARTING:
            if voiced:
                self._voiced += 1
                self._unvoiced_run = 0
                self._maybe_start()
            else:
                self._unvoiced_run += 1
                if self._unvoiced_run * self._frame_ms >= self.params.start_ms:
                    self.state = VadState.QUIET
                    self._trim_to_preroll()
        else:  # STOPPING
            if voiced:
                held, self._held = self._held[self._tail_sent :], []
                self._forward_frames(held)
                self.state = VadState.SPEAKING
            elif len(self._held) * self._frame_ms >= self.params.silence_ms:
                self._close_after_tail("silence")
            else:
                self._send_tail()

    def _maybe_start(self) -> None:
        if self._voiced * self._frame_ms < self.params.start_ms:
            return
        first = max(0, self._first_voiced - self._preroll)
        frames = self._held[first:]
        self._held_pos += first * self._frame_bytes
        self._held = []
        self._begin(self._held_pos)
        self._forward_frames(frames)
        self.state = VadState.SPEAKING

    def _send_tail(self) -> None:
        """STOPPING: forward the held frames that belong to the tail, now.
        Never so many that the cap would open a new utterance made of nothing
        but closing silence. Once no more tail can go, say so (once)."""
        fb = self._frame_bytes
        while self._tail_sent < len(self._held) and self._tail_sent < self._tail and self._utt_bytes + fb <= self._cap:
            self._forward(self._held[self._tail_sent])
            self._tail_sent += 1
        done = self._tail_sent >= self._tail or self._utt_bytes + fb > self._cap
        # Half the silence window: most pauses between words are shorter, so a
        # decode started here is rarely wasted, and it still runs while the
        # other half of the window passes.
        if done and not self._paused and len(self._held) >= self._pause_frames:
            self._paused = True
            self._emit_pending()
            if self.pause_events:
                self._out.append(UtterancePaused(self._index))

    def _close_after_tail(self, reason: str) -> None:
        """End the utterance in STOPPING: its tail has already been forwarded."""
        sent = self._tail_sent
        self._end(reason)
        self._held_pos += sent * self._frame_bytes
        del self._held[:sent]
        self._tail_sent = 0
        self.state = VadState.QUIET
        self._trim_to_preroll()

    def _trim_to_preroll(self) -> None:
        extra = len(self._held) - self._preroll
        if extra > 0:
            del self._held[:extra]
            self._held_pos += extra * self._frame_bytes

    # ------------------------------------------------------- utterances

    def _begin(self, start_pos: int) -> None:
        self._index += 1
        self._open = True
        self._utt_start = start_pos
        self._utt_bytes = 0
        self._cap = self._max_bytes
        self._out.append(UtteranceStarted(self._index, start_pos // BYTES_PER_MS))

    def _forward_frames(self, frames: list[bytes]) -> None:
        for frame in frames:
            self._forward(frame)

    def _forward(self, chunk: bytes) -> None:
        if self._utt_bytes + len(chunk) > self._cap and self._utt_bytes > 0:
            self._end("max_length" if self._cap == self._max_bytes else "budget")
            self._begin(self._utt_start + self._utt_bytes)
        self._pending += chunk
        self._utt_bytes += len(chunk)

    def _end(self, reason: str) -> None:
        self._emit_pending()
        start = self._utt_start
        end = start + self._utt_bytes
        self._out.append(
            UtteranceEnded(
                self._index,
                start // BYTES_PER_MS,
                end // BYTES_PER_MS,
                self._utt_bytes // BYTES_PER_MS,
                reason,
            )
        )
        self._open = False

    def _emit_pending(self) -> None:
        if self._pending:
            self._out.append(UtteranceAudio(self._index, bytes(self._pending)))
            self._pending.clear()

    def _drain(self) -> list[VadEvent]:
        self._emit_pending()
        out, self._out = self._out, []
        return out
