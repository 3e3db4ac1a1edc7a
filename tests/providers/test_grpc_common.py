"""The pieces both gRPC adapters share (speech/providers/grpc_common.py):
the per-loop channel cache and the recovery of a status grpc.aio masked
(grpc/grpc#36066), against a real grpc.aio server on loopback."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest

from speech.errors import ConfigError, UpstreamAuthError, UpstreamUnavailable
from speech.providers import grpc_common
from speech.providers.base import RecognitionConfig
from speech.providers.google.asr import GoogleRecognizer
from speech.providers.grpc_common import LoopChannels, ServerStatus
from speech.providers.riva.asr import RivaRecognizer
from speech.settings import RivaSettings
from tests.providers.google.fake_google import running_fake_google
from tests.providers.google.support import settings_for as google_settings
from tests.providers.riva.conftest import settings_for as riva_settings
from tests.providers.riva.fake_riva import fake_riva_in_thread, free_port

S = grpc.StatusCode
SERVICE = "test.Loopback"
CHUNK = b"\x01\x02" * 1600  # 100 ms of 16 kHz PCM16


class Loopback:
    """A real grpc.aio server: ``Echo`` (unary, answers the request) and two
    bidi methods that end the call at once, without reading: ``Reject``
    (UNAUTHENTICATED) and ``EndOk`` (OK)."""

    def __init__(self) -> None:
        self.server: grpc.aio.Server | None = None
        self.url = ""

    async def start(self) -> None:
        async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return request

        async def reject(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
            await context.abort(S.UNAUTHENTICATED, "missing or wrong key")
            yield b""  # pragma: no cover

        async def end_ok(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
            return
            yield b""  # pragma: no cover

        server = grpc.aio.server()
        handlers = {
            "Echo": grpc.unary_unary_rpc_method_handler(echo),
            "Reject": grpc.stream_stream_rpc_method_handler(reject),
            "EndOk": grpc.stream_stream_rpc_method_handler(end_ok),
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        self.url = f"127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
        await server.start()
        self.server = server

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(None)


@pytest.fixture
async def loopback() -> AsyncIterator[Loopback]:
    server = Loopback()
    await server.start()
    yield server
    await server.stop()


async def echo(channels: LoopChannels, payload: bytes) -> tuple[Any, bytes]:
    """This loop's channel and the server's answer to ``payload`` over it."""
    channel = await channels.ready()
    answer = await channel.unary_unary(f"/{SERVICE}/Echo")(payload, timeout=5)
    return channel, answer


# -- the per-loop channel cache ---------------------------------------------------


async def test_one_channel_per_loop_across_two_threads(loopback: Loopback) -> None:
    channels = LoopChannels("loopback", RivaSettings(url=loopback.url, connect_timeout_s=5))
    here, answer = await echo(channels, b"main")
    assert answer == b"main"
    again, _ = await echo(channels, b"main again")
    assert again is here  # reused on its loop

    start = threading.Barrier(2)
    seen: dict[int, tuple[Any, Any, bytes]] = {}
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        async def run() -> None:
            start.wait(5)  # both loops use the cache at the same time
            first, answer = await echo(channels, b"thread %d" % n)
            second, _ = await echo(channels, b"thread %d again" % n)
            seen[n] = (first, second, answer)

        try:
            asyncio.run(run())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    await asyncio.to_thread(lambda: [t.join(10) for t in threads])
    assert not errors
    assert {n: answer for n, (_, _, answer) in seen.items()} == {0: b"thread 0", 1: b"thread 1"}
    assert all(first is second for first, second, _ in seen.values())  # reused on each loop
    mine = {id(here), *(id(first) for first, _, _ in seen.values())}
    assert len(mine) == 3  # one channel per loop (grpc may still share one connection between them)
    # The two thread loops are closed now: their entries are dropped at the next use.
    assert (await echo(channels, b"after"))[0] is here
    assert list(channels._by_loop) == [asyncio.get_running_loop()]
    await channels.aclose()


async def test_aclose_closes_other_running_loops_channels_on_their_loop(loopback: Loopback) -> None:
    channels = LoopChannels("loopback", RivaSettings(url=loopback.url, connect_timeout_s=5))
    other = asyncio.new_event_loop()
    runner = threading.Thread(target=other.run_forever, daemon=True)
    runner.start()
    try:
        theirs, _ = await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(echo(channels, b"x"), other))
        mine, _ = await echo(channels, b"y")
        await channels.aclose()
        assert theirs.get_state() is grpc.ChannelConnectivity.SHUTDOWN  # closed there, awaited here
        assert mine.get_state() is grpc.ChannelConnectivity.SHUTDOWN
        again, answer = await echo(channels, b"z")  # a closed cache makes a new channel on demand
        assert again is not mine and answer == b"z"
        await channels.aclose()
    finally:
        other.call_soon_threadsafe(other.stop)
        await asyncio.to_thread(runner.join, 10)
        other.close()


async def test_close_without_a_loop_schedules_each_close_on_its_loop(loopback: Loopback) -> None:
    channels = LoopChannels("loopback", RivaSettings(url=loopback.url, connect_timeout_s=5))
    mine, _ = await echo(channels, b"y")
    await asyncio.to_thread(channels.close)  # from a thread with no loop, like Engines.close()
    for _ in range(100):
        await asyncio.sleep(0.01)
        if mine.get_state() is grpc.ChannelConnectivity.SHUTDOWN:
            break
    assert mine.get_state() is grpc.ChannelConnectivity.SHUTDOWN


async def test_connect_timeout_names_the_provider() -> None:
    channels = LoopChannels("acme", RivaSettings(url=f"127.0.0.1:{free_port()}", connect_timeout_s=0.2))
    with pytest.raises(UpstreamUnavailable, match="^Failed to connect to acme server$"):
        await channels.ready()
    await channels.aclose()


def test_missing_grpc_names_the_cloud_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(grpc_common, "grpc", None)
    with pytest.raises(ConfigError, match=r"grpcio is not installed; .*speech-gateway\[cloud\]"):
        grpc_common.require_grpc()
    for engine in (RivaRecognizer, GoogleRecognizer):
        with pytest.raises(ConfigError, match=r"speech-gateway\[cloud\]"):
            engine(riva_settings("x:1") if engine is RivaRecognizer else google_settings("x:1"))


# -- the server's status wins -------------------------------------------------------


async def race(channel: Any, method: str) -> tuple[grpc.aio.AioRpcError | None, ServerStatus]:
    """Open a bidi call and write audio as fast as it goes while the server ends
    the call; the error the read raised (None: a clean end) and the call's status."""
    call = channel.stream_stream(f"/{SERVICE}/{method}")()
    status = ServerStatus(call)

    async def write() -> None:
        try:
            for _ in range(50):
                await status.write(call.write(CHUNK))
            await status.write(call.done_writing())
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            pass  # the call is over; the read reports how

    writer = asyncio.create_task(write())
    try:
        async for _ in call:
            pass
    except grpc.aio.AioRpcError as exc:
        return exc, status
    finally:
        await writer
    return None, status


