"""What the Riva ASR and TTS adapters share: stubs, channels and metadata.

Decisions:

* **One channel per event loop.** ``grpc.aio`` objects belong to the loop
  they were created on, and the gateway (or its tests) may drive one adapter
  from several loops in several threads. :class:`RivaChannels` therefore
  keeps a channel per running loop (a weak mapping, so a closed loop's entry
  goes away with it) and creates it lazily, on that loop, on first use. One
  channel multiplexes every stream of its loop.
* **Connecting is bounded by an asyncio timeout** on
  ``channel.channel_ready()``; running out of it raises
  :class:`~speech.errors.UpstreamUnavailable` with the seed's words
  "Failed to connect to riva server". TLS handshake failures look the same
  (the channel never becomes ready).
* **Metadata**: ``authorization: Bearer <api_key>`` when a key is set and
  ``function-id: <id>`` when one is set (hosted Riva on NVIDIA's cloud).
* **The server's own status wins** (:class:`ServerStatus`): with grpcio's
  asyncio API, a write that races with the server ending a streaming call
  replaces the status the server sent by a local ``INTERNAL: Internal error
  from Core`` (grpc/grpc#36066, still open in grpcio 1.85; measured: about
  90% of calls rejected at once as UNAUTHENTICATED came back INTERNAL,
  depending on load). Either status may be set first, so a done callback
  records the statuses set and, after a failed write, a non-INTERNAL one
  (the server's) wins; when only INTERNAL was seen yet, the call's status
  is watched for up to :data:`STATUS_GRACE_S` for the server's to land.
  If none does, the error stays INTERNAL: retryable, as without this.
* The generated stubs come from ``nvidia-riva-client`` and are imported only
  here, under short aliases (``rasr``, ``rtts``, ...), and re-used by the two
  adapters of this package; no protobuf message leaves it. A missing
  ``cloud`` extra is a :class:`~speech.errors.ConfigError` naming it, raised
  when an adapter is built, not at import.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import Coroutine
from typing import Any

from speech.errors import ConfigError, EngineError, UpstreamProtocolError, UpstreamUnavailable
from speech.providers.grpc_common import CLOUD_EXTRA_HINT, grpc, make_channel, require_grpc, translate_rpc_error
from speech.settings import RivaSettings

try:
    from riva.client.proto import riva_asr_pb2 as rasr
    from riva.client.proto import riva_asr_pb2_grpc as rasr_grpc
    from riva.client.proto import riva_audio_pb2 as raudio
    from riva.client.proto import riva_tts_pb2 as rtts
    from riva.client.proto import riva_tts_pb2_grpc as rtts_grpc
except (ImportError, RuntimeError) as exc:  # pragma: no cover - RuntimeError: stubs newer than grpcio
    rasr = rasr_grpc = raudio = rtts = rtts_grpc = None  # type: ignore[assignment]
    _STUBS_ERROR: Exception | None = exc
else:
    _STUBS_ERROR = None

__all__ = [
    "PROVIDER",
    "RivaChannels",
    "ServerStatus",
    "metadata",
    "rasr",
    "rasr_grpc",
    "raudio",
    "require_stubs",
    "rtts",
    "rtts_grpc",
]

PROVIDER = "riva"

# How long to wait for the server's status after a write failed locally. A genuine
# INTERNAL is reported this much later; a masked rejection (grpc/grpc#36066) is
# classified correctly even on a loaded machine.
STATUS_GRACE_S = 1.0


def require_stubs() -> None:
    """Raise :class:`ConfigError` naming the ``cloud`` extra if the stubs are missing."""
    require_grpc()
    if _STUBS_ERROR is not None:
        raise ConfigError(f"the Riva client stubs cannot be imported ({_STUBS_ERROR}); {CLOUD_EXTRA_HINT}")


def metadata(settings: RivaSettings, function_id: str) -> tuple[tuple[str, str], ...]:
    """gRPC metadata for one call (keys are lowercase, as gRPC requires)."""
    out: list[tuple[str, str]] = []
    if settings.api_key:
        out.append(("authorization", f"Bearer {settings.api_key.get()}"))
    if function_id:
        out.append(("function-id", function_id))
    return tuple(out)


class RivaChannels:
    """Lazily created ``grpc.aio`` channels to one Riva server, one per event loop."""

    def __init__(self, settings: RivaSettings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
        self._closing: set[asyncio.Task[None]] = set()  # keeps scheduled closes alive

    def channel(self) -> Any:
        """This loop's channel, created on first use (must run on the loop)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            for stale in [lp for lp in self._by_loop if lp.is_closed()]:
                del self._by_loop[stale]
            chan = self._by_loop.get(loop)
            if chan is None:
                s = self._settings
                chan = make_channel(s.url, tls=s.tls, ca_file=s.ca_file)
                self._by_loop[loop] = chan
            return chan

    async def ready(self) -> Any:
        """This loop's channel once it is connected, within ``connect_timeout_s``."""
        chan = self.channel()
        try:
            await asyncio.wait_for(chan.channel_ready(), self._settings.connect_timeout_s)
        except TimeoutError as exc:
            raise UpstreamUnavailable(f"Failed to connect to {PROVIDER} server") from exc
        return chan

    async def aclose(self) -> None:
        """Close this loop's channel now, and the others as :meth:`close` does."""
        current = asyncio.get_running_loop()
        with self._lock:
            mine = self._by_loop.pop(current, None)
        self.close()
        if mine is not None:
            await mine.close()

    def close(self) -> None:
        """Without a loop (``Engines.close()``): schedule each channel's close
        on its own loop, not waiting for it. Channels of loops already closed
        are dropped; grpc releases a channel when it is collected."""
        with self._lock:
            items = list(self._by_loop.items())
            self._by_loop.clear()
        for loop, chan in items:
            if not loop.is_closed():
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(self._close_soon, loop, chan)

    def _close_soon(self, loop: asyncio.AbstractEventLoop, chan: Any) -> None:
        # The coroutine is created here, on its own loop, so a loop that stops
        # before running this callback leaves no never-awaited coroutine behind.
        task = loop.create_task(chan.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)


