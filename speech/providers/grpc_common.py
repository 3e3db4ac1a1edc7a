"""What the gRPC adapters (Riva, Google) share: channels, error translation
and the recovery of a server's status that grpc.aio masked.

**Errors are classified by gRPC status code**, never by message text
(:func:`translate_rpc_error`):

* UNAVAILABLE, INTERNAL, UNKNOWN, ABORTED, DATA_LOSS, CANCELLED -> retryable
  :class:`UpstreamUnavailable` ("Failed to connect to riva server" for
  UNAVAILABLE, the seed's words);
* DEADLINE_EXCEEDED -> retryable :class:`UpstreamTimeout`;
* RESOURCE_EXHAUSTED -> retryable :class:`UpstreamRateLimited`;
* UNAUTHENTICATED, PERMISSION_DENIED -> permanent :class:`UpstreamAuthError`;
* INVALID_ARGUMENT, OUT_OF_RANGE, FAILED_PRECONDITION, NOT_FOUND,
  UNIMPLEMENTED, ALREADY_EXISTS -> permanent :class:`UpstreamRejected`.

**One channel per event loop** (:class:`LoopChannels`). ``grpc.aio`` objects
belong to the loop they were made on, and the gateway (or its tests) drives
one adapter from several loops in several threads. So each loop gets its own
channel, made lazily on that loop at first use, kept in a weak mapping (a
closed loop's entry goes away with it) under a ``threading.Lock``, and shared
by every call of that loop. Connecting is bounded by ``connect_timeout_s``
(:class:`UpstreamUnavailable` "Failed to connect to <provider> server"; a
failed TLS handshake looks the same: the channel never becomes ready).

**The server's own status wins** (:class:`ServerStatus`). With grpcio's
asyncio API, a write that races with the server ending a streaming call
replaces the status the server sent by a local ``INTERNAL: Internal error
from Core`` (grpc/grpc#36066, still open in grpcio 1.85; measured on
loopback: 80 to 95 % of calls rejected at once as UNAUTHENTICATED while the
client writes came back INTERNAL, depending on load). Either status may be set first, so a done
callback records the statuses the call is given; when the call failed with
INTERNAL while one of our writes was in flight or had failed, a non-INTERNAL
status seen (the server's) wins, and when only INTERNAL was seen yet, the
call is watched for up to :data:`STATUS_GRACE_S` for the server's to land.
If none does, the error stays INTERNAL: retryable, as without this.

``grpc`` is imported here (and re-exported) only if the ``cloud`` extra is
installed; :func:`require_grpc` raises the :class:`ConfigError` naming the
extra, when an adapter is built, not at import.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import weakref
from collections.abc import Awaitable, Coroutine, Sequence
from pathlib import Path
from typing import Any, Protocol

from speech.errors import (
    ConfigError,
    EngineError,
    UpstreamAuthError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)

try:
    import grpc
    import grpc.aio
except ImportError:  # pragma: no cover - the cloud extra is missing
    grpc = None  # type: ignore[assignment]

__all__ = [
    "CLOUD_EXTRA_HINT",
    "LoopChannels",
    "ServerStatus",
    "grpc",
    "make_channel",
    "require_grpc",
    "translate_rpc_error",
]

CLOUD_EXTRA_HINT = "install the cloud engines with: pip install 'speech-gateway[cloud]'"

# 20 MiB: large enough for any synthesized answer, small enough to bound memory.
MAX_MESSAGE_BYTES = 20 * 1024 * 1024

# How long a call that failed with the local INTERNAL is watched for the server's
# status. A genuine INTERNAL during a write is reported this much later; a masked
# rejection is classified correctly even on a loaded machine.
STATUS_GRACE_S = 1.0
_STATUS_POLL_S = 0.02

# How long aclose() waits for the channels of other running loops to close there.
CLOSE_WAIT_S = 1.0


def require_grpc() -> None:
    if grpc is None:
        raise ConfigError(f"grpcio is not installed; {CLOUD_EXTRA_HINT}")


# -- channels -------------------------------------------------------------------


def make_channel(url: str, *, tls: bool, ca_file: str = "") -> grpc.aio.Channel:
    """An asyncio channel to ``host:port``. Must be called on the event loop that uses it."""
    require_grpc()
    options: Sequence[tuple[str, int]] = [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", 30_000),
    ]
    if not tls:
        return grpc.aio.insecure_channel(url, options=options)
    roots = None
    if ca_file:
        try:
            roots = Path(ca_file).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read CA file {ca_file}: {exc.strerror}") from exc
    return grpc.aio.secure_channel(url, grpc.ssl_channel_credentials(root_certificates=roots), options=options)


class ServerAddress(Protocol):
    """The settings a channel needs (``RivaSettings`` and ``GoogleSettings`` have them)."""

    @property
    def url(self) -> str: ...
    @property
    def tls(self) -> bool: ...
    @property
    def ca_file(self) -> str: ...
    @property
    def connect_timeout_s(self) -> float: ...


class LoopChannels:
    """Lazily made ``grpc.aio`` channels to one server, one per event loop
    (see the module docstring); safe to share between threads."""

    def __init__(self, provider: str, server: ServerAddress) -> None:
        self._provider = provider
        self._server = server
        self._lock = threading.Lock()
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
        self._closing: set[asyncio.Task[None]] = set()  # keeps scheduled closes alive

    def channel(self) -> Any:
        """This loop's channel, made on first use (must run on the loop)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            for stale in [lp for lp in self._by_loop if lp.is_closed()]:
                del self._by_loop[stale]  # its loop is gone; the channel died with it
            chan = self._by_loop.get(loop)
            if chan is None:
                s = self._server
                chan = make_channel(s.url, tls=s.tls, ca_file=s.ca_file)
                self._by_loop[loop] = chan
            return chan

    async def ready(self) -> Any:
        """This loop's channel once it is connected, within ``connect_timeout_s``."""
        chan = self.channel()
        if chan.get_state(try_to_connect=True) is not grpc.ChannelConnectivity.READY:
            try:
                await asyncio.wait_for(chan.channel_ready(), self._server.connect_timeout_s)
            except TimeoutError as exc:
                raise UpstreamUnavailable(f"Failed to connect to {self._provider} server") from exc
        return chan

    async def aclose(self) -> None:
        """Close this loop's channel now and the others on their own loops,
        waiting up to :data:`CLOSE_WAIT_S` for those of loops still running.
        A later call makes a new channel."""
        current = asyncio.get_running_loop()
        with self._lock:
            mine = self._by_loop.pop(current, None)
        waits = [asyncio.wrap_future(done) for loop, done in self._close_others() if loop.is_running()]
        if mine is not None:
            await mine.close()
        if waits:
            await asyncio.wait(waits, timeout=CLOSE_WAIT_S)

    def close(self) -> None:
        """Without a loop (``Engines.close()``): schedule each channel's close
        on its own loop, not waiting for it. Channels of loops already closed
        are dropped; grpc releases a channel when it is collected."""
        self._close_others()

    def _close_others(self) -> list[tuple[asyncio.AbstractEventLoop, concurrent.futures.Future[None]]]:
        with self._lock:
            items = list(self._by_loop.items())
            self._by_loop.clear()
        scheduled = []
        for loop, chan in items:
            if loop.is_closed():
                continue
            done: concurrent.futures.Future[None] = concurrent.futures.Future()
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._close_here, loop, chan, done)
                scheduled.append((loop, done))
        return scheduled

    def _close_here(self, loop: asyncio.AbstractEventLoop, chan: Any, done: concurrent.futures.Future[None]) -> None:
        # The coroutine is made here, on its own loop, so a loop that stops
        # before running this callback leaves no never-awaited coroutine behind.
        task = loop.create_task(chan.close())
        self._closing.add(task)

        def finished(task: asyncio.Task[None]) -> None:
            self._closing.discard(task)
            done.set_result(None)

        task.add_done_callback(finished)


