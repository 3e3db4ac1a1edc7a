"""A loopback HTTP server shaped like ElevenLabs' text-to-speech API.

Starlette served by uvicorn on port 0 in a background thread (as
``tests/conftest.py`` starts the gateway). It answers
``POST /v1/text-to-speech/{voice_id}`` and ``.../stream`` the way PROTOCOLS.md
section D describes: ``xi-api-key`` checked against a set of keys, ElevenLabs'
error bodies, ``character-cost`` header, and REAL audio in the requested
``output_format`` (a 440 Hz tone, 50 ms per character, encoded with
:func:`speech.audio.encode.encode`). ``/stream`` sends the body in several
chunks (chunked transfer encoding).

Fault injection, reset by :meth:`FakeElevenLabs.reset`:

* ``fake.fail_with(status, body, content_type)`` - a canned answer to every
  request (429 busy, 401 quota, 5xx, a 200 HTML page, an empty 200 ...);
* ``fake.fault = "stall_headers" | "stall_body" | "drop_body"`` - wait before
  the headers, stall after the first body chunk, or break the connection
  after the first body chunk;
* ``fake.cost_header`` / ``fake.content_type`` override those headers.

``refused_port()`` gives a loopback port with nothing listening on it.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from speech.audio.encode import encode, parse_output_format
from speech.errors import UnsupportedOutputFormat

GATEWAY_KEY = "gw-secret-KEY-0123456789abcdef"
CALLER_KEY = "caller-secret-KEY-fedcba9876543210"
VOICES = frozenset({"JBFqnCBsd6RMkjVDRZzb", "21m00Tcm4TlvDq8ikWAM"})
MS_PER_CHAR = 50
SOURCE_RATE = 24000
STREAM_PIECES = 4
STALL_LIMIT_S = 10.0


class DroppedConnection(Exception):
    """Raised inside a streaming body so that uvicorn aborts the connection."""


@dataclass(frozen=True)
class Recorded:
    path: str
    voice_id: str
    streaming: bool
    headers: dict[str, str]
    query: dict[str, str]
    json: Any
    client_port: int


def tone(characters: int) -> bytes:
    """PCM16 mono at :data:`SOURCE_RATE`: a 440 Hz tone, 50 ms per character."""
    n = SOURCE_RATE * MS_PER_CHAR * characters // 1000
    t = np.arange(n) / SOURCE_RATE
    return (np.sin(2 * np.pi * 440.0 * t) * 0.3 * 32767).astype("<i2").tobytes()


def _detail(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"detail": {"status": code, "message": message}}, status_code=status)


class FakeElevenLabs:
    def __init__(self, keys: frozenset[str] = frozenset({GATEWAY_KEY, CALLER_KEY}), max_chars: int = 200) -> None:
        self.keys = keys
        self.max_chars = max_chars
        self.requests: list[Recorded] = []
        self.stream_closed = threading.Event()
        self._generation = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.reset()

    # --- control ---------------------------------------------------------

    def reset(self) -> None:
        self._generation += 1  # ends the stalls of earlier tests
        self.requests.clear()
        self.stream_closed.clear()
        self.fault: str | None = None
        self.cost_header: str | None = None
        self.content_type: str | None = None
        self._canned: tuple[int, bytes, str] | None = None

    def fail_with(self, status: int, body: Any, content_type: str = "application/json") -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self._canned = (status, raw, content_type)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        app = Starlette(
            routes=[
                Route("/v1/text-to-speech/{voice_id}", self._tts, methods=["POST"]),
                Route("/v1/text-to-speech/{voice_id}/stream", self._tts, methods=["POST"]),
            ]
        )
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True, name="fake-elevenlabs")
        self._thread.start()
        for _ in range(1000):
            if self._server.started or not self._thread.is_alive():
                break
            threading.Event().wait(0.01)
        assert self._server.started, "fake ElevenLabs did not start"
        self.port = self._server.servers[0].sockets[0].getsockname()[1]

    def stop(self) -> None:
        self._generation += 1
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)

    # --- the API ---------------------------------------------------------

    async def _tts(self, request: Request) -> Response:
        voice_id = request.path_params["voice_id"]
        streaming = request.url.path.endswith("/stream")
        raw = await request.body()
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = None
        client_port = request.client.port if request.client else 0
        self.requests.append(
            Recorded(
                request.url.path,
                voice_id,
                streaming,
                dict(request.headers),
                dict(request.query_params),
                payload,
                client_port,
            )
        )
        generation = self._generation
        if self.fault == "stall_headers":
            await self._stall(generation, request)
            return Response(b"", status_code=500)
        if self._canned is not None:
            status, body, content_type = self._canned
            return Response(body, status_code=status, media_type=content_type)

        if request.headers.get("xi-api-key") not in self.keys:
            return _detail(401, "invalid_api_key", "Invalid API key")
        text = payload.get("text") if isinstance(payload, dict) else None
        if not isinstance(text, str):
            loc = ["body", "text"]
            return JSONResponse({"detail": [{"type": "missing", "loc": loc, "msg": "Field required"}]}, status_code=422)
        if voice_id not in VOICES:
            return _detail(400, "voice_not_found", f"A voice with voice_id {voice_id} was not found.")
        if len(text) > self.max_chars:
            return _detail(
                400,
                "max_character_limit_exceeded",
                f"Text is too long: {len(text)} characters; the maximum is {self.max_chars}.",
            )
        try:
            fmt = parse_output_format(request.query_params.get("output_format", "mp3_44100_128"))
        except UnsupportedOutputFormat:
            loc = ["query", "output_format"]
            return JSONResponse({"detail": [{"type": "enum", "loc": loc, "msg": "Input should be ..."}]}, 422)

        audio = await asyncio.to_thread(encode, tone(len(text)), SOURCE_RATE, fmt)
        headers = {"character-cost": self.cost_header if self.cost_header is not None else str(len(text))}
        media_type = self.content_type or fmt.content_type
        if streaming or self.fault in ("stall_body", "drop_body"):
            return StreamingResponse(self._pieces(audio, generation), headers=headers, media_type=media_type)
        return Response(audio, headers=headers, media_type=media_type)

    async def _pieces(self, audio: bytes, generation: int) -> AsyncIterator[bytes]:
        size = max(1, -(-len(audio) // STREAM_PIECES))
        try:
            for i, start in enumerate(range(0, len(audio), size)):
                if i == 1 and self.fault == "stall_body":
                    await self._stall(generation, None)  # a disconnect cancels this generator
                    return
                if i == 1 and self.fault == "drop_body":
                    raise DroppedConnection("fake ElevenLabs drops the connection mid-body")
                yield audio[start : start + size]
                await asyncio.sleep(0.005)  # let each piece leave as its own chunk
        finally:
            self.stream_closed.set()

    async def _stall(self, generation: int, request: Request | None) -> None:
        """Wait until the client goes away, the test ends or 10 s pass."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STALL_LIMIT_S
        while generation == self._generation and loop.time() < deadline:
            if request is not None and await request.is_disconnected():
                self.stream_closed.set()
                return
            await asyncio.sleep(0.02)


@contextmanager
def refused_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound, never listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]