class ServerStatus:
    """Every status a streaming call is given, to find the server's one when a
    racing write overwrote it locally (see the module docstring)."""

    def __init__(self, call: Any) -> None:
        self.seen: list[tuple[Any, str]] = []
        self._call = call
        self._changed = asyncio.Event()
        call.add_done_callback(self._record)

    def _record(self, call: Any) -> None:
        # Runs as the status is set, so these coroutines return at once.
        self.seen.append((_at_once(call.code()), _at_once(call.details()) or ""))
        self._changed.set()

    async def _servers(self) -> tuple[Any, str] | None:
        # The local overwrite is always INTERNAL: any other status is the server's.
        for code, details in self.seen:
            if code is not None and code != grpc.StatusCode.INTERNAL:
                return code, details
        code = await self._call.code()
        return None if code == grpc.StatusCode.INTERNAL else (code, await self._call.details())

    async def translate(self, exc: Any, *, write_failed: bool) -> EngineError:
        """The gateway error for ``exc`` raised by the call. When one of our
        writes failed and ``exc`` is INTERNAL, the server's status may have
        come first (and be in :attr:`seen`) or may still be on its way: wait
        for it a moment (:data:`STATUS_GRACE_S`) before believing INTERNAL."""
        if write_failed and exc.code() == grpc.StatusCode.INTERNAL:
            real = None
            for _ in range(10):
                if (real := await self._servers()) is not None:
                    break
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), STATUS_GRACE_S / 10)
            if real is not None and real[0] == grpc.StatusCode.OK:
                return UpstreamProtocolError(f"{PROVIDER} ended the stream before the request was finished")
            if real is not None:
                empty = grpc.aio.Metadata()
                exc = grpc.aio.AioRpcError(real[0], empty, empty, details=real[1])
        return translate_rpc_error(exc, PROVIDER)


def _at_once(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine that completes without suspending; ``None`` if it would."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    return None