# -- errors ---------------------------------------------------------------------

_REJECTED = {"INVALID_ARGUMENT", "OUT_OF_RANGE", "FAILED_PRECONDITION", "NOT_FOUND", "UNIMPLEMENTED", "ALREADY_EXISTS"}


def translate_rpc_error(exc: grpc.aio.AioRpcError | grpc.RpcError, provider: str) -> EngineError:
    """The gateway error for a failed RPC (use with ``raise ... from exc``).

    The upstream's detail text is kept short and only for rejected requests,
    where it tells the client what was wrong; it never carries our credentials.
    """
    code = exc.code() if hasattr(exc, "code") else None
    name = code.name if code is not None else "UNKNOWN"
    details = (exc.details() or "") if hasattr(exc, "details") else ""
    details = details.strip()[:200]
    if name == "UNAVAILABLE":
        return UpstreamUnavailable(f"Failed to connect to {provider} server")
    if name == "DEADLINE_EXCEEDED":
        return UpstreamTimeout(f"{provider} server timed out")
    if name == "RESOURCE_EXHAUSTED":
        return UpstreamRateLimited(f"{provider} server is rate limiting or out of capacity")
    if name in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
        return UpstreamAuthError(f"{provider} rejected the gateway's credentials")
    if name in _REJECTED:
        return UpstreamRejected(
            f"{provider} rejected the request ({name}): {details}"
            if details
            else f"{provider} rejected the request ({name})"
        )
    return UpstreamUnavailable(f"{provider} server failed ({name})")


