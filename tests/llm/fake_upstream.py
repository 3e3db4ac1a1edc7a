"""A loopback server speaking the OpenAI Chat Completions protocol.

Starlette served by uvicorn on port 0 in a background thread, like the
gateway in ``tests/conftest.py``. ``POST /v1/chat/completions`` checks
``Authorization: Bearer <key>`` (OpenAI's 401 body otherwise), records every
request, and answers:

* plain: a ``chat.completion`` whose content is :attr:`FakeLLM.reply`, with
  ``usage`` (``prompt_tokens`` = :attr:`FakeLLM.prompt_tokens`,
  ``completion_tokens`` = the number of words of the reply);
* ``"stream": true``: server-sent ``chat.completion.chunk`` events (a role
  chunk, one chunk per word, a finish chunk), then, when the request asked
  with ``stream_options.include_usage``, OpenAI's usage-only chunk
  (``choices: []``), then ``data: [DONE]``.

Faults, reset by :meth:`FakeLLM.reset`:

* :meth:`fail_with` - a canned status, body and headers for every request;
* ``drop_next = n`` - the next n requests get their status line and headers,
  then the connection is cut before any body;
* ``fault = "stall_headers"`` - answer nothing until :attr:`release` is set
  (:attr:`disconnected` is set if the gateway closes the connection meanwhile);
* ``fault = "hold"`` - stream the first word's chunk, then hold the rest until
  :attr:`release` is set (:attr:`first_sent`, :attr:`finished` and
  :attr:`disconnected` tell the test what happened, the last one when the
  gateway closed the connection during the hold);
* ``fault = "drop_after_first"`` - stream the first word, then cut the connection;
* ``fault = "no_usage"`` - never report usage;
* ``fault = "not_json"`` - a 200 whose body is an HTML page;
* ``require_key = False`` - also serve requests without ``Authorization`` (Ollama).

:class:`FlakyFront` is a TCP front for the fake that closes the next n
connections as soon as they are accepted (a connection failure before any
byte) and relays the rest; :meth:`FlakyFront.cut_all` closes the open ones,
as a server closes idle keep-alive connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

UPSTREAM_KEY = "upstream-secret-KEY-0123456789abcdef"
REPLY = "Turn left at the next door, then stop."
HOLD_LIMIT_S = 15.0


class Dropped(Exception):
    """Raised inside a response body so that uvicorn cuts the connection."""


@dataclass(frozen=True)
class Recorded:
    headers: dict[str, str]
    json: Any
    raw: bytes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def refused_port() -> int:
    """A loopback port nothing listens on."""
    return free_port()


def _serve(app: Any, name: str) -> tuple[uvicorn.Server, threading.Thread, int]:
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        log_config=None,
        log_level="critical",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True, name=name)
    thread.start()
    for _ in range(1000):
        if server.started or not thread.is_alive():
            break
        time.sleep(0.01)
    assert server.started, f"{name} did not start"
    return server, thread, server.servers[0].sockets[0].getsockname()[1]


class FakeLLM:
    def __init__(self, key: str = UPSTREAM_KEY) -> None:
        self.key = key
        self.requests: list[Recorded] = []
        self.release = threading.Event()
        self.first_sent = threading.Event()
        self.finished = threading.Event()
        self.disconnected = threading.Event()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.reset()

    # --- control ---------------------------------------------------------

    def reset(self) -> None:
        self.release.set()  # ends the holds of earlier tests
        self.requests.clear()
        self.release = threading.Event()
        self.first_sent.clear()
        self.finished.clear()
        self.disconnected.clear()
        self.reply = REPLY
        self.prompt_tokens = 11
        self.fault: str | None = None
        self.require_key = True
        self.drop_next = 0
        self._canned: tuple[int, bytes, dict[str, str]] | None = None

    def fail_with(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self._canned = (status, raw, {"content-type": "application/json", **(headers or {})})

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def completion_tokens(self) -> int:
        return len(self.reply.split())

    def start(self) -> None:
        app = Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"])])
        self._server, self._thread, self.port = _serve(app, "fake-llm")

    def stop(self) -> None:
        self.release.set()
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)

    # --- the API ---------------------------------------------------------

    async def _chat(self, request: Request) -> Response:
        raw = await request.body()
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = None
        self.requests.append(Recorded(dict(request.headers), payload, raw))
        release = self.release
        if self.drop_next > 0:
            self.drop_next -= 1
            streaming = isinstance(payload, dict) and payload.get("stream")
            return StreamingResponse(_drop(), media_type="text/event-stream" if streaming else "application/json")
        if self.fault == "stall_headers":
            if not await _wait(release, request):
                self.disconnected.set()
            return Response(b"", status_code=500)
        if self._canned is not None:
            status, body, headers = self._canned
            return Response(body, status_code=status, headers=headers)
        auth = request.headers.get("authorization")
        if auth != f"Bearer {self.key}" and (self.require_key or auth is not None):
            return JSONResponse(
                {
                    "error": {
                        "message": "Incorrect API key provided.",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": "invalid_api_key",
                    }
                },
                status_code=401,
            )
        if self.fault == "not_json":
            return Response(b"<html>502 Bad Gateway</html>", media_type="text/html")
        if not isinstance(payload, dict) or not isinstance(payload.get("messages"), list):
            return JSONResponse(
                {"error": {"message": "'messages' is a required property", "type": "invalid_request_error"}},
                status_code=400,
            )
        model = payload.get("model", "")
        if payload.get("stream"):
            options = payload.get("stream_options") or {}
            usage = bool(options.get("include_usage")) and self.fault != "no_usage"
            return StreamingResponse(self._chunks(model, usage, release), media_type="text/event-stream")
        body: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": self.reply}, "finish_reason": "stop"}],
        }
        if self.fault != "no_usage":
            body["usage"] = self._usage()
        return JSONResponse(body)

    def _usage(self) -> dict[str, int]:
        done, prompt = self.completion_tokens, self.prompt_tokens
        return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}

    async def _chunks(self, model: str, usage: bool, release: threading.Event) -> Any:
        def chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> bytes:
            choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
            body = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": model,
                "choices": choices,
                **({"usage": None} if usage else {}),
                **extra,
            }
            return b"data: " + json.dumps(body).encode() + b"\n\n"

        words = self.reply.split(" ")
        completed = False
        try:
            yield chunk({"role": "assistant", "content": ""})
            for n, word in enumerate(words):
                yield chunk({"content": word if n == 0 else " " + word})
                if n == 0:
                    self.first_sent.set()
                    if self.fault == "hold":
                        await _wait(release)
                    elif self.fault == "drop_after_first":
                        raise Dropped
                await asyncio.sleep(0)
            yield chunk({}, "stop")
            if usage:
                yield chunk(None, usage=self._usage())
            yield b"data: [DONE]\n\n"
            completed = True
            self.finished.set()
        finally:
            if not completed and self.fault == "hold":
                self.disconnected.set()


async def _drop() -> Any:
    raise Dropped
    yield b""  # pragma: no cover - makes this an async generator


async def _wait(event: threading.Event, request: Request | None = None) -> bool:
    """Until ``event`` is set (True), or the client of ``request`` has gone
    (False). ``event`` is a threading.Event set from the test's own thread
    and loop, so it cannot be awaited here."""
    deadline = time.monotonic() + HOLD_LIMIT_S
    while not event.is_set() and time.monotonic() < deadline:
        if request is not None and await request.is_disconnected():
            return False
        await asyncio.sleep(0.01)
    return True


class FlakyFront:
    """A TCP front: closes the next :attr:`drop_next` connections on accept,
    relays the others to ``target_port``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.drop_next = 0
        self.accepted = 0
        self._open: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="flaky-front")
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(10), "flaky front did not start"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._open):
            writer.transport.abort()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()

    def cut_all(self) -> None:
        """Close every relayed connection, as a server closes idle keep-alive connections."""
        done = threading.Event()

        def cut() -> None:
            for writer in list(self._open):
                writer.transport.abort()
            done.set()

        self._loop.call_soon_threadsafe(cut)
        assert done.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.drop_next > 0:
            self.drop_next -= 1
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._open.add(writer)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(OSError):
                dst.close()

        self._open.add(up_writer)
        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            for end in (writer, up_writer):
                self._open.discard(end)
                end.transport.abort()
