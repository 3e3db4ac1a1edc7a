"""A minimal websocket client for the load generator: cheap enough to drive
thousands of real-time streams from one asyncio process.

Each frame the generator sends is built once, masked and framed up front
(:func:`text_frame`), so sending it is a single ``transport.write``: no JSON,
no base64, no masking per send. The mask key is fixed per frame; RFC 6455
wants it unpredictable, which only matters against proxies, not to a server.
The client parses what the server sends (unmasked text frames, ping, close)
and answers pings and the closing handshake.

Only what the bench needs: no extensions, no fragmentation on send, text
replies handed to a callback with their arrival time.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import time
from collections.abc import Callable

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


def _mask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(n, "big") if n else b""


def frame(opcode: int, payload: bytes, key: bytes | None = None) -> bytes:
    """One complete client frame (FIN set, masked)."""
    key = key or os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 1 << 16:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    return head + key + _mask(payload, key)


def text_frame(text: str) -> bytes:
    return frame(OP_TEXT, text.encode("utf-8"))


class HandshakeError(Exception):
    pass


class WsClient(asyncio.Protocol):
    """One websocket connection. ``on_text(client, payload, t)`` is called for
    every text message with its arrival time (``time.perf_counter()``)."""

    def __init__(self, host: str, path: str, on_text: Callable[[WsClient, bytes, float], None]) -> None:
        loop = asyncio.get_running_loop()
        self.host, self.path, self.on_text = host, path, on_text
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.upgraded = loop.create_future()
        self.closed = loop.create_future()
        self.close_code: int | None = None
        self.close_sent = False
        self._key = base64.b64encode(os.urandom(16))
        self._frag: list[bytes] = []
        self._frag_op = 0

    # ------------------------------------------------------------ protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(
            b"GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
            % (self.path.encode(), self.host.encode(), self._key)
        )

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.upgraded.done():
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).decode("latin-1")
            del self.buf[: end + 4]
            accept = base64.b64encode(hashlib.sha1(self._key + GUID).digest()).decode()
            if not head.startswith("HTTP/1.1 101") or accept not in head:
                self.upgraded.set_exception(HandshakeError(head.split("\r\n", 1)[0]))
                assert self.transport is not None
                self.transport.close()
                return
            self.upgraded.set_result(None)
        self._parse()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(HandshakeError(f"connection lost: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)

    def _parse(self) -> None:
        buf = self.buf
        while len(buf) >= 2:
            b0, b1 = buf[0], buf[1]
            n, off = b1 & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    return
                n, off = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n, off = int.from_bytes(buf[2:10], "big"), 10
            if b1 & 0x80:  # a server must not mask; tolerate it anyway
                off += 4
            if len(buf) < off + n:
                return
            payload = bytes(buf[off : off + n])
            if b1 & 0x80:
                payload = _mask(payload, bytes(buf[off - 4 : off]))
            del buf[: off + n]
            self._frame(b0 & 0x80, b0 & 0x0F, payload)

    def _frame(self, fin: int, op: int, payload: bytes) -> None:
        if op in (OP_TEXT, OP_BINARY, OP_CONT):
            if op != OP_CONT:
                self._frag_op = op
            self._frag.append(payload)
            if fin:
                data, self._frag = b"".join(self._frag), []
                if self._frag_op == OP_TEXT:
                    self.on_text(self, data, time.perf_counter())
        elif op == OP_PING:
            self.write(frame(OP_PONG, payload))
        elif op == OP_CLOSE:
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            if not self.close_sent:
                self.close_sent = True
                self.write(frame(OP_CLOSE, payload[:2]))
            assert self.transport is not None
            self.transport.close()

    # ------------------------------------------------------------ sending

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def backlog(self) -> int:
        """Bytes written but not yet taken by the kernel: grows when the server stops reading."""
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def close(self, code: int = 1000) -> None:
        if not self.close_sent:
            self.close_sent = True
            self.write(frame(OP_CLOSE, code.to_bytes(2, "big")))


async def connect(host: str, port: int, path: str, on_text: Callable[[WsClient, bytes, float], None]) -> WsClient:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(lambda: WsClient(f"{host}:{port}", path, on_text), host, port)
    await proto.upgraded
    return proto