class ServerStatus:
    """Every status one streaming call is given, and whether a write of ours
    could have masked the server's (see the module docstring). Made right
    after the call; every ``write`` / ``done_writing`` goes through
    :meth:`write`; a failed call's error is passed through :meth:`error`."""

    def __init__(self, call: Any) -> None:
        self.seen: list[tuple[Any, str]] = []
        self._call = call
        self._changed = asyncio.Event()
        self._writing = 0  # our writes in flight
        self._write_failed = False
        call.add_done_callback(self._record)

    def _record(self, call: Any) -> None:
        # Runs as the status is set, so these coroutines return at once.
        self.seen.append((_at_once(call.code()), _at_once(call.details()) or ""))
        self._changed.set()

    async def write(self, op: Awaitable[None]) -> None:
        """Await one of our writes on the call (``call.write(request)`` or
        ``call.done_writing()``), noting it while in flight and if it failed."""
        self._writing += 1
        try:
            await op
        except grpc.aio.AioRpcError:
            self._write_failed = True
            raise
        finally:
            self._writing -= 1

    @property
    def may_be_masked(self) -> bool:
        """A write of ours is in flight or failed: an INTERNAL may not be the server's."""
        return self._write_failed or self._writing > 0

    async def error(self, exc: grpc.aio.AioRpcError) -> grpc.aio.AioRpcError:
        """``exc``, or, when it is the local INTERNAL one of our writes caused,
        an error with the status the server ended the call with (which may be
        OK: the server finished the call normally). Waits at most
        :data:`STATUS_GRACE_S`, and only when ``exc`` is INTERNAL."""
        if exc.code() != grpc.StatusCode.INTERNAL or not self.may_be_masked:
            return exc
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STATUS_GRACE_S
        while (real := await self._servers()) is None:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return exc
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, _STATUS_POLL_S))
        empty = grpc.aio.Metadata()
        return grpc.aio.AioRpcError(real[0], empty, empty, details=real[1])

    async def _servers(self) -> tuple[Any, str] | None:
        # The local overwrite is always INTERNAL: any other status is the server's.
        for code, details in self.seen:
            if code is not None and code != grpc.StatusCode.INTERNAL:
                return code, details
        code = await self._call.code()
        return None if code == grpc.StatusCode.INTERNAL else (code, await self._call.details() or "")


def _at_once(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that completes without suspending (a finished call's
    ``code()`` / ``details()``); ``None`` if it would wait."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    return None