@pytest.mark.parametrize(("method", "servers"), [("Reject", S.UNAUTHENTICATED), ("EndOk", S.OK)])
async def test_a_rejection_racing_our_writes_keeps_the_servers_status(
    loopback: Loopback, method: str, servers: grpc.StatusCode
) -> None:
    channels = LoopChannels("loopback", RivaSettings(url=loopback.url, connect_timeout_s=5))
    channel = await channels.ready()
    masked = 0
    for _ in range(40):
        exc, status = await race(channel, method)
        if exc is None:  # the server's status arrived unmasked, and it was OK
            assert servers is S.OK
            continue
        masked += exc.code() is S.INTERNAL
        assert exc.code() in (S.INTERNAL, servers)
        assert (await status.error(exc)).code() is servers
    await channels.aclose()
    if not masked:
        pytest.skip("grpc.aio reported the server's status in every run: grpc/grpc#36066 did not show")


@pytest.mark.parametrize("adapter", ["riva", "google"])
async def test_both_adapters_recover_the_status_through_server_status(
    adapter: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each adapter, against its own fake rejecting every stream at once for a
    missing key while the adapter writes audio, reports the permanent auth
    error every time, and does so through the shared recovery."""
    recovered: list[tuple[grpc.StatusCode, grpc.StatusCode]] = []
    original = ServerStatus.error

    async def watched(self: ServerStatus, exc: grpc.aio.AioRpcError) -> grpc.aio.AioRpcError:
        real = await original(self, exc)
        recovered.append((exc.code(), real.code()))
        return real

    monkeypatch.setattr(ServerStatus, "error", watched)

    async def audio() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield CHUNK

    with fake_riva_in_thread() if adapter == "riva" else running_fake_google() as fake:
        if adapter == "riva":
            fake.faults.token = "k-123"
            rec: Any = RivaRecognizer(riva_settings(fake.url))
        else:
            fake.faults.require_api_key = "another key"
            rec = GoogleRecognizer(google_settings(fake.url))
        try:
            for _ in range(20):
                with pytest.raises(UpstreamAuthError):
                    async with asyncio.timeout(10):
                        [t async for t in rec.recognize(audio(), RecognitionConfig())]
        finally:
            await rec.aclose()
    assert all(real is S.UNAUTHENTICATED for _, real in recovered)
    if not any(code is S.INTERNAL for code, _ in recovered):
        pytest.skip("grpc.aio reported the server's status in every run: grpc/grpc#36066 did not show")


class _Call:
    """Just enough of a grpc.aio call to drive ServerStatus through the orders
    in which grpc/grpc#36066 sets a call's statuses."""

    def __init__(self) -> None:
        self._code: Any = None
        self._details = ""
        self._callbacks: list[Any] = []

    def add_done_callback(self, cb: Any) -> None:
        self._callbacks.append(cb)

    def set(self, code: Any, details: str = "", *, notify: bool = True) -> None:
        self._code, self._details = code, details
        for cb in self._callbacks if notify else ():
            cb(self)

    async def code(self) -> Any:
        return self._code

    async def details(self) -> str:
        return self._details


def _rpc_error(code: Any, details: str = "Internal error from Core") -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


async def _failed_write(status: ServerStatus) -> None:
    async def write() -> None:
        raise _rpc_error(S.INTERNAL)

    with pytest.raises(grpc.aio.AioRpcError):
        await status.write(write())


@pytest.mark.parametrize("order", ["server_first", "local_first", "server_later_unnotified"])
async def test_server_status_beats_the_local_internal_overwrite(order: str) -> None:
    call = _Call()
    status = ServerStatus(call)
    await _failed_write(status)
    if order == "server_first":
        call.set(S.UNAUTHENTICATED, "bad key")
        call.set(S.INTERNAL)
    else:
        call.set(S.INTERNAL)
        notify = order == "local_first"
        asyncio.get_running_loop().call_later(0.05, lambda: call.set(S.UNAUTHENTICATED, "bad key", notify=notify))
    real = await status.error(_rpc_error(S.INTERNAL))
    assert (real.code(), real.details()) == (S.UNAUTHENTICATED, "bad key")


async def test_server_status_ok_or_internal_or_no_write_of_ours() -> None:
    call = _Call()
    status = ServerStatus(call)
    call.set(S.OK)
    call.set(S.INTERNAL)
    internal = _rpc_error(S.INTERNAL)
    # Without a write of ours in flight or failed, the INTERNAL raised is the server's.
    assert await status.error(internal) is internal
    await _failed_write(status)
    assert (await status.error(internal)).code() is S.OK  # the server ended the call normally
    # Other codes are never masked: taken as they are.
    rejected = _rpc_error(S.INVALID_ARGUMENT, "bad config")
    assert await status.error(rejected) is rejected
    # A server that really said INTERNAL: after the grace period, INTERNAL it is.
    only = _Call()
    status = ServerStatus(only)
    await _failed_write(status)
    only.set(S.INTERNAL)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await status.error(internal) is internal
    assert loop.time() - started >= grpc_common.STATUS_GRACE_S * 0.9


async def test_a_write_in_flight_counts_as_a_possible_mask() -> None:
    """The read can fail before the racing write's own failure is delivered."""
    call = _Call()
    status = ServerStatus(call)
    release = asyncio.Event()
    writing = asyncio.create_task(status.write(release.wait()))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert status.may_be_masked
    call.set(S.PERMISSION_DENIED, "no access")
    call.set(S.INTERNAL)
    assert (await status.error(_rpc_error(S.INTERNAL))).code() is S.PERMISSION_DENIED
    release.set()
    await writing
    assert not status.may_be_masked  # that write completed
