"""Server-sent events, Sans-I/O: bytes in, complete events out.

:class:`SseParser` is fed the upstream's body as it arrives and returns each
event once its blank line has arrived, so the relay forwards event by event
and never holds more than one incomplete event (at most
``llm.max_response_bytes``; more is an :class:`UpstreamProtocolError`).
Line ends may be LF, CRLF or CR, also split across reads; events are
re-emitted with LF line ends, which every SSE client accepts. Comment lines
(``: keep-alive``, OpenRouter's ``: OPENROUTER PROCESSING``) travel with
their event, or alone, so a client's idle timers see them too.

:func:`inspect` reads one event's ``data`` as an OpenAI chat-completion chunk:
the end marker ``[DONE]``, a ``usage`` object, the text produced (for the
output estimate), whether it is the usage-only chunk (``choices: []``) that
``stream_options.include_usage`` adds, and whether it carries an ``error``.
Data that is not JSON is passed on untouched and counted as nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from speech.errors import UpstreamProtocolError
from speech.llm.estimate import output_texts, text_tokens

DONE = "[DONE]"


@dataclass(frozen=True)
class SseEvent:
    raw: bytes  # the whole event as forwarded, ending in a blank line
    data: str | None  # its data lines joined by "\n"; None if it has none


@dataclass(frozen=True)
class Usage:
    input_tokens: int | None
    output_tokens: int | None

    @classmethod
    def parse(cls, value: Any) -> Usage | None:
        """OpenAI's ``usage`` object; counts that are not non-negative integers are ignored."""
        if not isinstance(value, dict):
            return None

        def count(name: str) -> int | None:
            n = value.get(name)
            return n if isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= 10**12 else None

        usage = cls(count("prompt_tokens"), count("completion_tokens"))
        return usage if usage != cls(None, None) else None


@dataclass(frozen=True)
class ChunkInfo:
    done: bool = False
    usage: Usage | None = None
    output_tokens: int = 0  # estimate of the text this chunk carries
    usage_only: bool = False
    error: bool = False


class SseParser:
    def __init__(self, max_event_bytes: int) -> None:
        self._max = max_event_bytes
        self._buffer = b""
        self._partial: list[bytes] = []  # pieces of a line whose end has not come yet
        self._partial_size = 0
        self._lines: list[bytes] = []
        self._size = 0

    def feed(self, data: bytes) -> list[SseEvent]:
        """The events completed by ``data``."""
        if b"\n" not in data and b"\r" not in data:
            # Mid-line: keep the piece without re-scanning what came before.
            self._partial.append(data)
            self._partial_size += len(data)
            self._check_size()
            return []
        buffer = self._buffer + b"".join(self._partial) + data
        self._partial.clear()
        self._partial_size = 0
        # A CR at the very end may be the first half of a CRLF: keep it.
        hold = buffer.endswith(b"\r")
        if hold:
            buffer = buffer[:-1]
        lines = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        self._buffer = lines.pop() + (b"\r" if hold else b"")
        events: list[SseEvent] = []
        for line in lines:
            if line:
                self._size += len(line) + 1
                self._lines.append(line)
            elif self._lines:
                events.append(self._emit())
        self._check_size()
        return events

    def _check_size(self) -> None:
        if self._size + len(self._buffer) + self._partial_size > self._max:
            raise UpstreamProtocolError(f"upstream sent a stream event over {self._max} bytes")

    def close(self) -> list[SseEvent]:
        """At the end of the body: an event that lacked only its blank line."""
        rest = (self._buffer + b"".join(self._partial)).strip(b"\r")
        if rest:
            self._lines.append(rest)
        self._buffer, self._partial, self._partial_size = b"", [], 0
        return [self._emit()] if self._lines else []

    def _emit(self) -> SseEvent:
        lines, self._lines, self._size = self._lines, [], 0
        data = [_field_value(line) for line in lines if line == b"data" or line.startswith(b"data:")]
        text = b"\n".join(data).decode("utf-8", "replace") if data else None
        return SseEvent(b"\n".join(lines) + b"\n\n", text)


def _field_value(line: bytes) -> bytes:
    value = line[5:]
    return value[1:] if value.startswith(b" ") else value


def inspect(data: str | None) -> ChunkInfo:
    """What one event's data says about the answer (see the module docstring)."""
    if data is None:
        return ChunkInfo()
    if data.strip() == DONE:
        return ChunkInfo(done=True)
    try:
        chunk = json.loads(data)
    except (ValueError, RecursionError):
        return ChunkInfo()
    if not isinstance(chunk, dict):
        return ChunkInfo()
    choices = chunk.get("choices")
    tokens = 0
    for choice in choices if isinstance(choices, list) else ():
        if isinstance(choice, dict):
            tokens += text_tokens("".join(output_texts(choice.get("delta"))))
    usage = Usage.parse(chunk.get("usage"))
    return ChunkInfo(
        usage=usage,
        output_tokens=tokens,
        usage_only=usage is not None and choices == [],
        error=chunk.get("error") is not None,
    )
